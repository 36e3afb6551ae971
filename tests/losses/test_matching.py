import itertools

import numpy as np
import pytest

import keras

from keras_maxdeeplab import backend_seam
from keras_maxdeeplab.losses import hungarian_matching
from keras_maxdeeplab.losses import hungarian_matching_ops
from tests.helpers import to_numpy


def _brute_force_cost(cost):
    n = cost.shape[0]
    return min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(n)))


def _cases():
    rng = np.random.RandomState(0)
    cases = []
    for n in (1, 2, 3, 4, 6):
        cases.append(rng.normal(size=(n, n)))
        cases.append(np.round(rng.normal(size=(n, n))))  # ties
        cases.append(np.zeros((n, n)))  # all tied
    # deeplab2-style padding: 2 valid GT rows, 2 void rows at +999, 1 padded slot column at -999.
    padded = np.full((5, 5), 999.0)
    padded[:2, :4] = rng.uniform(-1, 0, size=(2, 4))
    padded[:, 4] = -999.0
    cases.append(padded)
    return [c.astype("float32") for c in cases]


@pytest.mark.parametrize("solver", ["scipy_host_call", "keras_ops"])
def test_optimal_against_brute_force(solver):
    for cost in _cases():
        batch = np.stack([cost, cost[::-1]])
        if solver == "scipy_host_call":
            permutation = to_numpy(hungarian_matching(batch))
        else:
            permutation = to_numpy(hungarian_matching_ops(batch))
        np.testing.assert_array_equal(permutation.sum(1), 1)
        np.testing.assert_array_equal(permutation.sum(2), 1)
        for b in range(2):
            got = float((permutation[b] * batch[b]).sum())
            assert got == pytest.approx(_brute_force_cost(batch[b].astype("float64")), abs=1e-4)


def test_both_solvers_agree_on_large_matrices():
    costs = np.random.RandomState(1).uniform(-1, 0, size=(2, 181, 181)).astype("float32")
    by_scipy = to_numpy(hungarian_matching(costs))
    solve = hungarian_matching_ops
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # As training runs it: in a graph (eager TensorFlow steps the while
        # loops op by op, 90 s on these matrices).
        solve = tf.function(hungarian_matching_ops)
    by_ops = to_numpy(solve(costs))
    np.testing.assert_allclose(
        (by_ops * costs).sum((1, 2)), (by_scipy * costs).sum((1, 2)), atol=1e-4
    )


def test_host_call_inside_compiled_function():
    costs = np.random.RandomState(2).normal(size=(3, 7, 7)).astype("float32")
    expected = to_numpy(hungarian_matching(costs))
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        got = jax.jit(hungarian_matching)(costs)
    elif backend == "tensorflow":
        import tensorflow as tf

        got = tf.function(hungarian_matching)(tf.constant(costs))
        assert not backend_seam.host_calls_supported(jit_compile=True)
        xla = tf.function(lambda c: hungarian_matching(c, jit_compile=True), jit_compile=True)
        np.testing.assert_array_equal(to_numpy(xla(tf.constant(costs))), expected)
    else:
        got = hungarian_matching(keras.ops.convert_to_tensor(costs))
    np.testing.assert_array_equal(to_numpy(got), expected)
