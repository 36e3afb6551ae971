"""The backend seam's depthwise convolution: on JAX on CPU a fused sum of
shifted products (XLA's grouped convolution is slow there), elsewhere the
engine's own; either way TensorFlow's stride-1 "same" depthwise convolution."""

import numpy as np
import pytest

from keras_maxdeeplab.backend_seam import count_by_index
from keras_maxdeeplab.backend_seam import depthwise_conv_same
from keras_maxdeeplab.backend_seam import first_argmax
from tests.helpers import to_numpy


def _reference(inputs, kernel):
    """The convolution by definition, in float64 (TensorFlow's "same" padding:
    the odd pixel goes after)."""
    kh, kw = kernel.shape[:2]
    top, left = (kh - 1) // 2, (kw - 1) // 2
    padded = np.pad(inputs.astype("float64"), [(0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)])
    height, width = inputs.shape[1:3]
    out = np.zeros(inputs.shape, "float64")
    for i in range(kh):
        for j in range(kw):
            out += padded[:, i : i + height, j : j + width, :] * kernel[i, j, :, 0]
    return out


@pytest.mark.parametrize("kernel_size", [(5, 5), (3, 3), (4, 2)])
def test_depthwise_conv_same_is_tensorflows_same_convolution(kernel_size):
    rng = np.random.RandomState(0)
    inputs = rng.randn(2, 9, 7, 6).astype("float32")
    kernel = rng.randn(*kernel_size, 6, 1).astype("float32")
    got = to_numpy(depthwise_conv_same(inputs, kernel))
    assert got.shape == inputs.shape
    np.testing.assert_allclose(got, _reference(inputs, kernel), rtol=1e-5, atol=1e-5)


def test_first_argmax_takes_the_first_maximum_and_ties_signed_zeros():
    values = np.array(
        [
            [0.5, 2.0, 2.0, -1.0],  # a tie: the first
            [-0.0, 0.0, -3.0, -0.0],  # -0.0 ties with 0.0 (tf.argmax in deeplab2)
            [-7.0, -8.0, -7.5, -9.0],
            [1.0, 1.0, 1.0, 1.0],
        ],
        "float32",
    )
    got = to_numpy(first_argmax(values))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [1, 0, 0, 0])
    # The last axis of a [B, H, W, N] map, as the post-processors use it.
    rng = np.random.RandomState(0)
    maps = np.round(rng.randn(2, 5, 7, 6), 1).astype("float32")
    np.testing.assert_array_equal(to_numpy(first_argmax(maps)), np.argmax(maps, axis=-1))
    np.testing.assert_array_equal(to_numpy(first_argmax(maps, axis=1)), np.argmax(maps, axis=1))


def test_count_by_index_sums_weights_per_index_per_image():
    rng = np.random.RandomState(1)
    index = rng.randint(0, 5, (3, 9, 11)).astype("int32")
    weights = rng.rand(3, 9, 11) > 0.3
    expected = np.stack(
        [np.bincount(i.ravel(), w.ravel(), minlength=6) for i, w in zip(index, weights)]
    )
    got = to_numpy(count_by_index(index, weights, 6))
    assert got.shape == (3, 6) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
