import numpy as np
import pytest

import keras

from keras_maxdeeplab.layers import MultiAxisBatchNormalization
from keras_maxdeeplab.layers.batch_norm import batch_normalization
from tests.helpers import run_layer_test
from tests.helpers import to_numpy


def _layer_with_statistics(rng, shape):
    layer = MultiAxisBatchNormalization(axis=[0, 2])
    layer.build(shape)
    for variable in layer.weights:
        value = rng.uniform(0.5, 1.5, size=variable.shape).astype("float32")
        variable.assign(value)
    return layer


def test_parameter_shape_is_deeplab2_broadcast_shape():
    layer = MultiAxisBatchNormalization(axis=[0, 2, 4])
    layer.build((2, 4, 8, 5, 3))
    assert tuple(layer.gamma.shape) == (2, 1, 8, 1, 3)
    assert tuple(layer.moving_variance.shape) == (2, 1, 8, 1, 3)


def test_inference_formula():
    rng = np.random.RandomState(0)
    x = rng.normal(size=(3, 2, 8, 5, 5)).astype("float32")
    layer = _layer_with_statistics(rng, x.shape)
    gamma, beta, mean, var = (to_numpy(v) for v in layer.weights)
    expected = gamma * (x - mean) / np.sqrt(var + 1e-3) + beta
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), expected, rtol=1e-5, atol=1e-6)
    run_layer_test(layer, x)


def test_training_uses_batch_statistics_and_updates_moving_averages():
    rng = np.random.RandomState(1)
    x = rng.normal(loc=2.0, size=(3, 4, 8, 6, 6)).astype("float32")
    layer = _layer_with_statistics(rng, x.shape)
    gamma, beta, mean, var = (to_numpy(v) for v in layer.weights)
    batch_mean = x.mean(axis=(1, 3, 4), keepdims=True)
    batch_var = x.var(axis=(1, 3, 4), keepdims=True)
    expected = gamma * (x - batch_mean) / np.sqrt(batch_var + 1e-3) + beta
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(layer.moving_mean), 0.99 * mean + 0.01 * batch_mean, rtol=1e-5
    )
    np.testing.assert_allclose(
        to_numpy(layer.moving_variance), 0.99 * var + 0.01 * batch_var, rtol=1e-5
    )


def test_mixed_precision_output_dtype():
    layer = MultiAxisBatchNormalization(axis=[1], dtype="mixed_bfloat16")
    y = layer(np.ones((2, 3, 4), "float32"))
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(layer.gamma.dtype) == "float32"


def _batch_norm_by_hand(x, gamma, beta, d_outputs, axis=-1):
    """Outputs, statistics and gradients (for the outputs' cotangent
    `d_outputs`) of training batch norm over every axis but `axis`, written
    out in float64."""
    x, d_outputs = (np.moveaxis(a.astype("float64"), axis, -1) for a in (x, d_outputs))
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    mean, variance = x.mean(axes), x.var(axes)
    inverse_sigma = 1.0 / np.sqrt(variance + 1e-3)
    normalized = (x - mean) * inverse_sigma
    d_beta = d_outputs.sum(axes)
    d_gamma = (d_outputs * normalized).sum(axes)
    d_x = (gamma * inverse_sigma / count) * (count * d_outputs - d_beta - normalized * d_gamma)
    outputs = gamma * normalized + beta
    return np.moveaxis(outputs, -1, axis), mean, variance, (np.moveaxis(d_x, -1, axis), d_gamma, d_beta)


