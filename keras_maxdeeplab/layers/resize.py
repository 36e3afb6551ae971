"""Align-corners resizing (TF1 `align_corners=True` semantics) with `keras.ops`.

`keras.ops.image.resize` has no `align_corners`; deeplab2 uses it everywhere.
Bilinear resizing is separable, so it is two matrix products with small,
static interpolation matrices: exact on every backend, and the form every
exporter converts. Where the engine has its own kernel for the same sums
(PyTorch: `backend_seam.native_resize_bilinear_align_corners`), that runs
instead; on JAX each pass gathers the two source rows of every output row and
interpolates them as TF1's kernel does (`backend_seam.resizes_by_gathers`).
The values differ only in float rounding.
"""

import numpy as np
from keras import ops

from keras_maxdeeplab import backend_seam


def _source_rows(in_size, out_size):
    """Align-corners linear interpolation of `out_size` rows from `in_size`:
    each output row's two source rows `low`, `high` (int32 `[out_size]`) and
    the weight `frac` of `high` (float32 `[out_size]`)."""
    if out_size == 1 or in_size == 1:
        zeros = np.zeros((out_size,), np.int32)
        return zeros, zeros, np.zeros((out_size,), np.float32)
    # float32 arithmetic as TF's resize kernel does.
    scale = np.float32(in_size - 1) / np.float32(out_size - 1)
    source = np.arange(out_size, dtype=np.float32) * scale
    low = np.floor(source).astype(np.int32)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, source - low.astype(np.float32)


def _bilinear_matrix(in_size, out_size):
    """[out_size, in_size] align-corners linear interpolation weights."""
    low, high, frac = _source_rows(in_size, out_size)
    matrix = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    matrix[rows, low] += 1.0 - frac
    matrix[rows, high] += frac
    return matrix


def _resize_by_gathers(images, out_h, out_w):
    """Width pass, then height pass: TF1's formula."""
    return interpolate_by_gathers(interpolate_by_gathers(images, 2, out_w), 1, out_h)


def interpolate_by_gathers(values, axis, size, positions=None):
    """One pass of align-corners bilinear resizing as JAX runs it: `axis` of
    rank-4 `values` interpolated to `size`, each output position between its
    two gathered source positions as TF1's kernel does (`low + (high - low)
    * frac`). `positions` (int32 `[k]`), if given, picks output positions:
    the axis then has `k`. `_resize_by_gathers` is the width pass (axis 2 of
    `[B, H, W, C]`), then the height pass (axis 1).

    Example:
    >>> wide = interpolate_by_gathers(x, 2, 641)  # x [1, 161, 161, 128] -> [1, 161, 641, 128]
    >>> top = interpolate_by_gathers(wide, 1, 641, keras.ops.arange(4))  # [1, 4, 641, 128]
    """
    in_size = int(values.shape[axis])
    if in_size == size:
        return values if positions is None else ops.take(values, positions, axis=axis)
    low, high, frac = _source_rows(in_size, size)
    if positions is not None:
        low, high, frac = (ops.take(table, positions) for table in (low, high, frac))
    shape = [1, 1, 1, 1]
    shape[axis] = -1
    below = ops.take(values, low, axis=axis)
    above = ops.take(values, high, axis=axis)
    return below + (above - below) * ops.reshape(ops.cast(frac, values.dtype), shape)


def nearest_indices(in_size, out_size):
    """Source indices of TF1 align-corners nearest resizing (round half up)."""
    if out_size == 1:
        return np.zeros((1,), np.int64)
    scale = np.float32(in_size - 1) / np.float32(out_size - 1)
    source = np.arange(out_size, dtype=np.float32) * scale
    return np.minimum(np.floor(source + np.float32(0.5)).astype(np.int64), in_size - 1)


def resize_bilinear_align_corners(images, size):
    """Bilinearly resizes `[B, H, W, C]` images to `size` with aligned corners.

    Args:
        images: `[B, H, W, C]` float tensor with static H and W.
        size: `(height, width)` of the output.

    Returns:
        `[B, height, width, C]` tensor; the input itself when the size matches.

    Example:
    >>> y = resize_bilinear_align_corners(x, (161, 161))  # x: [B, 81, 81, C]
    """
    in_h, in_w = int(images.shape[1]), int(images.shape[2])
    out_h, out_w = int(size[0]), int(size[1])
    if (in_h, in_w) == (out_h, out_w):
        return images
    native = backend_seam.native_resize_bilinear_align_corners(images, (out_h, out_w))
    if native is not None:
        return native
    if backend_seam.resizes_by_gathers():
        return _resize_by_gathers(images, out_h, out_w)
    dtype = images.dtype
    # Each pass is a tensordot (a reshape and one matrix product) with the
    # matrix first, rather than an einsum: TensorFlow Lite's converter gives
    # the einsum's batched products unallocatable shapes when the batch size is
    # left free. Width first, height last: the last product's [H', W' * B * C]
    # output, read as [B, H', W', C], is then already in order for one image
    # (PyTorch runs the softmax and argmax of post-processing over it 3-5x
    # faster than over a transposed view).
    images = ops.transpose(images, (2, 0, 1, 3))  # [W, B, H, C]
    if in_w != out_w:
        matrix = ops.convert_to_tensor(_bilinear_matrix(in_w, out_w), dtype=dtype)
        images = ops.tensordot(matrix, images, [[1], [0]])
    images = ops.transpose(images, (2, 0, 1, 3))  # [H, W', B, C]
    if in_h != out_h:
        matrix = ops.convert_to_tensor(_bilinear_matrix(in_h, out_h), dtype=dtype)
        images = ops.tensordot(matrix, images, [[1], [0]])
    return ops.transpose(images, (2, 0, 1, 3))  # [B, H', W', C]
