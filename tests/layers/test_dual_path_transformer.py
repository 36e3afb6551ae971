import numpy as np

from keras_maxdeeplab.layers import DualPathTransformer
from keras_maxdeeplab.layers import MemoryFeature
from tests.helpers import run_layer_test
from tests.helpers import to_numpy


def test_fresh_block_is_identity_on_pixels_and_relu_on_memory():
    # deeplab2 zero-initialises the last BN gamma of every residual update, so an
    # untrained block leaves the pixels unchanged and returns ReLU(memory).
    rng = np.random.RandomState(0)
    pixels = rng.normal(size=(2, 3, 3, 16)).astype("float32")
    memory = rng.normal(size=(2, 4, 8)).astype("float32")
    layer = DualPathTransformer(filters=8, feed_forward_network_channels=12, num_heads=2)
    new_pixels, new_memory = to_numpy(layer(pixels, memory))
    np.testing.assert_allclose(new_pixels, pixels, atol=1e-6)
    np.testing.assert_allclose(new_memory, np.maximum(memory, 0), atol=1e-6)


def test_weight_shapes_follow_deeplab2():
    layer = DualPathTransformer(filters=128, feed_forward_network_channels=2048)
    layer(np.zeros((1, 2, 2, 2048), "float32"), np.zeros((1, 4, 256), "float32"))
    shapes = {v.path.split("/", 1)[1]: tuple(v.shape) for v in layer.weights}
    assert shapes["memory_qkv_conv_bn/conv/kernel"] == (1, 256, 512)
    assert shapes["pixel_conv1_bn_act/conv/kernel"] == (1, 2048, 256)
    assert shapes["memory_attention/batch_norm_similarity/gamma"] == (8,)
    assert shapes["memory_attention/batch_norm_retrieved_value/gamma"] == (1, 8, 1, 32)
    assert shapes["memory_ffn_conv1_bn_act/conv/kernel"] == (1, 256, 2048)
    assert shapes["pixel_conv3_bn/conv/kernel"] == (1, 256, 2048)


def test_round_trip_with_trained_like_weights():
    rng = np.random.RandomState(1)
    pixels = rng.normal(size=(2, 3, 3, 16)).astype("float32")
    memory = rng.normal(size=(2, 4, 8)).astype("float32")
    layer = DualPathTransformer(filters=8, feed_forward_network_channels=12, num_heads=2)
    layer(pixels, memory)
    for variable in layer.weights:
        if variable.path.endswith("gamma"):
            variable.assign(rng.uniform(0.5, 1.5, size=variable.shape).astype("float32"))
    new_pixels, _ = run_layer_test(layer, [pixels, memory], atol=1e-5)
    assert np.abs(new_pixels - pixels).max() > 1e-2


def test_memory_feature_tiles_over_batch():
    layer = MemoryFeature(5, 3)
    out = to_numpy(layer(np.zeros((4, 9, 9, 3), "float32")))
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out[3], to_numpy(layer.memory_feature)[0])
