"""Panoptic results blended over their image."""

import numpy as np

from keras_maxdeeplab.visualization.colors import colorize_panoptic
from keras_maxdeeplab.visualization.labels import draw_segment_labels

BOUNDARY_COLOR = (255, 255, 255)


def segment_boundaries(segmentation):
    """Pixels whose segment id differs from one of their 4 neighbours.

    Both sides of a change are marked (void counts as a segment), giving
    2-pixel lines that stay visible after resizing.

    Args:
        segmentation: `[H, W]` segment ids.

    Returns:
        `[H, W]` bool.

    Example:
    >>> segment_boundaries(np.array([[1, 1, 2]]))
    array([[False,  True,  True]])
    """
    segmentation = np.asarray(segmentation)
    boundaries = np.zeros(segmentation.shape, bool)
    vertical = segmentation[1:] != segmentation[:-1]
    horizontal = segmentation[:, 1:] != segmentation[:, :-1]
    boundaries[1:] |= vertical
    boundaries[:-1] |= vertical
    boundaries[:, 1:] |= horizontal
    boundaries[:, :-1] |= horizontal
    return boundaries


def _check_image(image, segmentation):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] RGB, got shape {image.shape}.")
    if image.dtype != np.uint8:
        # Float images may be in [0, 1] or [0, 255]; guessing would silently
        # render a black or washed-out overlay.
        raise ValueError(f"image must be uint8 in [0, 255], got dtype {image.dtype}.")
    if image.shape[:2] != np.shape(segmentation):
        raise ValueError(
            f"image size {image.shape[:2]} differs from segmentation size {np.shape(segmentation)}."
        )
    return image


def overlay_panoptic(
    image,
    segmentation,
    segments_info,
    categories=None,
    alpha=0.5,
    draw_boundaries=True,
    draw_labels=False,
):
    """Blends the colours of a panoptic result over its image.

    Segment pixels become `(1 - alpha) * image + alpha * colour` (colours from
    `segment_colors`), void pixels keep the image; then optionally white
    boundaries between segments and each segment's name and score.

    Args:
        image: `[H, W, 3]` uint8 RGB.
        segmentation: `[H, W]` segment ids (0 = void).
        segments_info: dicts with `id`, `category_id`, `isthing` and `label`
            (optional `score`, `iscrowd`), one for every non-zero id.
        categories: COCO-style dicts (`id`, optional `color`); `None` colours
            categories from the palette.
        alpha: colour weight in [0, 1].
        draw_boundaries: draw `segment_boundaries` in white.
        draw_labels: write `label_text` of each segment inside it.

    Returns:
        `[H, W, 3]` uint8.

    Example:
    >>> result = model.predict_panoptic(image)[0]
    >>> overlay = overlay_panoptic(image, result["segmentation"], result["segments_info"],
    ...                            categories, draw_labels=True)
    >>> PIL.Image.fromarray(overlay).save("overlay.png")
    """
    image = _check_image(image, segmentation)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    segmentation = np.asarray(segmentation)
    colors = colorize_panoptic(segmentation, segments_info, categories)
    segmented = segmentation != 0
    blended = image.astype(np.float64)
    blended[segmented] = (1.0 - alpha) * blended[segmented] + alpha * colors[segmented]
    overlay = np.rint(blended).astype(np.uint8)
    if draw_boundaries:
        overlay[segment_boundaries(segmentation)] = BOUNDARY_COLOR
    if draw_labels:
        overlay = draw_segment_labels(overlay, segmentation, segments_info)
    return overlay
