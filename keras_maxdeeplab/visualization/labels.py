"""Segment labels (class name and score) written onto an image."""

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont
from scipy import ndimage

# Candidate anchor pixels lie at least this fraction of the segment's largest
# inner distance from its edge, so text does not sit on a thin sliver.
_MIN_DEPTH_FRACTION = 0.5


def label_anchor(mask):
    """A point inside a segment to centre its label on: the segment pixel
    closest to the centroid among those well inside the segment (so that a
    ring or a crescent, whose centroid lies outside, still gets a point on it).

    Args:
        mask: `[H, W]` bool, with at least one True pixel.

    Returns:
        `(row, col)` ints of a True pixel of `mask`.

    Example:
    >>> label_anchor(segmentation == segment["id"])
    (120, 310)
    """
    rows, cols = np.nonzero(mask)
    top, left = rows.min(), cols.min()
    # Distance to the nearest outside pixel, in the segment's box padded by one
    # so that the image border counts as outside too.
    box = np.pad(mask[top : rows.max() + 1, left : cols.max() + 1], 1)
    depth = ndimage.distance_transform_edt(box)[1:-1, 1:-1][rows - top, cols - left]
    deep = depth >= _MIN_DEPTH_FRACTION * depth.max()
    rows, cols = rows[deep], cols[deep]
    nearest = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
    return int(rows[nearest]), int(cols[nearest])


def label_text(segment):
    """`"name"`, `"name 0.93"` with a score, plus `" (crowd)"` for crowd ground truth."""
    text = str(segment["label"])
    if segment.get("score") is not None:
        text += f" {segment['score']:.2f}"
    if segment.get("iscrowd"):
        text += " (crowd)"
    return text


def draw_segment_labels(image, segmentation, segments_info):
    """Writes each segment's `label_text` centred on its `label_anchor`, in
    white outlined in black so it reads on any colour.

    Args:
        image: `[H, W, 3]` uint8.
        segmentation: `[H, W]` segment ids (0 = void).
        segments_info: dicts with `id` and `label` (optional `score`, `iscrowd`).

    Returns:
        a new `[H, W, 3]` uint8 image.

    Example:
    >>> labelled = draw_segment_labels(overlay, result["segmentation"], result["segments_info"])
    """
    height, width = segmentation.shape
    canvas = Image.fromarray(np.asarray(image, np.uint8))
    draw = ImageDraw.Draw(canvas)
    # Pillow's bundled font, so no font file is needed; sized to stay legible
    # on large images.
    font = ImageFont.load_default(size=max(10, min(height, width) // 40))
    for segment in segments_info:
        mask = segmentation == segment["id"]
        if not mask.any():
            continue
        row, col = label_anchor(mask)
        text = label_text(segment)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=1)
        # Centre the text on the anchor, then shift it back inside the image.
        x = min(max(col - (left + right) // 2, -left), width - right)
        y = min(max(row - (top + bottom) // 2, -top), height - bottom)
        draw.text((x, y), text, fill="white", font=font, stroke_width=1, stroke_fill="black")
    return np.asarray(canvas)
