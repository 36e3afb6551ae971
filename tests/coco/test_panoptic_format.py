import json

import numpy as np
import pytest
from PIL import Image

from keras_maxdeeplab.coco import id2rgb
from keras_maxdeeplab.coco import rgb2id
from keras_maxdeeplab.coco import coco_panoptic_to_segments
from keras_maxdeeplab.coco import save_coco_panoptic
from keras_maxdeeplab.evaluation import pq_compute
from keras_maxdeeplab.visualization import colorize_panoptic
from keras_maxdeeplab.visualization import overlay_panoptic
from tests.helpers import shared_path
from tests.visualization.scene import CATEGORIES

# COCO ids are arbitrary R + 256 G + 256^2 B values.
PERSON, CROWD, GRASS, UNLISTED = 3937500, 2035955, 8225406, 777


def _coco_ground_truth():
    ids = np.zeros((6, 8), np.int64)
    ids[:3, :4] = GRASS
    ids[3:, :4] = PERSON
    ids[:, 5:] = CROWD
    segments_info = [
        {"id": GRASS, "category_id": 7, "iscrowd": 0, "area": 12},
        {"id": PERSON, "category_id": 1, "iscrowd": 0, "area": 12},
        {"id": CROWD, "category_id": 1, "iscrowd": 1, "area": 18},
    ]
    return ids, segments_info


def test_conversion_renumbers_by_coco_id_and_keeps_crowd():
    ids, segments_info = _coco_ground_truth()
    segmentation, segments = coco_panoptic_to_segments(id2rgb(ids), segments_info, CATEGORIES)
    expected = np.zeros((6, 8), np.int32)
    expected[:3, :4] = 3  # GRASS is the largest COCO id
    expected[3:, :4] = 2
    expected[:, 5:] = 1
    np.testing.assert_array_equal(segmentation, expected)
    assert segmentation.dtype == np.int32
    assert segments == [
        {
            "id": 1,
            "label_id": 1,
            "category_id": 1,
            "label": "person",
            "isthing": True,
            "iscrowd": True,
            "area": 18,
        },
        {
            "id": 2,
            "label_id": 1,
            "category_id": 1,
            "label": "person",
            "isthing": True,
            "iscrowd": False,
            "area": 12,
        },
        {
            "id": 3,
            "label_id": 3,
            "category_id": 7,
            "label": "grass",
            "isthing": False,
            "iscrowd": False,
            "area": 12,
        },
    ]


def test_converted_ground_truth_is_drawn_like_a_prediction():
    ids, segments_info = _coco_ground_truth()
    segmentation, segments = coco_panoptic_to_segments(ids, segments_info, CATEGORIES)
    colors = colorize_panoptic(segmentation, segments, CATEGORIES)
    np.testing.assert_array_equal(colors[0, 0], [0, 200, 0])
    assert tuple(colors[0, 6]) != tuple(colors[5, 0])  # crowd and person: two shades
    np.testing.assert_array_equal(colors[:, 4], 0)  # void


def test_png_id_missing_from_json_is_named():
    ids, segments_info = _coco_ground_truth()
    ids[0, 4] = UNLISTED
    with pytest.raises(ValueError, match=r"\[777\]"):
        coco_panoptic_to_segments(ids, segments_info, CATEGORIES)


def test_unknown_category_is_named():
    ids, segments_info = _coco_ground_truth()
    segments_info[0]["category_id"] = 99
    with pytest.raises(ValueError, match="category_id 99"):
        coco_panoptic_to_segments(ids, segments_info, CATEGORIES)


def test_coco_sample_ground_truth_round_trips_categories():
    root = shared_path("data", "coco_panoptic_sample")
    with open(f"{root}/panoptic_examples.json") as f:
        data = json.load(f)
    with open(f"{root}/panoptic_coco_categories.json") as f:
        categories = json.load(f)
    annotation = next(a for a in data["annotations"] if a["file_name"] == "000000439180.png")
    with Image.open(f"{root}/panoptic_examples/000000439180.png") as png:
        png = np.asarray(png.convert("RGB"))
    with Image.open(f"{root}/input_images/000000439180.jpg") as image:
        image = np.asarray(image.convert("RGB"))
    segmentation, segments = coco_panoptic_to_segments(png, annotation["segments_info"], categories)
    coco_ids = rgb2id(png)
    category_of_coco_id = {s["id"]: s["category_id"] for s in annotation["segments_info"]}
    category_of_segment = {s["id"]: s["category_id"] for s in segments}
    for coco_id, category_id in category_of_coco_id.items():
        converted = np.unique(segmentation[coco_ids == coco_id])
        assert converted.size == 1 and category_of_segment[int(converted[0])] == category_id
    np.testing.assert_array_equal(segmentation == 0, coco_ids == 0)
    crowd = sum(s["iscrowd"] for s in annotation["segments_info"])
    assert crowd > 0 and sum(s["iscrowd"] for s in segments) == crowd
    overlay = overlay_panoptic(image, segmentation, segments, categories, draw_labels=True)
    assert overlay.shape == image.shape


def test_save_coco_panoptic_round_trip(tmp_path):
    """Results written as COCO panoptic files read back to the same segments,
    and score PQ 1.0 against themselves with the official rules."""
    categories = [{"id": 7, "name": "road", "isthing": 0}, {"id": 3, "name": "car", "isthing": 1}]
    segmentation = np.zeros((6, 8), np.int32)
    segmentation[:3] = 1
    segmentation[4:, 2:5] = 2
    segments_info = [
        {"id": 1, "category_id": 7, "label": "road", "isthing": False, "score": 0.9, "area": 24},
        {"id": 2, "category_id": 3, "label": "car", "isthing": True, "score": 0.8, "area": 6},
    ]
    result = {"segmentation": segmentation, "segments_info": segments_info}
    path = save_coco_panoptic([result, result], ["a.jpg", "b.jpg"], str(tmp_path), categories)
    written = json.load(open(path))
    assert [i["file_name"] for i in written["images"]] == ["a.jpg", "b.jpg"]
    assert written["categories"] == categories
    annotation = written["annotations"][1]
    assert annotation["file_name"] == "b.png" and annotation["image_id"] == 1
    assert [(s["category_id"], s["area"], s["bbox"]) for s in annotation["segments_info"]] == [
        (7, 24, [0, 0, 8, 3]),
        (3, 6, [2, 4, 3, 2]),
    ]
    ids = rgb2id(np.asarray(Image.open(tmp_path / "panoptic" / "b.png")))
    np.testing.assert_array_equal(ids, segmentation)
    results = pq_compute(path, path, str(tmp_path / "panoptic"), str(tmp_path / "panoptic"))
    assert results["All"]["pq"] == 1.0 and results["All"]["n"] == 2
    with pytest.raises(ValueError, match="1 file names for 2 results"):
        save_coco_panoptic([result, result], ["a.jpg"], str(tmp_path), categories)
