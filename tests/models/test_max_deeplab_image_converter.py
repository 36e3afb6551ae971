import numpy as np
import pytest
import tensorflow as tf

from keras_maxdeeplab import MaXDeepLabImageConverter
from keras_maxdeeplab import MaXDeepLabPreprocessor
from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import resized_size
from tests.helpers import shared_path
from tests.helpers import to_numpy


def test_resized_size():
    # Values of deeplab2's resize_to_range(min=max=crop), run under TF 2.21. Its float32
    # two-step floor can overshoot the short side by one pixel (480 -> 481).
    assert resized_size(360, 640, 65, 65) == (36, 65)
    assert resized_size(360, 640, 129, 129) == (72, 129)
    assert resized_size(480, 640, 641, 641) == (481, 641)
    assert resized_size(640, 427, 1025, 1025) == (1025, 684)
    assert resized_size(333, 500, 641, 641) == (427, 641)


@pytest.mark.parametrize("crop", [65, 129])
def test_matches_deeplab2_preprocessing(crop):
    io = np.load(shared_path("reference", "max_deeplab_tiny", "io.npz"))
    converter = MaXDeepLabImageConverter(image_size=(crop, crop))
    got = to_numpy(converter(io["image/decoded_uint8"]))
    expected = io[f"s{crop}/input/image_normalized"][0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Padding (bottom rows) is exactly the mean pixel, i.e. 0 after normalisation.
    assert np.all(got[io[f"s{crop}/input/resized_image"].shape[1] :] == 0)


def test_batched_and_preprocessor():
    images = np.random.RandomState(0).randint(0, 256, (2, 30, 20, 3)).astype("uint8")
    converter = MaXDeepLabImageConverter(image_size=(65, 65))
    batched = to_numpy(converter(images))
    assert batched.shape == (2, 65, 65, 3)
    np.testing.assert_allclose(batched[1], to_numpy(converter(images[1])), atol=1e-6)
    assert batched.min() >= -1 and batched.max() <= 1
    preprocessor = MaXDeepLabPreprocessor(image_converter=converter)
    np.testing.assert_allclose(to_numpy(preprocessor(images)), batched, atol=1e-6)


def test_bad_input():
    converter = MaXDeepLabImageConverter(image_size=(65, 65))
    with pytest.raises(ValueError, match="RGB"):
        converter(np.zeros((10, 10), "uint8"))
    with pytest.raises(ValueError, match="RGB"):
        converter(np.zeros((10, 10, 4), "uint8"))


def test_tf_data_path_matches():
    import tensorflow as tf

    io = np.load(shared_path("reference", "max_deeplab_tiny", "io.npz"))
    converter = MaXDeepLabImageConverter(image_size=(129, 129))
    dataset = tf.data.Dataset.from_tensors(io["image/decoded_uint8"]).map(converter)
    (got,) = list(dataset.as_numpy_iterator())
    np.testing.assert_allclose(got, io["s129/input/image_normalized"][0], atol=1e-5)


def test_restore_original_size_matches_deeplab2_evaluator():
    crop = np.arange(129 * 129).reshape(129, 129)
    restored = MaXDeepLabImageConverter(image_size=(129, 129)).restore_original_size(
        crop, (360, 640)
    )
    # deeplab2: crop the valid 72x129 region, TF1 align-corners nearest resize.
    expected = tf.compat.v1.image.resize_nearest_neighbor(
        crop[None, :72, :129, None], (360, 640), align_corners=True
    ).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(restored, expected)
