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


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_recorded_attention_is_the_softmax_of_the_batch_normalised_logits():
    # Recomputed in NumPy from the block's own projections: the memory softmax runs over
    # [pixels ; memory] keys (pixels first), the pixel softmax over the memory keys, both
    # after the per-head BN of the logits, and pixels come back as H x W.
    from keras_maxdeeplab.layers import recording_attention

    rng = np.random.RandomState(2)
    height, width, heads, slots = 3, 4, 2, 5
    pixels = rng.normal(size=(2, height, width, 16)).astype("float32")
    memory = rng.normal(size=(2, slots, 8)).astype("float32")
    layer = DualPathTransformer(filters=8, feed_forward_network_channels=12, num_heads=heads)
    layer(pixels, memory)
    for variable in layer.weights:  # BN of the logits far from the identity
        if "batch_norm_similarity" in variable.path:
            low, high = (0.5, 2.0) if variable.path.endswith(("gamma", "variance")) else (-1, 1)
            variable.assign(rng.uniform(low, high, size=variable.shape).astype("float32"))
    with recording_attention() as records:
        layer(pixels, memory, training=False)
    assert len(records) == 1 and records[0][0] is layer
    recorded = to_numpy(records[0][1])

    def queries_and_keys(qkv):
        qkv = to_numpy(qkv)
        depth = layer.total_key_depth
        split = lambda x: x.reshape(2, -1, heads, depth // heads).transpose(0, 2, 1, 3)
        return split(qkv[..., :depth]), split(qkv[..., depth : 2 * depth])

    flat_pixels = np.maximum(pixels.reshape(2, height * width, 16), 0)
    pixel_q, pixel_k = queries_and_keys(
        layer.pixel_qkv_conv_bn(layer.pixel_conv1_bn_act(flat_pixels))
    )
    memory_q, memory_k = queries_and_keys(
        layer.memory_qkv_conv_bn(layer.memory_conv1_bn_act(memory))
    )

    def batch_norm(logits, attention):
        bn = attention.batch_norm_similarity
        gamma, beta, mean, variance = (to_numpy(v)[None, :, None, None] for v in (
            bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
        return (logits - mean) / np.sqrt(variance + bn.epsilon) * gamma + beta

    keys = np.concatenate([pixel_k, memory_k], axis=2)
    memory_weights = _softmax(
        batch_norm(np.einsum("bhld,bhmd->bhlm", memory_q, keys), layer.memory_attention)
    )
    pixel_weights = _softmax(
        batch_norm(np.einsum("bhld,bhmd->bhlm", pixel_q, memory_k), layer.pixel_attention)
    )
    length = height * width
    np.testing.assert_allclose(
        recorded["memory_to_pixel"],
        memory_weights[..., :length].reshape(2, heads, slots, height, width),
        atol=1e-5,
    )
    np.testing.assert_allclose(recorded["memory_to_memory"], memory_weights[..., length:], atol=1e-5)
    np.testing.assert_allclose(
        recorded["pixel_to_memory"],
        pixel_weights.reshape(2, heads, height, width, slots),
        atol=1e-5,
    )
    # Outside the block nothing is recorded and the outputs are the same.
    outputs = [to_numpy(x) for x in layer(pixels, memory, training=False)]
    assert len(records) == 1
    with recording_attention():
        recorded_outputs = [to_numpy(x) for x in layer(pixels, memory, training=False)]
    for a, b in zip(outputs, recorded_outputs):
        np.testing.assert_array_equal(a, b)
