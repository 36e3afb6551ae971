import json
import os
import shutil

import numpy as np
import pytest

from keras_maxdeeplab import MAX_DEEPLAB_CONFIGS
from keras_maxdeeplab import MAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab import MaXDeepLabBackbone
from keras_maxdeeplab.conversion import deeplab2_key_to_path
from keras_maxdeeplab.conversion import load_deeplab2_checkpoint
from keras_maxdeeplab.conversion import match_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import is_model_variable
from keras_maxdeeplab.postprocessing import postprocess_panoptic
from tests.helpers import relative_error
from tests.helpers import shapes_only_backbone
from tests.helpers import shared_path
from tests.helpers import tiny_model
from tests.helpers import to_numpy

OUTPUTS = (
    "pixel_space_mask_logits",
    "transformer_class_logits",
    "semantic_logits",
    "pixel_space_normalized_feature",
)
ENDPOINTS = (
    "stage1",
    "res1",
    "stage2",
    "res2",
    "stage3",
    "res3",
    "stage4",
    "res4",
    "stage5",
    "res5",
    "backbone_output",
    "feature_semantic",
    "feature_panoptic",
    "transformer_class_feature",
    "transformer_mask_feature",
)


@pytest.mark.parametrize("crop", [65, 129])
def test_tiny_checkpoint_parity(crop):
    """deeplab2's own outputs for its reduced MaX-DeepLab, after conversion."""
    io = np.load(shared_path("reference", "max_deeplab_tiny", "io.npz"))
    model = tiny_model(crop)
    load_deeplab2_checkpoint(model, shared_path("reference", "max_deeplab_tiny", "ckpt"))
    images = io[f"s{crop}/input/image_normalized"]
    outputs = to_numpy(model(images, training=False))
    endpoints = to_numpy(model.backbone(images, training=False))
    for key in OUTPUTS:
        assert relative_error(outputs[key], io[f"s{crop}/output/{key}"]) < 1e-4, key
    for key in ENDPOINTS:
        assert relative_error(endpoints[key], io[f"s{crop}/encoder/{key}"]) < 1e-4, key

    # The post-processed maps, with deeplab2's defaults and with the tuned thresholds
    # under which the tiny model yields ~10 segments (the reference README, section 6).
    config = json.load(open(shared_path("reference", "max_deeplab_tiny", "config.json")))
    settings = {
        "postprocess_default": config["post_processing"]["deeplab2_default_thresholds"],
        "postprocess": config["post_processing"]["tuned_thresholds"][str(crop)],
    }
    for prefix, thresholds in settings.items():
        maps = to_numpy(
            postprocess_panoptic(
                outputs["pixel_space_mask_logits"],
                outputs["transformer_class_logits"],
                (crop, crop),
                **thresholds,
            )
        )
        for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
            reference = io[f"s{crop}/{prefix}/{key}"]
            agreement = np.mean(maps[key] == reference)
            assert agreement >= 0.999, (prefix, key, agreement)
        for key in ("instance_scores", "semantic_scores"):
            np.testing.assert_allclose(maps[key], io[f"s{crop}/{prefix}/{key}"], atol=1e-4)


def _shape(text):
    return tuple(int(x) for x in text.strip("[]").split(",") if x.strip())


def test_full_max_deeplab_s_variables_map_one_to_one():
    """Every variable of a full MaX-DeepLab-S checkpoint has exactly one home."""
    lines = open(shared_path("reference", "max_deeplab_s", "checkpoint_variables.txt")).read()
    checkpoint = {}
    for line in lines.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")[:2]
        if is_model_variable(key):
            checkpoint[key] = _shape(shape)
    assert len(checkpoint) == 907  # the README of max_deeplab_s: 907 variables
    backbone = shapes_only_backbone("max_deeplab_s", (65, 65, 3))
    model = MaXDeepLab(backbone, **MAX_DEEPLAB_HEAD_CONFIGS["max_deeplab_s"])
    pairs = match_checkpoint(model, checkpoint)
    assert len(pairs) == len(model.weights) == len(checkpoint)
    assert len({id(variable) for variable, _ in pairs}) == len(pairs)


def test_key_rules():
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    cases = {
        "encoder/memory_feature": "memory_feature/memory_feature",
        "encoder/_stage5/_block1_transformer/_memory_attention/_batch_norm_retrieved_value/gamma": "stage5/block1_transformer/memory_attention/batch_norm_retrieved_value/gamma",
        "semantic_head_without_last_layer/_conv1_bn_act/_depthwise/_depthwise_conv/depthwise_kernel": "semantic_head/conv_block/conv1_bn_act/depthwise/depthwise_conv/kernel",
        "semantic_last_layer/bias": "semantic_head/final_conv/bias",
        "pixel_space_mask_batch_norm/gamma": "pixel_space_mask_logits/batch_norm/gamma",
    }
    for key, path in cases.items():
        assert deeplab2_key_to_path(key + suffix) == path
    assert deeplab2_key_to_path("resnet/conv1/kernel" + suffix) is None
    assert not is_model_variable("optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE")
    assert not is_model_variable(
        "encoder/_stem/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE"
    )


def _weights(model):
    return [to_numpy(v) for v in model.weights]


def test_truncated_checkpoint_is_rejected(tmp_path):
    source = shared_path("reference", "max_deeplab_tiny", "ckpt")
    target = os.path.join(tmp_path, "ckpt")
    shutil.copytree(source, target)
    data = os.path.join(target, "ckpt-0.data-00000-of-00001")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    model = tiny_model(65)
    before = _weights(model)
    with pytest.raises(ValueError, match="Cannot read a TensorFlow checkpoint"):
        load_deeplab2_checkpoint(model, target)
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)


def test_foreign_checkpoint_is_rejected(tmp_path):
    import tensorflow as tf

    # A ResNet-like checkpoint: nothing maps, nothing may be assigned.
    conv = tf.Variable(tf.ones((3, 3, 3, 64)))
    tf.train.Checkpoint(resnet=tf.train.Checkpoint(conv1=conv)).save(os.path.join(tmp_path, "ckpt"))
    model = tiny_model(65)
    before = _weights(model)
    with pytest.raises(ValueError, match="map to no model weight") as error:
        load_deeplab2_checkpoint(model, str(tmp_path))
    assert "resnet/conv1" in str(error.value)
    assert "are not in the checkpoint" in str(error.value)
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)


def test_other_configuration_is_rejected_with_shapes():
    """The tiny checkpoint into a model of other widths: shape mismatches are listed."""
    from tests.helpers import TINY_BACKBONE, TINY_HEADS

    config = dict(MAX_DEEPLAB_CONFIGS["max_deeplab_s"], **dict(TINY_BACKBONE, memory_channels=64))
    model = MaXDeepLab(MaXDeepLabBackbone(image_shape=(65, 65, 3), **config), **TINY_HEADS)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_deeplab2_checkpoint(model, shared_path("reference", "max_deeplab_tiny", "ckpt"))


def test_missing_checkpoint_folder(tmp_path):
    with pytest.raises(ValueError, match="No TensorFlow checkpoint found"):
        load_deeplab2_checkpoint(tiny_model(65), str(tmp_path))
