import numpy as np
import pytest

from keras_maxdeeplab.layers import AxialAttention
from keras_maxdeeplab.layers import AxialAttention2D
from keras_maxdeeplab.layers import RelativePositionalEncoding
from tests.helpers import run_layer_test
from tests.helpers import to_numpy


def _randomize(layer, rng):
    for variable in layer.weights:
        low = 0.5 if "variance" in variable.path or "gamma" in variable.path else -0.5
        variable.assign(rng.uniform(low, 1.0, size=variable.shape).astype("float32"))


def _bn(x, layer_bn):
    gamma, beta, mean, var = (to_numpy(v) for v in layer_bn.weights)
    return gamma * (x - mean) / np.sqrt(var + 1e-3) + beta


def _reference(layer, x):
    """The spec's formula (section 1.5) written out with explicit loops over positions."""
    heads, dk, dv = layer.num_heads, layer.total_key_depth, layer.total_value_depth
    length = x.shape[1]
    qkv = _bn(x @ to_numpy(layer.qkv_kernel), layer.batch_norm_qkv)
    q = qkv[..., :dk].reshape(-1, length, heads, dk // heads)
    k = qkv[..., dk : 2 * dk].reshape(-1, length, heads, dk // heads)
    v = qkv[..., 2 * dk :].reshape(-1, length, heads, dv // heads)
    eq, ek, ev = (to_numpy(r.embeddings) for r in (layer.query_rpe, layer.key_rpe, layer.value_rpe))
    sim = np.zeros((3, x.shape[0], heads, length, length), "float64")
    for l in range(length):
        for m in range(length):
            r = m - l + 254
            sim[0, :, :, l, m] = (q[:, l] * k[:, m]).sum(-1)
            sim[1, :, :, l, m] = (q[:, l] * eq[r]).sum(-1)
            sim[2, :, :, l, m] = (k[:, m] * ek[r]).sum(-1)
    sim = _bn(sim, layer.batch_norm_similarity).sum(0)
    weights = np.exp(sim - sim.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    content = np.einsum("bhlm,bmhd->bhld", weights, v)
    position = np.zeros_like(content)
    for l in range(length):
        for m in range(length):
            position[:, :, l] += weights[:, :, l, m, None] * ev[m - l + 254]
    out = _bn(np.stack([content, position]), layer.batch_norm_retrieved_output).sum(0)
    return out.transpose(0, 2, 1, 3).reshape(x.shape[0], length, dv)


def test_axial_attention_matches_written_out_formula():
    rng = np.random.RandomState(0)
    x = rng.normal(size=(2, 7, 12)).astype("float32")
    layer = AxialAttention(16, 32, num_heads=4)
    layer.build(x.shape)
    _randomize(layer, rng)
    assert tuple(layer.batch_norm_similarity.gamma.shape) == (3, 1, 4, 1, 1)
    assert tuple(layer.batch_norm_retrieved_output.gamma.shape) == (2, 1, 4, 1, 8)
    assert tuple(layer.value_rpe.embeddings.shape) == (509, 8)
    np.testing.assert_allclose(
        to_numpy(layer(x, training=False)), _reference(layer, x), rtol=1e-4, atol=1e-4
    )
    run_layer_test(layer, x, atol=1e-5)


def test_relative_positional_encoding_index():
    rpe = RelativePositionalEncoding(3)
    rpe.build()
    table = to_numpy(rpe.gather(5))
    embeddings = to_numpy(rpe.embeddings)
    for l in range(5):
        for m in range(5):
            np.testing.assert_array_equal(table[l, m], embeddings[m - l + 254])


def test_axial_attention_2d_height_then_width():
    rng = np.random.RandomState(1)
    x = rng.normal(size=(2, 5, 6, 8)).astype("float32")
    layer = AxialAttention2D(filters=8, num_heads=2)
    layer.build(x.shape)
    _randomize(layer, rng)
    height = _reference(layer.height_axis, x.transpose(0, 2, 1, 3).reshape(-1, 5, 8))
    height = height.reshape(2, 6, 5, 16).transpose(0, 2, 1, 3)
    expected = _reference(layer.width_axis, height.reshape(-1, 6, 16)).reshape(2, 5, 6, 16)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, rtol=1e-4, atol=1e-4)
    run_layer_test(layer, x, atol=1e-5)


def test_axial_attention_rejects_long_axes_and_bad_depths():
    with pytest.raises(ValueError, match="local attention"):
        AxialAttention(8, 16, num_heads=8)(np.zeros((1, 130, 4), "float32"))
    with pytest.raises(ValueError, match="divisible"):
        AxialAttention(12, 16, num_heads=8)
