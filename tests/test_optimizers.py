import numpy as np
import pytest

import keras

from keras_maxdeeplab.optimizers import MaXDeepLabAdam
from keras_maxdeeplab.optimizers import WarmUpPolynomialDecay
from tests.helpers import tiny_model


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0),
        (2500, 1e-3 * 0.5),
        (4999, 1e-3 * 4999 / 5000),
        (5000, 1e-3 * (1 - 0.05) ** 0.9),  # the small jump deeplab2 has at the end of warm-up
        (50_000, 1e-3 * 0.5**0.9),
        (100_000, 0.0),
        (150_000, 0.0),
    ],
)
def test_warmup_polynomial_schedule(step, expected):
    schedule = WarmUpPolynomialDecay(1e-3, decay_steps=100_000, warmup_steps=5000)
    assert float(keras.ops.convert_to_numpy(schedule(step))) == pytest.approx(expected, abs=1e-9)


def test_learning_rate_multiplier():
    slow = keras.Variable(np.zeros(3, "float32"), name="slow")
    fast = keras.Variable(np.zeros(3, "float32"), name="fast")
    optimizer = MaXDeepLabAdam(learning_rate=0.01, learning_rate_multiplier=0.1)
    optimizer.set_multiplied_variables([slow])
    grad = keras.ops.convert_to_tensor(np.array([1.0, -2.0, 0.5], "float32"))
    optimizer.apply([grad, grad], [slow, fast])
    slow_step = keras.ops.convert_to_numpy(slow)
    fast_step = keras.ops.convert_to_numpy(fast)
    # Adam's first step is ~learning_rate * sign(grad).
    np.testing.assert_allclose(fast_step, -0.01 * np.sign([1.0, -2.0, 0.5]), rtol=1e-4)
    np.testing.assert_allclose(slow_step, 0.1 * fast_step, rtol=1e-4)


def test_default_compile_is_deeplab2_recipe():
    model = tiny_model(65)
    optimizer = model.optimizer
    assert isinstance(optimizer, MaXDeepLabAdam)
    assert optimizer.learning_rate_multiplier == 0.1
    multiplied = set(optimizer.multiplied_paths)
    paths = {v.path for v in model.trainable_weights}
    assert "stem/conv1_bn_act/conv/kernel" in multiplied
    assert "stage4/block2/attention/height_axis/qkv_kernel" in multiplied
    for path in paths:
        if any(word in path for word in ("transformer", "extra", "memory_feature")):
            assert path not in multiplied, path
        if not path.startswith(("stem", "stage")):
            assert path not in multiplied, path  # heads train at the full rate
