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
    assert optimizer.weight_decay_rate == 0.0  # deeplab2's MaX-DeepLab Adam has none
    multiplied = set(optimizer.multiplied_paths)
    paths = {v.path for v in model.trainable_weights}
    assert "stem/conv1_bn_act/conv/kernel" in multiplied
    assert "stage4/block2/attention/height_axis/qkv_kernel" in multiplied
    for path in paths:
        if any(word in path for word in ("transformer", "extra", "memory_feature")):
            assert path not in multiplied, path
        if not path.startswith(("stem", "stage")):
            assert path not in multiplied, path  # heads train at the full rate


def _deeplab2_adamw(values, grads, rates, weight_decay, decayed, steps):
    """deeplab2's AdamWeightDecay by hand (legacy Keras Adam, beta 0.9 / 0.999,
    epsilon 1e-7): decay `var -= rate * weight_decay * var` first, then Adam."""
    values = [np.array(v, "float64") for v in values]
    m = [np.zeros_like(v) for v in values]
    s = [np.zeros_like(v) for v in values]
    for t in range(1, steps + 1):
        for i, (g, rate) in enumerate(zip(grads, rates)):
            if decayed[i]:
                values[i] -= rate * weight_decay * values[i]
            m[i] = 0.9 * m[i] + 0.1 * g
            s[i] = 0.999 * s[i] + 0.001 * g * g
            alpha = rate * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
            values[i] -= alpha * m[i] / (np.sqrt(s[i]) + 1e-7)
    return values


def test_weight_decay_is_deeplab2s_adamw_on_kernels_only():
    initial = [np.array([1.0, -2.0, 3.0], "float32")] * 4
    names = ["kernel", "qkv_kernel", "bias", "embeddings"]
    variables = [keras.Variable(v, name=n) for v, n in zip(initial, names)]
    grads = [np.array([0.5, 1.0, -0.25], "float32") * (i + 1) for i in range(4)]
    optimizer = MaXDeepLabAdam(0.1, learning_rate_multiplier=0.1, weight_decay_rate=0.05)
    optimizer.set_multiplied_variables(variables[1:2])
    for _ in range(3):
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    expected = _deeplab2_adamw(
        initial, grads, [0.1, 0.01, 0.1, 0.1], 0.05, [True, True, False, False], steps=3
    )
    for variable, value, name in zip(variables, expected, names):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), value, rtol=1e-5, err_msg=name)
    # Without decay the kernel would be elsewhere: the test can fail.
    undecayed = _deeplab2_adamw(initial, grads, [0.1] * 4, 0.0, [False] * 4, steps=3)
    assert np.max(np.abs(undecayed[0] - expected[0])) > 1e-3
    restored = MaXDeepLabAdam.from_config(optimizer.get_config())
    assert restored.weight_decay_rate == 0.05
    with pytest.raises(ValueError, match="weight_decay_rate must be >= 0"):
        MaXDeepLabAdam(weight_decay_rate=-0.1)
