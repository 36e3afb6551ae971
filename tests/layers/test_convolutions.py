"""Conv2DSame's batch norm: the convolution then the normalisation, whether the
engine runs them as two steps or folds inference batch norm into the kernel
(PyTorch, `backend_seam.folds_batch_norm`); the same for the depthwise step of
SeparableConv2DSame."""

import numpy as np
import pytest

import keras

from keras_maxdeeplab.layers import Conv2DSame
from keras_maxdeeplab.layers import SeparableConv2DSame
from tests.helpers import to_numpy

EPSILON = 1e-3


def _layer_with_statistics(kernel_size, strides, size, rng):
    layer = Conv2DSame(8, kernel_size, strides=strides, activation="relu")
    layer.build((None, size, size, 4))
    bn = layer.batch_norm
    bn.gamma.assign(rng.uniform(0.5, 1.5, 8).astype("float32"))
    bn.beta.assign(rng.normal(size=8).astype("float32"))
    bn.moving_mean.assign(rng.normal(size=8).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.2, 2.0, 8).astype("float32"))
    return layer


def _convolved(layer, x):
    """The layer's convolution alone (its padding, its Conv2D), no batch norm."""
    if layer._padding is not None:
        begin, end = layer._padding
        x = np.pad(x, [[0, 0], [begin, end], [begin, end], [0, 0]])
    return to_numpy(layer.conv(x)).astype("float64")


def _normalised(convolved, mean, variance, layer):
    gamma, beta = to_numpy(layer.batch_norm.gamma), to_numpy(layer.batch_norm.beta)
    return np.maximum((convolved - mean) / np.sqrt(variance + EPSILON) * gamma + beta, 0)


# 17x17 on two images: 578 pixels, past the 1x1 convolution's threshold on PyTorch.
@pytest.mark.parametrize(
    "kernel_size, strides, size", [(3, 1, 9), (3, 2, 9), (1, 1, 9), (1, 1, 17), (1, 2, 9)]
)
def test_inference_is_convolution_then_moving_statistics(kernel_size, strides, size):
    rng = np.random.RandomState(0)
    layer = _layer_with_statistics(kernel_size, strides, size, rng)
    x = rng.normal(size=(2, size, size, 4)).astype("float32")
    expected = _normalised(
        _convolved(layer, x),
        to_numpy(layer.batch_norm.moving_mean),
        to_numpy(layer.batch_norm.moving_variance),
        layer,
    )
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), expected, atol=2e-5)
    # A frozen batch norm normalises with its moving statistics in training too.
    layer.batch_norm.trainable = False
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected, atol=2e-5)


def test_training_normalises_with_the_batch_statistics():
    rng = np.random.RandomState(1)
    layer = _layer_with_statistics(3, 1, 9, rng)
    x = rng.normal(size=(2, 9, 9, 4)).astype("float32")
    convolved = _convolved(layer, x)
    mean, variance = convolved.mean(axis=(0, 1, 2)), convolved.var(axis=(0, 1, 2))
    np.testing.assert_allclose(
        to_numpy(layer(x, training=True)), _normalised(convolved, mean, variance, layer), atol=2e-5
    )


@pytest.mark.parametrize("size", [9, 17])
def test_frozen_batch_norm_still_trains_the_kernel(size):
    """One SGD step (learning rate 1) on sum(relu(BN(x @ K))) with the batch
    norm frozen (`trainable = False`: its four variables stay): the kernel's
    gradient by hand is, over the pixels p where the output is positive,
    dK[i, o] = sum_p x[p, i] * gamma[o] / sqrt(moving_variance[o] + eps)."""
    rng = np.random.RandomState(2)
    layer = _layer_with_statistics(1, 1, size, rng)
    layer.batch_norm.trainable = False
    inputs = keras.Input((size, size, 4), batch_size=1)
    model = keras.Model(inputs, layer(inputs))
    model.compile(
        optimizer=keras.optimizers.SGD(1.0),
        loss=lambda _, outputs: keras.ops.sum(outputs, axis=(1, 2, 3)),
    )
    x = rng.normal(size=(1, size, size, 4)).astype("float32")
    bn = layer.batch_norm
    kernel = to_numpy(layer.conv.kernel)[0, 0].astype("float64")
    gamma, beta = to_numpy(bn.gamma).astype("float64"), to_numpy(bn.beta).astype("float64")
    mean, variance = to_numpy(bn.moving_mean), to_numpy(bn.moving_variance)
    scale = 1 / np.sqrt(variance + EPSILON)
    pixels = x.reshape(-1, 4).astype("float64")
    normalised = (pixels @ kernel - mean) * scale
    positive = (normalised * gamma + beta > 0).astype("float64")
    model.train_on_batch(x, np.zeros((1, size, size, 8), "float32"))
    np.testing.assert_allclose(
        to_numpy(layer.conv.kernel)[0, 0], kernel - pixels.T @ positive * scale * gamma, atol=1e-4
    )
    variables = (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)
    for variable, before in zip(variables, (gamma, beta, mean, variance)):
        np.testing.assert_array_equal(to_numpy(variable), before.astype("float32"))


def test_depthwise_inference_is_convolution_then_moving_statistics():
    """SeparableConv2DSame's 5x5 depthwise step against the sum by
    definition (TensorFlow's "same" padding), then batch norm and ReLU."""
    rng = np.random.RandomState(3)
    layer = SeparableConv2DSame(8, 5)
    x = rng.normal(size=(2, 9, 9, 4)).astype("float32")
    layer(x)
    bn = layer.depthwise.batch_norm
    statistics = [rng.uniform(0.5, 1.5, 4), rng.normal(size=4), rng.normal(size=4)]
    statistics.append(rng.uniform(0.2, 2.0, 4))
    for variable, value in zip((bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance), statistics):
        variable.assign(value.astype("float32"))
    gamma, beta, mean, variance = statistics
    kernel = to_numpy(layer.depthwise.depthwise_conv.kernel)[:, :, :, 0].astype("float64")
    padded = np.pad(x.astype("float64"), [[0, 0], [2, 2], [2, 2], [0, 0]])
    convolved = sum(
        padded[:, i : i + 9, j : j + 9, :] * kernel[i, j] for i in range(5) for j in range(5)
    )
    expected = np.maximum((convolved - mean) / np.sqrt(variance + EPSILON) * gamma + beta, 0)
    np.testing.assert_allclose(
        to_numpy(layer.depthwise(x, training=False)), expected, atol=2e-5
    )
