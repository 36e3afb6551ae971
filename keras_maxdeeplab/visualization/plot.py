"""Side-by-side matplotlib figures of an image, its prediction and ground truth."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from keras_maxdeeplab.visualization.colors import category_color
from keras_maxdeeplab.visualization.overlay import overlay_panoptic

# Height of each panel in inches; widths follow the image aspect ratio.
_PANEL_HEIGHT = 4.0


def _as_pair(result, name):
    if isinstance(result, dict):
        return result["segmentation"], result["segments_info"]
    if isinstance(result, (tuple, list)) and len(result) == 2:
        return result
    raise ValueError(
        f"{name} must be a (segmentation, segments_info) pair or a dict with those keys, "
        f"got {type(result).__name__}."
    )


def _legend_handles(segments_infos, categories):
    by_id = None if categories is None else {c["id"]: c for c in categories}
    names = {}
    for segments_info in segments_infos:
        for segment in segments_info:
            names.setdefault(segment["category_id"], segment["label"])
    handles = []
    for category_id in sorted(names):
        category = {"id": category_id} if by_id is None else by_id[category_id]
        color = np.array(category_color(category)) / 255.0
        handles.append(Patch(facecolor=color, edgecolor="black", label=names[category_id]))
    return handles


def plot_panoptic(image, prediction, ground_truth=None, categories=None, title=None):
    """A figure with panels image | prediction overlay | ground-truth overlay
    (when given), and a legend of the categories present.

    The figure is drawn with the Agg canvas and never touches pyplot, so it
    works headless and leaves the user's backend alone; save it with
    `fig.savefig(path)`.

    Args:
        image: `[H, W, 3]` uint8 RGB.
        prediction, ground_truth: `(segmentation, segments_info)` or a dict
            with those keys (a `post_process_panoptic_segmentation` result;
            for COCO ground truth see `coco_panoptic_to_segments`).
        categories: COCO-style dicts (`id`, optional `color`).
        title: figure title.

    Returns:
        a `matplotlib.figure.Figure` with 2 or 3 axes, whose images are the
        image and the `overlay_panoptic` of each result.

    Example:
    >>> fig = plot_panoptic(image, results[0], (gt_segmentation, gt_segments),
    ...                     coco_categories, title="000000439180")
    >>> fig.savefig("panoptic.png", dpi=150)
    """
    panels = [("Image", np.asarray(image))]
    results = [("Prediction", _as_pair(prediction, "prediction"))]
    if ground_truth is not None:
        results.append(("Ground truth", _as_pair(ground_truth, "ground_truth")))
    for name, (segmentation, segments_info) in results:
        panels.append((name, overlay_panoptic(image, segmentation, segments_info, categories)))

    height, width = panels[0][1].shape[:2]
    figure = Figure(
        figsize=(len(panels) * _PANEL_HEIGHT * width / height, _PANEL_HEIGHT + 1.0),
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    for axes, (name, picture) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        axes.imshow(picture)
        axes.set_title(name)
        axes.set_axis_off()
    if title is not None:
        figure.suptitle(title)
    handles = _legend_handles([info for _, (_, info) in results], categories)
    if handles:
        figure.legend(
            handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize="small"
        )
    return figure