def _training_gradients(layer, x, d_outputs):
    """d(sum(layer(x, training=True) * d_outputs)) for x, gamma and beta."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def loss(trainable, x):
            outputs, _ = layer.stateless_call(
                trainable, [v.value for v in layer.non_trainable_variables], x, training=True
            )
            return (outputs * d_outputs).sum()

        trainable = [v.value for v in layer.trainable_variables]
        d_trainable, d_x = jax.grad(loss, argnums=(0, 1))(trainable, x)
        return [d_x, *d_trainable]
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * d_outputs)
        return tape.gradient(loss, [x, *layer.trainable_variables])
    import torch

    x = torch.tensor(x, requires_grad=True)
    (layer(x, training=True) * torch.tensor(d_outputs)).sum().backward()
    return [x.grad, *(v.value.grad for v in layer.trainable_variables)]


def _built_batch_norm(rng, shape, axis):
    layer = batch_normalization(axis=axis)
    layer.build((None, *shape[1:]))
    for variable, low, high in zip(layer.weights, (0.5, -1.0, -1.0, 0.5), (1.5, 1.0, 1.0, 1.5)):
        variable.assign(rng.uniform(low, high, size=variable.shape).astype("float32"))
    return layer


@pytest.mark.parametrize(
    "shape, axis",
    # Maps, axial attention's qkv, dual-path heads, a single row, a map
    # summed block by block on JAX (backend_seam._PIXEL_LOOP_MIN_VALUES
    # values, not a whole number of blocks).
    [
        ((2, 9, 7, 16), -1),
        ((6, 5, 24), -1),
        ((2, 8, 5, 7), 1),
        ((1, 1, 1, 8), -1),
        ((2, 33, 63, 64), -1),
    ],
)
def test_batch_normalization_trains_on_the_batch_statistics(shape, axis):
    rng = np.random.RandomState(2)
    x = rng.normal(loc=3.0, scale=2.0, size=shape).astype("float32")
    d_outputs = rng.normal(size=shape).astype("float32")
    layer = _built_batch_norm(rng, shape, axis)
    gamma, beta, moving_mean, moving_variance = (to_numpy(v) for v in layer.weights)
    outputs, mean, variance, gradients = _batch_norm_by_hand(x, gamma, beta, d_outputs, axis)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), outputs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(layer.moving_mean), 0.99 * moving_mean + 0.01 * mean, rtol=1e-6)
    np.testing.assert_allclose(
        to_numpy(layer.moving_variance), 0.99 * moving_variance + 0.01 * variance, rtol=1e-6
    )
    computed = _training_gradients(layer, x, d_outputs)
    for name, got, expected in zip(("inputs", "gamma", "beta"), computed, gradients):
        np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-4, atol=1e-5, err_msg=name)

    moving_mean, moving_variance = to_numpy(layer.moving_mean), to_numpy(layer.moving_variance)
    x_last = np.moveaxis(x, axis, -1)
    inference = gamma * (x_last - moving_mean) / np.sqrt(moving_variance + 1e-3) + beta
    np.testing.assert_allclose(
        to_numpy(layer(x, training=False)), np.moveaxis(inference, -1, axis), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("shape, axis", [((2, 9, 7, 16), -1), ((6, 5, 24), -1), ((2, 8, 5, 7), 1)])
def test_batch_normalization_trains_with_keras_forward_bit_for_bit(shape, axis):
    """On PyTorch only the gradient moves to the engine's kernel: outputs and
    moving statistics are those of Keras' own layer exactly (deeplab2-parity
    tests hold them to float32 tolerances that PyTorch's forward kernel
    breaks). Maps this small keep Keras' own sums on JAX too."""
    rng = np.random.RandomState(4)
    x = (rng.normal(size=shape) * 3.0 + 20.0).astype("float32")
    ours = _built_batch_norm(rng, shape, axis)
    keras_layer = keras.layers.BatchNormalization(axis=axis, momentum=0.99, epsilon=1e-3)
    keras_layer.build((None, *shape[1:]))
    for mine, theirs in zip(ours.weights, keras_layer.weights):
        theirs.assign(mine)
    np.testing.assert_array_equal(to_numpy(ours(x, training=True)), to_numpy(keras_layer(x, training=True)))
    for mine, theirs in zip(ours.weights, keras_layer.weights):
        np.testing.assert_array_equal(to_numpy(mine), to_numpy(theirs), err_msg=mine.path)


def test_batch_normalization_keeps_the_compute_dtype():
    x = np.random.RandomState(3).normal(size=(2, 5, 5, 8)).astype("float32")
    half = batch_normalization(dtype="mixed_bfloat16")
    assert keras.backend.standardize_dtype(half(x, training=True).dtype) == "bfloat16"
