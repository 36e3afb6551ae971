import numpy as np

import keras

from keras_maxdeeplab.layers import MultiAxisBatchNormalization
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
