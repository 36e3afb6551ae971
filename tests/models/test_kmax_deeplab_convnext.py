"""kMaX-DeepLab's ConvNeXt pixel encoder against deeplab2's own.

The reference (`tests/models/deeplab2_convnext/`, made by
`tools/deeplab2_convnext_reference.py` with deeplab2's code): a reduced
ConvNeXt encoder's checkpoint and endpoints at crops 65 and 129, the variable
list of the full ConvNeXt-T COCO model and the parameter counts of the full
ConvNeXt-T/S/B/L models. The rest of kMaX-DeepLab is the same code as the
ResNet variants, checked against `../shared/reference/kmax_deeplab_tiny`.
"""

import json
import os

import keras
import numpy as np
import pytest

from keras_maxdeeplab.conversion.deeplab2 import assign_from_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import is_model_variable
from keras_maxdeeplab.conversion.deeplab2 import kmax_key_to_path
from keras_maxdeeplab.conversion.deeplab2 import match_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import open_checkpoint
from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_backbone
from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model
from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_CONFIGS
from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab import KMaXDeepLab
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab_backbone import KMaXDeepLabBackbone
from tests.helpers import values_not_drawn

REFERENCE = os.path.join(os.path.dirname(__file__), "deeplab2_convnext")
# The reduced encoder of the reference, with the tiny kMaX pixel decoder.
REDUCED = dict(
    KMAX_DEEPLAB_CONFIGS["kmax_r50_tiny"],
    backbone_type="convnext",
    num_blocks=(1, 1, 2, 1),
    convnext_dims=(8, 16, 32, 64),
    drop_path_keep_prob=0.7,
)
ENDPOINTS = [f"{kind}{n}" for n in range(1, 6) for kind in ("stage", "res")]


def _reduced_backbone(crop):
    backbone = KMaXDeepLabBackbone(image_shape=(crop, crop, 3), **REDUCED)
    reader, shapes = open_checkpoint(os.path.join(REFERENCE, "ckpt"))
    pairs = match_checkpoint(
        backbone,
        shapes,
        allow_unused_prefixes=("pixel_decoder/",),
        key_to_path=lambda key: kmax_key_to_path(key, []),
        model_name="kMaX-DeepLab",
    )
    assert len(pairs) == len(shapes)
    assign_from_checkpoint(reader, pairs)
    return backbone


@pytest.mark.parametrize("crop", [65, 129])
def test_every_encoder_endpoint_matches_deeplab2(crop):
    reference = np.load(os.path.join(REFERENCE, "encoder.npz"))
    backbone = _reduced_backbone(crop)
    outputs = backbone(reference[f"s{crop}/images"], training=False)
    for key in ENDPOINTS:
        expected = reference[f"s{crop}/{key}"]
        actual = keras.ops.convert_to_numpy(outputs[key])
        assert actual.shape == expected.shape, key
        scale = np.abs(expected).max()
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale, err_msg=key)
    # Layer scales are not 1e-6 in the reference: every block changes its input.
    assert np.abs(reference[f"s{crop}/stage2"] - reference[f"s{crop}/stage1"]).max() > 0.1


def test_drop_path_falls_linearly_over_all_blocks():
    """deeplab2: `tf.linspace(1.0, keep_prob, sum(depths))`, block by block."""
    backbone = KMaXDeepLabBackbone(image_shape=(65, 65, 3), **REDUCED)
    names = ["0_0", "1_0", "2_0", "2_1", "3_0"]
    expected = np.linspace(1.0, 0.7, 5, dtype=np.float32)
    for name, keep_prob in zip(names, expected):
        block = backbone.get_layer(f"convnext_block_{name}")
        assert block.drop_path_keep_prob == pytest.approx(float(keep_prob), abs=0)
        assert (block.drop_path is None) == (name == "0_0")


def test_convnext_dims_belong_to_convnext_only():
    with pytest.raises(ValueError, match="convnext_dims"):
        KMaXDeepLabBackbone(image_shape=(65, 65, 3), **dict(REDUCED, convnext_dims=None))
    with pytest.raises(ValueError, match="convnext_dims"):
        KMaXDeepLabBackbone(
            image_shape=(65, 65, 3),
            **dict(KMAX_DEEPLAB_CONFIGS["kmax_r50_tiny"], convnext_dims=(8, 16, 32, 64)),
        )


def test_config_round_trip():
    backbone = KMaXDeepLabBackbone(image_shape=(65, 65, 3), **REDUCED)
    clone = KMaXDeepLabBackbone.from_config(backbone.get_config())
    assert clone.get_config() == backbone.get_config()
    assert [w.path for w in clone.weights] == [w.path for w in backbone.weights]


def _full_checkpoint_shapes():
    shapes = {}
    with open(os.path.join(REFERENCE, "variables_full_convnext_tiny.txt")) as f:
        for line in f:
            if line.startswith("#"):
                continue
            key, shape = line.rstrip("\n").split("\t")
            if is_model_variable(key):
                shapes[key] = tuple(json.loads(shape))
    return shapes


def test_full_convnext_tiny_maps_one_to_one_onto_deeplab2s_variables():
    """Every variable of deeplab2's full ConvNeXt-T COCO model has exactly one
    home of the same shape in ours, and the counts are deeplab2's."""
    shapes = _full_checkpoint_shapes()
    with values_not_drawn():
        backbone = build_kmax_backbone("kmax_convnext_tiny", 65, {}, KMaXDeepLabBackbone)
    model = KMaXDeepLab(backbone, **KMAX_DEEPLAB_HEAD_CONFIGS["kmax_convnext_tiny"])
    names = [block.name for block in model.transformer_blocks]
    pairs = match_checkpoint(model, shapes, key_to_path=lambda key: kmax_key_to_path(key, names))
    assert len(pairs) == len(model.weights) == len(shapes)
    counts = json.load(open(os.path.join(REFERENCE, "params_full.json")))["kmax_convnext_tiny"]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert (trainable, model.count_params() - trainable) == (
        counts["trainable"],
        counts["non_trainable"],
    )


@pytest.mark.large
@pytest.mark.parametrize("size", ["small", "base", "large"])
def test_full_convnext_parameter_counts(size):
    model = build_kmax_model(f"kmax_convnext_{size}", 65)
    counts = json.load(open(os.path.join(REFERENCE, "params_full.json")))[f"kmax_convnext_{size}"]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert (trainable, model.count_params() - trainable) == (
        counts["trainable"],
        counts["non_trainable"],
    )
