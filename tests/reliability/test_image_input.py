"""Issue items: degenerate, non-finite, 16-bit, 0..1-float, grayscale and path
inputs to predict_panoptic each got a crash, a garbage result or a misleading
message; now each gets a plain ValueError saying what was wrong."""

import numpy as np
import pytest

from keras_maxdeeplab.models.max_deeplab.input_checks import check_raw_images

CROP = (65, 65)


def _image(shape=(48, 64, 3), dtype="uint8", value=100):
    return np.full(shape, value, dtype=dtype)


@pytest.mark.parametrize(
    "images, message",
    [
        (_image((1, 5000, 3)), r"image 0 \(1x5000\) is too elongated for a 65x65 model"),
        (_image((0, 0, 3)), r"image 0 is empty \(0x0 pixels\)"),
        (_image((48, 64)), r"got shape \(48, 64\)\. A grayscale image: np\.repeat"),
        (_image((48, 64, 4)), r"got shape \(48, 64, 4\)"),
        (_image(dtype="uint16", value=40000), r"has uint16 values in \[40000, 40000\].*16-bit"),
        (_image(dtype="int64", value=-3), r"has int64 values in \[-3, -3\]"),
        (_image(dtype="float32", value=0.5), "looks like a 0..1 image.*multiply it by 255"),
        (_image(dtype="float32", value=300.0), r"float values in \[300, 300\]"),
        (_image(dtype="bool", value=True), "has dtype bool"),
        ("photo.jpg", "not a path"),
        ([], "got no images"),
        (np.zeros((2, 3)), r"got shape \(2, 3\)"),
    ],
)
def test_bad_images_are_named(images, message):
    with pytest.raises(ValueError, match=message) as error:
        check_raw_images(images, CROP)
    assert "\x1b" not in str(error.value) and len(str(error.value)) < 400


def test_one_nan_pixel_is_refused_not_blanked():
    image = _image(dtype="float32", value=120.0)
    image[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="image 1 has NaN or infinite pixel values"):
        check_raw_images([_image(), image], CROP)


def test_good_images_pass_unchanged():
    batch = np.stack([_image(), _image(value=7)])
    out = check_raw_images(batch, CROP)
    assert len(out) == 2 and all(o.shape == (48, 64, 3) for o in out)
    np.testing.assert_array_equal(out[1], batch[1])
    # Sizes may differ in a list; 0..255 floats, an all-black float image and long thin images pass.
    mixed = [_image((30, 40, 3)), _image(dtype="float32", value=200.0), _image(dtype="float32", value=0.0)]
    mixed += [_image(dtype="int64", value=255)]  # e.g. np.random.randint's default dtype
    assert [o.shape for o in check_raw_images(mixed + [_image((10, 600, 3))], CROP)][0] == (30, 40, 3)


def test_predict_panoptic_refuses_them_before_any_work():
    from keras_maxdeeplab import MaXDeepLab

    model = MaXDeepLab.from_preset("max_deeplab_tiny_synthetic")
    with pytest.raises(ValueError, match=r"image 0 \(1x5000\) is too elongated for a 129x129"):
        model.predict_panoptic(np.zeros((1, 5000, 3), np.uint8))
    nan = np.full((20, 20, 3), 100.0, np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.predict_panoptic(nan)
    (result,) = model.predict_panoptic(np.zeros((20, 30, 3), np.uint8))
    assert result["segmentation"].shape == (20, 30)

