"""The backend seam's depthwise convolution: on JAX on CPU a fused sum of
shifted products (XLA's grouped convolution is slow there), elsewhere the
engine's own; either way TensorFlow's stride-1 "same" depthwise convolution."""

import numpy as np
import pytest

from keras_maxdeeplab.backend_seam import depthwise_conv_same
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
