import numpy as np
import pytest
import tensorflow as tf

from keras_maxdeeplab import MaXDeepLabImageConverter
from keras_maxdeeplab.data.augmentation import preprocess_for_evaluation
from keras_maxdeeplab.data.augmentation import preprocess_for_training
from keras_maxdeeplab.data.augmentation import random_scale
from keras_maxdeeplab.data.augmentation import resize_to_range_size
from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import resized_size


def _coordinate_scene(height=150, width=200):
    """Image channels R, G = row, column; label = 1 + row * 1000 + column."""
    rows, cols = np.mgrid[:height, :width]
    image = np.stack([rows, cols, np.full_like(rows, 50)], -1).astype(np.float32)
    return image, (1 + rows * 1000 + cols).astype(np.int32)


@pytest.mark.parametrize("seed", range(12))
def test_training_augmentation_keeps_image_and_label_aligned(seed):
    image, label = _coordinate_scene()
    out_image, out_label = preprocess_for_training(image, label, (129, 129), tf.constant([7, seed]))
    out_image, out_label = out_image.numpy(), out_label.numpy()
    padded = out_label == 0
    # Padding: void label under the mean pixel, exactly.
    assert (out_image[padded] == 127.5).all()
    assert set(np.unique(out_label[~padded])) <= set(np.unique(label))  # no mixed values
    source_row, source_col = (out_label[~padded] - 1) // 1000, (out_label[~padded] - 1) % 1000
    # Bilinear reproduces the fractional source coordinates exactly; nearest
    # rounds them in each of the two resizes (200 -> 129 wide, then the random
    # scale): at most 0.5 source pixels of 199 / 128 each, plus 0.5.
    tolerance = 0.5 * (1 + 199 / 128) + 1e-3
    assert np.abs(out_image[~padded][:, 0] - source_row).max() <= tolerance
    assert np.abs(out_image[~padded][:, 1] - source_col).max() <= tolerance


def test_training_augmentation_flips_half_the_time():
    image, label = _coordinate_scene()
    flipped = 0
    for seed in range(40):
        _, out = preprocess_for_training(image, label, (129, 129), tf.constant([1, seed]))
        out = out.numpy()
        rows = out[(out != 0).any(axis=1)]
        columns = (rows[0][rows[0] != 0] - 1) % 1000
        flipped += columns[0] > columns[-1]
    assert 8 <= flipped <= 32  # p = 0.5 over 40 draws


def test_random_scale_draws_deeplab2_steps():
    drawn = {float(random_scale(tf.constant([0, i]))) for i in range(400)}
    expected = np.linspace(0.5, 1.5, 11, dtype=np.float32).tolist()
    assert sorted(drawn) == pytest.approx(expected)
    assert float(random_scale(tf.constant([0, 1]), 1.0, 1.0)) == 1.0


@pytest.mark.parametrize("size", [(360, 640), (640, 360), (480, 481), (129, 129), (50, 30)])
def test_resize_to_range_matches_converter(size):
    got = [int(v) for v in resize_to_range_size(size[0], size[1], 641, 641)]
    assert tuple(got) == resized_size(size[0], size[1], 641, 641)


def test_evaluation_preprocessing_equals_image_converter():
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, (90, 140, 3)).astype(np.uint8)
    label = rng.randint(0, 5, (90, 140)).astype(np.int32)
    ours, out_label = preprocess_for_evaluation(image, label, (129, 129))
    converter = MaXDeepLabImageConverter(image_size=(129, 129))
    expected = np.asarray(converter(image))
    np.testing.assert_allclose(ours.numpy() / 127.5 - 1.0, expected, atol=1e-6)
    # The converter leaves an already-converted image unchanged but for the normalisation.
    np.testing.assert_allclose(np.asarray(converter(ours.numpy())), expected, atol=1e-6)
    height, width = resized_size(90, 140, 129, 129)
    assert (height, width) == (83, 129)
    assert (out_label.numpy()[height:] == 0).all() and out_label.numpy()[height - 1].any()
