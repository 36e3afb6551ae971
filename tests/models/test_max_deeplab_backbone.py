import json

import numpy as np
import pytest

import keras

from keras_maxdeeplab import MAX_DEEPLAB_CONFIGS
from keras_maxdeeplab import MAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab import MaXDeepLabBackbone
from tests.helpers import TINY_BACKBONE
from tests.helpers import shapes_only_backbone
from tests.helpers import shared_path


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _by_prefix(variables, depth):
    counts = {}
    for v in variables:
        key = "/".join(v.path.split("/")[:depth])
        counts[key] = counts.get(key, 0) + int(np.prod(v.shape))
    return counts


def _imagenet_part(backbone):
    # deeplab2's pretrained-backbone split: names without transformer/extra/memory.
    return _count(
        v
        for v in backbone.trainable_weights
        if not any(word in v.path for word in ("transformer", "extra", "memory_feature"))
    )


@pytest.fixture(scope="module")
def max_deeplab_s():
    backbone = shapes_only_backbone("max_deeplab_s", (641, 641, 3))
    return MaXDeepLab(backbone, **MAX_DEEPLAB_HEAD_CONFIGS["max_deeplab_s"])


def test_max_deeplab_s_parameter_counts(max_deeplab_s):
    backbone = max_deeplab_s.backbone
    assert _count(max_deeplab_s.trainable_weights) == 77_756_942
    assert _count(max_deeplab_s.non_trainable_weights) == 233_314
    assert _count(backbone.trainable_weights) == 61_726_624
    semantic = [v for v in max_deeplab_s.trainable_weights if v.path.startswith("semantic_")]
    assert _count(max_deeplab_s.trainable_weights) - _count(semantic) == 61_900_200
    assert _imagenet_part(backbone) == 41_343_424


def test_max_deeplab_s_per_block_counts(max_deeplab_s):
    reference = json.load(open(shared_path("reference", "max_deeplab_s", "params.json")))
    ours = _by_prefix(max_deeplab_s.backbone.trainable_weights, 2)
    ours["memory_feature:0"] = ours.pop("memory_feature/memory_feature")
    assert ours == reference["encoder_trainable_by_block"]
    stages = _by_prefix(max_deeplab_s.backbone.trainable_weights, 1)
    stages["memory_feature:0"] = stages.pop("memory_feature")
    assert stages == reference["encoder_trainable_by_stage"]


def test_max_deeplab_s_output_shapes(max_deeplab_s):
    shapes = {k: tuple(v.shape) for k, v in max_deeplab_s.output.items()}
    assert shapes == {
        "semantic_logits": (None, 161, 161, 134),
        "pixel_space_normalized_feature": (None, 161, 161, 128),
        "transformer_class_logits": (None, 128, 134),
        "pixel_space_mask_logits": (None, 161, 161, 128),
    }
    features = {k: tuple(v.shape) for k, v in max_deeplab_s.backbone.output.items()}
    assert features["feature_semantic"] == (None, 41, 41, 2048)
    assert features["feature_panoptic"] == (None, 161, 161, 256)
    assert features["stage5"] == (None, 41, 41, 2048)


def test_max_deeplab_s_1025_output_shapes():
    backbone = shapes_only_backbone("max_deeplab_s", (1025, 1025, 3))
    model = MaXDeepLab(backbone, **MAX_DEEPLAB_HEAD_CONFIGS["max_deeplab_s"])
    assert tuple(model.output["pixel_space_mask_logits"].shape) == (None, 257, 257, 128)
    assert tuple(model.output["semantic_logits"].shape) == (None, 257, 257, 134)
    assert tuple(backbone.output["res5"].shape) == (None, 65, 65, 2048)


