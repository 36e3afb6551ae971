import numpy as np
import pytest

from keras_maxdeeplab.layers import DropPath
from keras_maxdeeplab.layers.drop_path import drop_path_keep_prob
from tests.helpers import to_numpy


@pytest.mark.parametrize(
    "stride, beyond, expected",
    # MaX-S (beyond 16): strides 4, 8 keep all; 16 -> 0.85; 32 -> 0.8.
    # MaX-L (beyond 4): 4 -> 0.95, 8 -> 0.9.
    [(4, 16, 1.0), (8, 16, 1.0), (16, 16, 0.85), (32, 16, 0.8), (4, 4, 0.95), (8, 4, 0.9)],
)
def test_linear_schedule(stride, beyond, expected):
    assert drop_path_keep_prob(0.8, "linear", stride, beyond) == pytest.approx(expected)


def test_constant_schedule_and_bad_schedule():
    assert drop_path_keep_prob(0.8, "constant", 16, 16) == 0.8
    with pytest.raises(ValueError, match="schedule"):
        drop_path_keep_prob(0.8, "cosine", 16, 16)


def test_drop_path_masks_whole_samples():
    x = np.ones((512, 3, 3, 2), "float32")
    layer = DropPath(0.8, seed=1)
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), x)
    y = to_numpy(layer(x, training=True))
    per_sample = y.reshape(512, -1)
    # Each sample is entirely dropped (0) or kept and scaled by 1/0.8.
    assert np.all((per_sample == 0).all(1) | np.isclose(per_sample, 1.25).all(1))
    kept = np.isclose(per_sample[:, 0], 1.25).mean()
    assert 0.72 < kept < 0.88


def test_invalid_keep_prob():
    with pytest.raises(ValueError, match="keep_prob"):
        DropPath(0.0)
