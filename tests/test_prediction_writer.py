import json

import numpy as np
import pytest
from PIL import Image

from keras_maxdeeplab.coco import rgb2id
from keras_maxdeeplab.prediction_writer import png_names
from keras_maxdeeplab.prediction_writer import write_predictions

CATEGORIES = [{"id": 4, "name": "sky", "isthing": 0}, {"id": 9, "name": "cat", "isthing": 1}]


class HalfSkyModel:
    """Stands in for MaXDeepLab: the top half is sky, the rest a cat."""

    categories = CATEGORIES

    def predict_panoptic(self, image):
        segmentation = np.full(image.shape[:2], 2, np.int32)
        segmentation[: image.shape[0] // 2] = 1
        area = int((segmentation == 1).sum())
        segments_info = [
            {"id": 1, "category_id": 4, "label": "sky", "isthing": False, "score": 0.9,
             "area": area},
            {"id": 2, "category_id": 9, "label": "cat", "isthing": True, "score": 0.8,
             "area": segmentation.size - area},
        ]
        return [{"segmentation": segmentation, "segments_info": segments_info}]


def test_writes_coco_panoptic_files_and_overlays(tmp_path):
    images = [("one.jpg", np.zeros((4, 6, 3), np.uint8)), ("two.jpg", np.zeros((2, 2, 3), np.uint8))]
    report = write_predictions(HalfSkyModel(), images, str(tmp_path), image_ids=[7, 8])
    written = json.load(open(report["path"]))
    assert [image["id"] for image in written["images"]] == [7, 8]
    assert written["categories"] == CATEGORIES
    first = written["annotations"][0]
    assert first["file_name"] == "one.png"
    assert [(s["category_id"], s["area"], s["bbox"]) for s in first["segments_info"]] == [
        (4, 12, [0, 0, 6, 2]),
        (9, 12, [0, 2, 6, 2]),
    ]
    ids = rgb2id(np.asarray(Image.open(tmp_path / "panoptic" / "one.png")))
    np.testing.assert_array_equal(ids[:2], 1)
    np.testing.assert_array_equal(ids[2:], 2)
    overlay = np.asarray(Image.open(tmp_path / "overlays" / "two.png"))
    assert overlay.shape == (2, 2, 3)
    assert report["written"] == 2 and report["skipped"] == []
    assert report["segments"] == [("one.jpg", ["sky", "cat"]), ("two.jpg", ["sky", "cat"])]


def test_png_names_are_distinct():
    assert png_names(["x/a.jpg", "y/a.jpg", "b.jpg"]) == ["x__a_jpg.png", "y__a_jpg.png", "b.png"]
    assert png_names(["a.jpg", "a.png", "c.jpeg"]) == ["a_jpg.png", "a_png.png", "c.png"]
    with pytest.raises(ValueError, match="distinct output names"):
        png_names(["a.jpg", "a.png", "a_jpg.png"])