def test_max_deeplab_l_parameter_counts_and_shapes():
    backbone = shapes_only_backbone("max_deeplab_l", (1025, 1025, 3))
    assert _count(backbone.trainable_weights) == 450_523_232
    assert _imagenet_part(backbone) == 175_115_392
    # Dual-path transformers are "<group>/block<k>_transformer" layers: 3+3+1+3+3 for L.
    transformers = {
        "/".join(v.path.split("/")[:2]) for v in backbone.weights if "_transformer/" in v.path
    }
    assert len(transformers) == 13
    model = MaXDeepLab(backbone, **MAX_DEEPLAB_HEAD_CONFIGS["max_deeplab_l"])
    # L reads its semantic feature at stride 4: no auxiliary semantic decoder.
    assert model.semantic_decoder is None
    heads = _count(model.trainable_weights) - _count(backbone.trainable_weights)
    assert heads == 240_648 + 107_398
    assert tuple(model.output["pixel_space_mask_logits"].shape) == (None, 257, 257, 128)
    assert tuple(backbone.output["feature_semantic"].shape) == (None, 257, 257, 256)


def test_tiny_per_stage_counts_match_deeplab2():
    reference = json.load(open(shared_path("reference", "max_deeplab_tiny", "params.json")))
    config = dict(MAX_DEEPLAB_CONFIGS["max_deeplab_s"], **TINY_BACKBONE)
    backbone = MaXDeepLabBackbone(image_shape=(65, 65, 3), **config)
    stages = _by_prefix(backbone.trainable_weights, 1)
    stages["memory_feature:0"] = stages.pop("memory_feature")
    assert stages == reference["encoder_trainable_by_stage"]
    assert (
        _count(backbone.non_trainable_weights)
        == reference["per_checkpoint_item"]["encoder"]["non_trainable"]
    )


def test_config_round_trip():
    config = dict(MAX_DEEPLAB_CONFIGS["max_deeplab_s"], **TINY_BACKBONE)
    backbone = MaXDeepLabBackbone(image_shape=(65, 65, 3), **config)
    clone = MaXDeepLabBackbone.from_config(backbone.get_config())
    assert clone.get_config() == backbone.get_config()
    assert [v.path for v in clone.weights] == [v.path for v in backbone.weights]
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(backbone))
    assert isinstance(restored, MaXDeepLabBackbone)


@pytest.mark.parametrize("shape", [(64, 64, 3), (65, 66, 3), (65, 65, 1), (65, 65)])
def test_bad_image_shape(shape):
    with pytest.raises(ValueError, match="image_shape"):
        MaXDeepLabBackbone(image_shape=shape, **MAX_DEEPLAB_CONFIGS["max_deeplab_s"])


def test_bad_backbone_type():
    config = dict(MAX_DEEPLAB_CONFIGS["max_deeplab_s"], backbone_type="resnet")
    with pytest.raises(ValueError, match="backbone_type"):
        MaXDeepLabBackbone(image_shape=(65, 65, 3), **config)


def test_dual_path_attention_of_every_transformer_in_order():
    backbone = MaXDeepLabBackbone(image_shape=(65, 65, 3), **TINY_BACKBONE)
    images = np.random.RandomState(0).uniform(-1, 1, (2, 65, 65, 3)).astype("float32")
    attention = backbone.dual_path_attention(images)
    # The tiny model has deeplab2's S layout: a transformer after stage 5's block and
    # after the extra stride-32 group's block, both at stride 16 (65 -> 5 x 5).
    assert list(attention) == ["stage5/block1_transformer", "stage5_extra/block1_transformer"]
    for weights in attention.values():
        assert weights["memory_to_pixel"].shape == (2, 8, 32, 5, 5)
        assert weights["memory_to_memory"].shape == (2, 8, 32, 32)
        assert weights["pixel_to_memory"].shape == (2, 8, 5, 5, 32)
        memory_total = weights["memory_to_pixel"].sum((-2, -1)) + weights["memory_to_memory"].sum(-1)
        np.testing.assert_allclose(memory_total, 1.0, atol=1e-5)
        np.testing.assert_allclose(weights["pixel_to_memory"].sum(-1), 1.0, atol=1e-5)
    # Each image's weights are its own (inference mode): alone, the first image
    # attends as it did in the batch, and the two images attend differently.
    alone = backbone.dual_path_attention(images[:1])
    for name, weights in attention.items():
        for key, value in weights.items():
            np.testing.assert_allclose(alone[name][key][0], value[0], atol=1e-5)
    assert np.abs(weights["pixel_to_memory"][0] - weights["pixel_to_memory"][1]).max() > 1e-4
