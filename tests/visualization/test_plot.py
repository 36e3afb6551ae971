import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from keras_maxdeeplab.visualization import category_color
from keras_maxdeeplab.visualization import overlay_panoptic
from keras_maxdeeplab.visualization import plot_panoptic
from tests.visualization.scene import CATEGORIES
from tests.visualization.scene import make_scene


def _panel_images(figure):
    return [np.asarray(axes.images[0].get_array()) for axes in figure.axes]


def test_prediction_only_gives_image_and_overlay_panels():
    image, segmentation, segments_info = make_scene()
    figure = plot_panoptic(image, (segmentation, segments_info), categories=CATEGORIES)
    assert isinstance(figure, Figure)
    assert [axes.get_title() for axes in figure.axes] == ["Image", "Prediction"]
    shown_image, shown_prediction = _panel_images(figure)
    np.testing.assert_array_equal(shown_image, image)
    np.testing.assert_array_equal(
        shown_prediction, overlay_panoptic(image, segmentation, segments_info, CATEGORIES)
    )


def test_ground_truth_adds_a_third_panel_and_dicts_are_accepted():
    image, segmentation, segments_info = make_scene()
    ground_truth = segmentation.copy()
    ground_truth[ground_truth == 3] = 0  # the car is not in the ground truth
    gt_info = [s for s in segments_info if s["id"] != 3]
    prediction = {"segmentation": segmentation, "segments_info": segments_info, "extra": 1}
    figure = plot_panoptic(image, prediction, (ground_truth, gt_info), CATEGORIES, title="scene")
    assert [axes.get_title() for axes in figure.axes] == ["Image", "Prediction", "Ground truth"]
    assert figure.get_suptitle() == "scene"
    _, shown_prediction, shown_gt = _panel_images(figure)
    np.testing.assert_array_equal(
        shown_prediction, overlay_panoptic(image, segmentation, segments_info, CATEGORIES)
    )
    np.testing.assert_array_equal(
        shown_gt, overlay_panoptic(image, ground_truth, gt_info, CATEGORIES)
    )
    assert not np.array_equal(shown_prediction, shown_gt)


def test_legend_lists_the_categories_present_in_their_colors():
    image, segmentation, segments_info = make_scene()
    reordered = segments_info[::-1]  # the legend is ordered by category id
    figure = plot_panoptic(image, (segmentation, reordered), categories=CATEGORIES)
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["person", "car", "grass"]
    colors = [
        tuple(np.round(np.array(h.get_facecolor()[:3]) * 255).astype(int))
        for h in legend.legend_handles
    ]
    assert colors == [(220, 20, 60), category_color({"id": 3}), (0, 200, 0)]


def test_figure_saves_to_png(tmp_path):
    image, segmentation, segments_info = make_scene()
    figure = plot_panoptic(image, (segmentation, segments_info), categories=CATEGORIES)
    path = tmp_path / "panoptic.png"
    figure.savefig(path, dpi=50)
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.width > saved.height > 50


@pytest.mark.parametrize("prediction", [np.zeros((40, 60), np.int32), (1, 2, 3)])
def test_prediction_must_be_a_pair_or_dict(prediction):
    image, _, _ = make_scene()
    with pytest.raises(ValueError, match="prediction must be"):
        plot_panoptic(image, prediction)
