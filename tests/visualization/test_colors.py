import numpy as np
import pytest

from keras_maxdeeplab.visualization import category_color
from keras_maxdeeplab.visualization import colorize_panoptic
from keras_maxdeeplab.visualization import segment_colors
from keras_maxdeeplab.visualization.colors import INSTANCE_JITTER
from tests.visualization.scene import CATEGORIES
from tests.visualization.scene import make_scene
from tests.visualization.scene import segment


def test_category_color_prefers_the_category_color():
    assert category_color({"id": 1, "color": [220, 20, 60]}) == (220, 20, 60)


def test_palette_colors_are_deterministic_and_distinct_per_id():
    colors = [category_color({"id": i}) for i in range(1, 201)]
    assert colors == [category_color({"id": i, "color": None}) for i in range(1, 201)]
    assert len(set(colors)) == len(colors)
    assert all(0 <= c <= 255 for color in colors for c in color)


def test_stuff_pixels_get_exactly_the_category_color():
    _, segmentation, segments_info = make_scene()
    colors = colorize_panoptic(segmentation, segments_info, CATEGORIES)
    np.testing.assert_array_equal(
        colors[segmentation == 4], np.full((np.sum(segmentation == 4), 3), [0, 200, 0])
    )


def test_category_without_color_uses_the_palette():
    _, segmentation, segments_info = make_scene()
    colors = colorize_panoptic(segmentation, segments_info, CATEGORIES)
    # The car is its category's first instance: the palette colour itself.
    assert tuple(colors[10, 50]) == category_color({"id": 3})


def test_void_is_black():
    _, segmentation, segments_info = make_scene()
    colors = colorize_panoptic(segmentation, segments_info, CATEGORIES)
    assert colors.dtype == np.uint8 and colors.shape == (40, 60, 3)
    np.testing.assert_array_equal(colors[segmentation == 0], 0)


@pytest.mark.parametrize("category_id", [1, 3, 7])
def test_thing_instances_get_distinct_shades_near_the_category_color(category_id):
    coco_like = [
        {"id": 1, "isthing": 1, "color": [220, 20, 60]},
        {"id": 3, "isthing": 1, "color": [0, 0, 142]},  # clipped at 0 on two channels
        {"id": 7, "isthing": 1, "color": [255, 255, 255]},  # clipped at 255
    ]
    segments = [{"id": i, "category_id": category_id, "isthing": True} for i in range(1, 21)]
    colors = segment_colors(segments, coco_like)
    base = np.array(next(c["color"] for c in coco_like if c["id"] == category_id))
    assert len(set(colors.values())) == 20
    assert colors[1] == tuple(base)
    distances = [np.abs(np.array(color) - base).max() for color in colors.values()]
    assert max(distances) <= INSTANCE_JITTER
    assert min(distances[1:]) > 0


def test_two_persons_differ_and_stay_near_person_color():
    _, segmentation, segments_info = make_scene()
    colors = colorize_panoptic(segmentation, segments_info, CATEGORIES)
    first, second = colors[10, 25], colors[30, 10]
    assert tuple(first) != tuple(second)
    for color in (first, second):
        assert np.abs(color.astype(int) - [220, 20, 60]).max() <= INSTANCE_JITTER


def test_colors_are_deterministic_and_independent_of_segment_order():
    _, segmentation, segments_info = make_scene()
    expected = colorize_panoptic(segmentation, segments_info, CATEGORIES)
    shuffled = [segments_info[i] for i in (3, 1, 2, 0)]
    np.testing.assert_array_equal(colorize_panoptic(segmentation, shuffled, CATEGORIES), expected)
    np.testing.assert_array_equal(
        colorize_panoptic(segmentation, segments_info, CATEGORIES), expected
    )


def test_colors_without_categories_use_the_palette():
    _, segmentation, segments_info = make_scene()
    colors = colorize_panoptic(segmentation, segments_info)
    assert tuple(colors[30, 40]) == category_color({"id": 7})


def test_unknown_segment_id_in_map_names_the_id():
    _, segmentation, segments_info = make_scene()
    segmentation = segmentation.copy()
    segmentation[0, 0] = 9
    with pytest.raises(ValueError, match=r"\[9\]"):
        colorize_panoptic(segmentation, segments_info, CATEGORIES)


def test_category_missing_from_categories_names_it():
    _, segmentation, segments_info = make_scene()
    with pytest.raises(ValueError, match="category_id 7"):
        colorize_panoptic(segmentation, segments_info, CATEGORIES[:2])


def test_duplicate_segment_ids_are_rejected():
    _, segmentation, segments_info = make_scene()
    with pytest.raises(ValueError, match=r"\[2\]"):
        colorize_panoptic(segmentation, segments_info + [segment(2, 3)], CATEGORIES)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 1), np.int32), np.zeros((4, 4), np.float32)])
def test_segmentation_must_be_a_2d_integer_map(bad):
    with pytest.raises(ValueError, match="segmentation"):
        colorize_panoptic(bad, [])
