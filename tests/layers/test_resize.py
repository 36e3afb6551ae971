import numpy as np
import tensorflow as tf

from keras_maxdeeplab.layers.resize import _bilinear_matrix
from keras_maxdeeplab.layers.resize import nearest_indices
from keras_maxdeeplab.layers.resize import resize_bilinear_align_corners
from tests.helpers import to_numpy


def test_bilinear_matrix_by_hand():
    # 3 -> 5 with aligned corners samples source positions 0, 0.5, 1, 1.5, 2.
    expected = [[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1]]
    np.testing.assert_allclose(_bilinear_matrix(3, 5), expected)


def test_bilinear_matches_tf1_align_corners():
    """Whichever form runs (matrix products; PyTorch's own kernel there)."""
    rng = np.random.RandomState(0)
    cases = [
        ((2, 9, 7, 3), [(17, 13), (5, 4), (9, 13), (1, 3)]),
        ((1, 41, 41, 4), [(161, 161)]),  # the mask logits' upsampling, stride 4
        ((1, 120, 160, 3), [(33, 33), (129, 97)]),  # a photo's downsizing
    ]
    for shape, sizes in cases:
        x = rng.normal(size=shape).astype("float32") * 5
        for size in sizes:
            expected = tf.compat.v1.image.resize_bilinear(x, size, align_corners=True).numpy()
            got = to_numpy(resize_bilinear_align_corners(x, size))
            np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=f"{shape} -> {size}")


def test_same_size_is_identity():
    x = np.arange(2 * 5 * 5 * 1, dtype="float32").reshape(2, 5, 5, 1)
    assert resize_bilinear_align_corners(x, (5, 5)) is x


def test_nearest_matches_tf1_align_corners():
    for in_size, out_size in [(33, 129), (129, 360), (10, 3), (7, 7)]:
        x = np.arange(in_size, dtype="float32").reshape(1, in_size, 1, 1)
        expected = tf.compat.v1.image.resize_nearest_neighbor(
            x, (out_size, 1), align_corners=True
        ).numpy()[0, :, 0, 0]
        np.testing.assert_array_equal(nearest_indices(in_size, out_size), expected.astype(int))
