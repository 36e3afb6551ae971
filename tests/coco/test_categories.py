import json

import pytest

from keras_maxdeeplab.coco import ADE20K_PANOPTIC_CATEGORIES
from keras_maxdeeplab.coco import COCO_PANOPTIC_CATEGORIES
from keras_maxdeeplab.coco import check_categories
from keras_maxdeeplab.coco import contiguous_categories
from keras_maxdeeplab.coco import thing_class_ids
from tests.helpers import shared_path


def test_coco_categories_equal_the_official_list():
    with open(shared_path("data", "coco_panoptic_sample", "panoptic_coco_categories.json")) as f:
        official = json.load(f)
    keys = ("id", "name", "isthing", "color")
    assert [tuple(c[k] for k in keys) for c in COCO_PANOPTIC_CATEGORIES] == [
        tuple(c[k] for k in keys) for c in official
    ]


def test_contiguous_ids_follow_deeplab2():
    by_class = contiguous_categories(COCO_PANOPTIC_CATEGORIES)
    assert thing_class_ids(COCO_PANOPTIC_CATEGORIES) == tuple(range(1, 81))
    assert (by_class[1]["name"], by_class[80]["name"], by_class[81]["name"]) == (
        "person",
        "toothbrush",
        "banner",
    )
    assert by_class[133]["id"] == 200
    # Order by id, whatever the list order.
    custom = [{"id": 9, "name": "b", "isthing": 0}, {"id": 3, "name": "a", "isthing": 1}]
    assert [c["name"] for c in contiguous_categories(custom).values()] == ["a", "b"]
    assert thing_class_ids(custom) == (1,)


def test_ade20k_categories_start_at_id_0_with_things_interleaved():
    """Mask2Former's COCO-format ADE20K files number the 150 classes 0..149;
    deeplab2's class k is category k - 1 (its class 0 is void)."""
    by_class = contiguous_categories(ADE20K_PANOPTIC_CATEGORIES)
    assert [c["id"] for c in by_class.values()] == list(range(150))
    assert [by_class[k]["name"] for k in (1, 13, 150)] == ["wall", "person", "flag"]
    things = thing_class_ids(ADE20K_PANOPTIC_CATEGORIES)
    assert len(things) == 100 and things[:5] == (8, 9, 11, 13, 15)


@pytest.mark.parametrize(
    "categories, message",
    [
        ([], "empty"),
        ([{"id": 1, "name": "a"}], "lacks \\['isthing'\\]"),
        ([{"id": -1, "name": "a", "isthing": 1}], "not an integer >= 0"),
        ([{"id": True, "name": "a", "isthing": 1}], "not an integer >= 0"),
        ([{"id": "7", "name": "a", "isthing": 1}], "not an integer >= 0"),
        (
            [{"id": 2, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0}],
            "duplicate category ids \\[2\\]",
        ),
    ],
)
def test_bad_categories_are_rejected(categories, message):
    with pytest.raises(ValueError, match=message):
        check_categories(categories, "my.json")
