"""A small synthetic panoptic scene shared by the visualisation tests."""

import numpy as np

# Small custom categories: one thing with a colour, one without, one stuff.
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 7, "name": "grass", "isthing": 0, "color": [0, 200, 0]},
]


def segment(segment_id, category_id, score=None):
    category = {c["id"]: c for c in CATEGORIES}[category_id]
    info = {
        "id": segment_id,
        "category_id": category_id,
        "label": category["name"],
        "isthing": bool(category["isthing"]),
    }
    if score is not None:
        info["score"] = score
    return info


def make_scene():
    """A 40x60 image: grass (stuff) at the bottom, two persons, one car, void top-left."""
    segmentation = np.zeros((40, 60), np.int32)
    segmentation[20:, :] = 4  # grass
    segmentation[2:18, 20:36] = 1  # person
    segmentation[22:38, 2:18] = 2  # person
    segmentation[2:18, 40:58] = 3  # car
    segments_info = [
        segment(1, 1, 0.9),
        segment(2, 1, 0.8),
        segment(3, 3, 0.7),
        segment(4, 7, 0.95),
    ]
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    return image, segmentation, segments_info
