"""Shared test helpers: reference data paths and keras-hub-style checks."""

import os

import numpy as np
import pytest

import keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
TINY_REF = os.path.join(SHARED, "reference", "max_deeplab_tiny")
S_REF = os.path.join(SHARED, "reference", "max_deeplab_s")

# deeplab2's reduced MaX-DeepLab of ../shared/reference/max_deeplab_tiny (its README, section 2).
TINY_BACKBONE = {
    "stem_width_multiplier": 0.25,
    "backbone_width_multiplier": 0.125,
    "backbone_layer_multiplier": 0.5,
    "num_mask_slots": 32,
    "memory_channels": 32,
    "base_transformer_expansion": 0.25,
    "global_feed_forward_network_channels": 32,
    "dual_path_feed_forward_network_channels": 64,
}
TINY_HEADS = {
    "num_classes": 134,
    "pixel_space_head_channels": 32,
    "pixel_space_output_channels": 16,
    "semantic_head_channels": 32,
    "aspp_channels": 32,
    "decoder_channels": 32,
    "low_level_channels": (16, 8),
}


def shared_path(*parts):
    """A path under ../shared, or skip the test with the reason."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"reference data {path} is absent (it lives beside the repo in ../shared)")
    return path


def tiny_model(size=65):
    from keras_maxdeeplab import MAX_DEEPLAB_CONFIGS
    from keras_maxdeeplab import MaXDeepLab
    from keras_maxdeeplab import MaXDeepLabBackbone

    config = dict(MAX_DEEPLAB_CONFIGS["max_deeplab_s"], **TINY_BACKBONE)
    backbone = MaXDeepLabBackbone(image_shape=(size, size, 3), **config)
    return MaXDeepLab(backbone, **TINY_HEADS)


def to_numpy(tree):
    return keras.tree.map_structure(keras.ops.convert_to_numpy, tree)


def relative_error(actual, reference):
    """max |actual - reference| / max |reference|."""
    return float(np.max(np.abs(actual - reference)) / np.max(np.abs(reference)))


def run_layer_test(layer, inputs, call_kwargs=None, atol=1e-6):
    """keras-hub-style layer check: config round trip gives the same outputs,
    and eager equals compiled (`keras.Model.predict`) execution.

    `inputs` is a single array or a list of positional arguments (arrays or
    lists of arrays).
    """
    call_kwargs = call_kwargs or {}
    args = inputs if isinstance(inputs, list) else [inputs]
    expected = to_numpy(layer(*args, **call_kwargs))

    clone = layer.__class__.from_config(layer.get_config())
    clone(*args, **call_kwargs)
    assert len(clone.weights) == len(layer.weights)
    for source, target in zip(layer.weights, clone.weights):
        assert source.path.split("/", 1)[-1] == target.path.split("/", 1)[-1]
        target.assign(source)
    for got, want in zip(
        keras.tree.flatten(to_numpy(clone(*args, **call_kwargs))), keras.tree.flatten(expected)
    ):
        np.testing.assert_allclose(got, want, atol=atol)
    assert clone.get_config() == layer.get_config()

    symbolic = keras.tree.map_structure(
        lambda a: keras.Input(batch_shape=a.shape, dtype=a.dtype), args
    )
    model = keras.Model(keras.tree.flatten(symbolic), layer(*symbolic, **call_kwargs))
    flat = keras.tree.flatten(args)
    compiled = model.predict(flat if len(flat) > 1 else flat[0], verbose=0)
    for got, want in zip(keras.tree.flatten(to_numpy(compiled)), keras.tree.flatten(expected)):
        np.testing.assert_allclose(got, want, atol=atol * 10, rtol=1e-5)
    return expected
