"""Issue item: a training step hung forever when the matching cost held NaN
under XLA (the `keras.ops` matcher's loop never ended); scipy refused it with
an unclear error. Both matchers now end on any input."""

import os

import numpy as np

import keras

from keras_maxdeeplab.losses import hungarian_matching
from tests.helpers import run_python
from tests.helpers import to_numpy

# Compiled as the backend compiles a training step; prints the permutation's row sums.
COMPILED = """
import sys
import numpy as np
import keras
from keras_maxdeeplab.losses import hungarian_matching_ops
costs = np.load(sys.argv[1])
backend = keras.backend.backend()
if backend == "jax":
    import jax
    solve = jax.jit(hungarian_matching_ops)
elif backend == "tensorflow":
    import tensorflow as tf
    solve = tf.function(hungarian_matching_ops, jit_compile=True)
else:
    import torch
    solve = hungarian_matching_ops  # keras.ops loops run eagerly on torch
permutation = keras.ops.convert_to_numpy(solve(costs))
print("sums", permutation.sum(axis=1).tolist(), permutation.sum(axis=2).tolist())
"""


def _bad_costs():
    rng = np.random.RandomState(0)
    costs = rng.uniform(-1, 0, (4, 6, 6)).astype("float32")
    costs[0, 2, 3] = np.nan
    costs[1] = np.nan  # a diverged sample: every cost NaN
    costs[2, :, 1] = np.inf
    costs[3, 0, 0] = -np.inf
    costs[3, 4] = 3e38  # finite, but sums overflow
    return costs


def _is_permutation(permutation):
    ones = np.ones(permutation.shape[:2])
    np.testing.assert_array_equal(permutation.sum(axis=1), ones)
    np.testing.assert_array_equal(permutation.sum(axis=2), ones)
    assert set(np.unique(permutation)) <= {0.0, 1.0}


def test_the_compiled_ops_matcher_ends_on_non_finite_costs(tmp_path):
    path = os.path.join(tmp_path, "costs.npy")
    np.save(path, _bad_costs())
    # Before the fix this never returned: the timeout turns a hang into a failure.
    code, out, err = run_python(COMPILED, path, timeout=300)
    assert code == 0, err[-2000:]
    line = [l for l in out.splitlines() if l.startswith("sums")][0]
    assert line == "sums " + str([[1.0] * 6] * 4) + " " + str([[1.0] * 6] * 4)


def test_the_scipy_matcher_takes_non_finite_costs():
    costs = _bad_costs()
    permutation = to_numpy(hungarian_matching(costs))
    _is_permutation(permutation)
    # The finite sample keeps its optimum: non-finite entries count as 0 only.
    finite = np.where(np.isfinite(costs[0]), costs[0], 0.0)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(finite)
    assert np.isclose((permutation[0] * finite).sum(), finite[rows, cols].sum())


def test_the_eager_ops_matcher_agrees_on_finite_entries():
    from keras_maxdeeplab.losses import hungarian_matching_ops

    costs = _bad_costs()
    permutation = to_numpy(hungarian_matching_ops(keras.ops.convert_to_tensor(costs)))
    _is_permutation(permutation)
    reference = to_numpy(hungarian_matching(costs))
    for index in (0, 2):  # NaN and inf entries, finite elsewhere: the same optimum
        cost = np.where(np.isfinite(costs[index]), costs[index], 0.0)
        assert np.isclose((permutation[index] * cost).sum(), (reference[index] * cost).sum())
