import numpy as np
import pytest

from keras_maxdeeplab.visualization import colorize_panoptic
from keras_maxdeeplab.visualization import overlay_panoptic
from keras_maxdeeplab.visualization import segment_boundaries
from keras_maxdeeplab.visualization.overlay import BOUNDARY_COLOR
from tests.visualization.scene import CATEGORIES
from tests.visualization.scene import make_scene


def test_segment_boundaries_mark_both_sides_of_each_change():
    segmentation = np.array(
        [
            [1, 1, 1, 2],
            [1, 1, 1, 2],
            [0, 0, 1, 2],
            [0, 0, 1, 2],
        ]
    )
    expected = np.array(
        [
            [0, 0, 1, 1],
            [1, 1, 1, 1],
            [1, 1, 1, 1],
            [0, 1, 1, 1],
        ],
        bool,
    )
    np.testing.assert_array_equal(segment_boundaries(segmentation), expected)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_overlay_blends_segments_and_keeps_void(alpha):
    image, segmentation, segments_info = make_scene()
    overlay = overlay_panoptic(image, segmentation, segments_info, CATEGORIES, alpha=alpha)
    colors = colorize_panoptic(segmentation, segments_info, CATEGORIES).astype(np.float64)
    interior = ~segment_boundaries(segmentation)
    segmented = interior & (segmentation != 0)
    void = interior & (segmentation == 0)
    assert segmented.sum() > 1000 and void.sum() > 100
    expected = np.rint((1 - alpha) * image + alpha * colors).astype(np.uint8)
    assert overlay.dtype == np.uint8 and overlay.shape == image.shape
    np.testing.assert_array_equal(overlay[segmented], expected[segmented])
    np.testing.assert_array_equal(overlay[void], image[void])


def test_overlay_without_boundaries_keeps_every_void_pixel():
    image, segmentation, segments_info = make_scene()
    overlay = overlay_panoptic(
        image, segmentation, segments_info, CATEGORIES, draw_boundaries=False
    )
    np.testing.assert_array_equal(overlay[segmentation == 0], image[segmentation == 0])
    assert not np.all(overlay[segment_boundaries(segmentation)] == BOUNDARY_COLOR)


def test_boundaries_drawn_where_labels_change_and_not_inside():
    image, segmentation, segments_info = make_scene()
    overlay = overlay_panoptic(image, segmentation, segments_info, CATEGORIES)
    # Person 1 spans rows 2..17, cols 20..35 next to void: its outline is drawn.
    assert np.all(overlay[2, 20:36] == BOUNDARY_COLOR)
    assert np.all(overlay[1, 20:36] == BOUNDARY_COLOR)  # void side
    assert np.all(overlay[2:18, 35] == BOUNDARY_COLOR)
    # The grass interior (rows 20..39, cols 30..39) is a single segment.
    assert not np.any(np.all(overlay[22:39, 30:39] == BOUNDARY_COLOR, axis=-1))
    assert not np.any(np.all(overlay[4:16, 22:34] == BOUNDARY_COLOR, axis=-1))


def test_labels_change_pixels_only_near_segment_centres():
    image = np.full((80, 160, 3), 100, np.uint8)
    segmentation = np.zeros((80, 160), np.int32)
    segmentation[10:70, 20:140] = 1
    segments_info = [{"id": 1, "category_id": 7, "label": "grass", "isthing": False, "score": 0.5}]
    plain = overlay_panoptic(image, segmentation, segments_info, CATEGORIES)
    labelled = overlay_panoptic(image, segmentation, segments_info, CATEGORIES, draw_labels=True)
    rows, cols = np.nonzero(np.any(plain != labelled, axis=-1))
    assert rows.size > 20
    # Centroid (39.5, 79.5); "grass 0.50" in the default font fits in 30 x 80 pixels.
    assert np.abs(rows - 39.5).max() <= 15
    assert np.abs(cols - 79.5).max() <= 40
    # Anti-aliased white text outlined in black, on green (50, 150, 50).
    changed = labelled[rows, cols]
    assert np.any(changed.min(axis=-1) > 200) and np.any(changed.max(axis=-1) < 40)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((40, 60), np.uint8), r"\[H, W, 3\]"),
        (np.zeros((40, 60, 4), np.uint8), r"\[H, W, 3\]"),
        (np.zeros((40, 60, 3), np.float32), "uint8"),
        (np.zeros((41, 60, 3), np.uint8), r"\(41, 60\) differs from segmentation size \(40, 60\)"),
    ],
)
def test_bad_image_is_rejected(image, message):
    _, segmentation, segments_info = make_scene()
    with pytest.raises(ValueError, match=message):
        overlay_panoptic(image, segmentation, segments_info, CATEGORIES)


def test_segment_missing_from_segments_info_names_the_id():
    image, segmentation, segments_info = make_scene()
    with pytest.raises(ValueError, match=r"Segment ids \[3\]"):
        overlay_panoptic(image, segmentation, [s for s in segments_info if s["id"] != 3])


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_out_of_range_is_rejected(alpha):
    image, segmentation, segments_info = make_scene()
    with pytest.raises(ValueError, match="alpha"):
        overlay_panoptic(image, segmentation, segments_info, alpha=alpha)
