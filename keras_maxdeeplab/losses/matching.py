"""Exact (minimum-cost) bipartite matching for the PQ-style loss.

Two solvers of the same problem: scipy's `linear_sum_assignment` through the
backend seam's host call (fast, used wherever a host call can run), and a
pure `keras.ops` Hungarian algorithm for where it cannot (TensorFlow under
XLA). Both return a 0/1 permutation matrix; ties may be broken differently.

Both always end, on any input: non-finite costs (NaN or infinite, e.g. from
a diverged step) are matched as if they were 0, and the `keras.ops` solver's
loops are bounded by the matrix size. The loss computed from such
predictions is non-finite anyway; the matcher must not hang before it is.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

from keras import ops

from keras_maxdeeplab import backend_seam


def _scipy_permutations(costs):
    costs = np.asarray(costs, dtype=np.float64)
    costs = np.where(np.isfinite(costs), costs, 0.0)
    permutations = np.zeros(costs.shape, np.float32)
    for index, cost in enumerate(costs):
        rows, cols = linear_sum_assignment(cost)
        permutations[index, rows, cols] = 1.0
    return permutations


def hungarian_matching(costs, jit_compile=False):
    """Minimum-cost assignment of square cost matrices.

    Args:
        costs: `[B, F, F]` float tensor.
        jit_compile: whether the caller runs under XLA; with TensorFlow that
            rules out host calls and selects the `keras.ops` solver.

    Returns:
        `[B, F, F]` float32 permutation matrices (`[b, row, col] = 1` where
        row is assigned to col), without gradient.

    Example:
    >>> permutation = hungarian_matching(cost)  # cost: [2, 181, 181]
    """
    if backend_seam.host_calls_supported(jit_compile):
        return backend_seam.host_call(
            _scipy_permutations, [costs], costs.shape, "float32", per_sample=True
        )
    return hungarian_matching_ops(costs)


def hungarian_matching_ops(costs):
    """The Hungarian algorithm (shortest augmenting paths) in `keras.ops`.

    The e-maxx formulation, O(F^3) per matrix, run on the whole batch at once
    (finished matrices are masked), with `keras.ops.while_loop` for the path
    searches, so it compiles under XLA. Same optimum as
    `linear_sum_assignment`; ties may be broken differently.

    Rows are added one at a time; a shortest augmenting path is grown with
    row potentials `u` and column potentials `v`. Indices are 1-based: row
    and column 0 are virtual. `match[j]` is the row assigned to column j
    (0 = free), `way[j]` the previous column on the path.

    Shapes: `[B, F, F] -> [B, F, F]`.
    """
    costs = ops.stop_gradient(ops.cast(costs, "float32"))
    costs = ops.where(ops.isfinite(costs), costs, 0.0)
    n = costs.shape[-1]
    batch = ops.shape(costs)[0]
    inf = np.float32(np.inf)
    columns = ops.arange(n + 1, dtype="int32")[None, :]
    batch_index = ops.arange(batch, dtype="int32")[:, None]
    costs = ops.pad(costs, [[0, 0], [1, 0], [1, 0]])

    def at(values, index):  # values[b, index[b]] for [B, n+1] values and [B] index
        return ops.take_along_axis(values, index[:, None], axis=1)[:, 0]

    def assign_row(row, state):
        u, v, match, way = state
        match = ops.where(columns == 0, ops.cast(row, "int32"), match)

        # Each step marks one more column used: n + 1 steps at most, whatever
        # the values (float overflow cannot make the loop run on).
        def searching(step, j0, *_):
            return ops.logical_and(step <= n, ops.any(at(match, j0) != 0))

        def grow(step, j0, u, v, minv, used, way):
            active = (at(match, j0) != 0)[:, None]
            new_used = ops.logical_or(used, columns == j0[:, None])
            i0 = at(match, j0)
            row_costs = ops.take_along_axis(costs, i0[:, None, None], axis=1)[:, 0]
            reduced = row_costs - at(u, i0)[:, None] - v
            better = ops.logical_and(ops.logical_not(new_used), reduced < minv)
            new_minv = ops.where(better, reduced, minv)
            new_way = ops.where(better, j0[:, None], way)
            candidates = ops.where(new_used, inf, new_minv)
            j1 = ops.cast(ops.argmin(candidates, axis=1), "int32")
            delta = at(candidates, j1)[:, None]
            # Rows on the tree (matched to used columns, incl. the new row) gain delta.
            on_tree = ops.logical_and(new_used, active)
            indices = ops.stack(
                [ops.broadcast_to(batch_index, ops.shape(match)), ops.where(on_tree, match, 0)],
                axis=-1,
            )
            gain = ops.scatter_update(
                ops.zeros_like(u),
                ops.reshape(indices, (-1, 2)),
                ops.reshape(ops.where(on_tree, delta, 0.0), (-1,)),
            )
            return (
                step + 1,
                ops.where(active[:, 0], j1, j0),
                u + gain,
                ops.where(on_tree, v - delta, v),
                ops.where(active, ops.where(new_used, new_minv, new_minv - delta), minv),
                ops.where(active, new_used, used),
                ops.where(active, new_way, way),
            )

        start = (
            0,
            ops.zeros((batch,), "int32"),
            u,
            v,
            ops.full(ops.shape(u), inf),
            ops.zeros(ops.shape(u), "bool"),
            way,
        )
        _, j0, u, v, _, _, way = ops.while_loop(searching, grow, start)

        def augment(step, j0, match):
            moving = (j0 != 0)[:, None]
            j1 = at(way, j0)
            match = ops.where(
                ops.logical_and(moving, columns == j0[:, None]), at(match, j1)[:, None], match
            )
            return step + 1, ops.where(j0 != 0, j1, j0), match

        # A path visits each column once: n + 1 steps at most.
        _, _, match = ops.while_loop(
            lambda step, j0, _: ops.logical_and(step <= n, ops.any(j0 != 0)),
            augment,
            (0, j0, match),
        )
        return u, v, match, way

    zeros = ops.zeros((batch, n + 1), "float32")
    state = (zeros, zeros, ops.zeros((batch, n + 1), "int32"), ops.zeros((batch, n + 1), "int32"))
    _, _, match, _ = ops.fori_loop(1, n + 1, assign_row, state)
    # match[:, 1:][b, col] = row + 1  ->  permutation[b, row, col] = 1.
    return ops.transpose(ops.one_hot(match[:, 1:] - 1, n, dtype="float32"), (0, 2, 1))
