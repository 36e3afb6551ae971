import numpy as np
import pytest
from PIL import Image

from keras_maxdeeplab.image_files import list_images
from keras_maxdeeplab.image_files import read_image
from keras_maxdeeplab.image_files import read_images


def test_read_image_gives_rgb_uint8_of_any_mode(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    image = read_image(str(tmp_path / "gray.png"))
    assert image.dtype == np.uint8 and image.shape == (3, 4, 3)
    np.testing.assert_array_equal(image[..., 1], gray)


def test_list_and_read_images_expand_folders_in_order(tmp_path):
    for name, value in (("b.png", 2), ("a.jpg", 1)):
        Image.fromarray(np.full((2, 2, 3), value, np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    files = list_images([str(tmp_path)])
    assert [f.rsplit("/", 1)[1] for f in files] == ["a.jpg", "b.png"]
    named = list(read_images(files))
    assert [name for name, _ in named] == ["a.jpg", "b.png"]
    assert named[1][1][0, 0].tolist() == [2, 2, 2]


def test_unreadable_and_missing_files_are_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="Cannot read image .*broken.png"):
        read_image(str(tmp_path / "broken.png"))
    with pytest.raises(ValueError, match="missing.jpg: no such image file or folder"):
        list_images([str(tmp_path / "missing.jpg")])
    (tmp_path / "broken.png").unlink()
    with pytest.raises(ValueError, match="No images"):
        list_images([str(tmp_path)])
