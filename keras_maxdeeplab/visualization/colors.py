"""Colours of panoptic segments: one colour per category, distinct shades per
thing instance, all deterministic so the same result always looks the same."""

import collections
import colorsys
import hashlib

import numpy as np

# Successive multiples of the golden ratio's conjugate spread category ids
# evenly around the hue circle, so neighbouring ids get far-apart hues.
_GOLDEN_RATIO_CONJUGATE = 0.6180339887498949
# Largest per-channel offset of an instance shade from its category colour
# (panopticapi's IdGenerator jitters by the same amount): close enough to read
# as the category, far enough apart to tell instances apart.
INSTANCE_JITTER = 30


def category_color(category):
    """The colour of a category dict: its `color` when present, else a
    deterministic palette colour keyed by its `id`.

    Args:
        category: `{"id", ...}` with an optional `"color": [r, g, b]`.

    Returns:
        `(r, g, b)` ints in [0, 255].

    Example:
    >>> category_color({"id": 1, "name": "person", "color": [220, 20, 60]})
    (220, 20, 60)
    """
    if category.get("color") is not None:
        return tuple(int(c) for c in category["color"])
    hue = (category["id"] * _GOLDEN_RATIO_CONJUGATE) % 1.0
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, 0.65, 0.95))


def _instance_shade(base, category_id, rank, attempt):
    # A hash rather than a seeded RNG: its output is fixed forever, whereas
    # NumPy does not promise the same random streams across versions.
    digest = hashlib.blake2b(f"{category_id}/{rank}/{attempt}".encode(), digest_size=3).digest()
    offsets = np.frombuffer(digest, np.uint8).astype(np.int64) % (2 * INSTANCE_JITTER + 1)
    shade = np.clip(np.asarray(base) + offsets - INSTANCE_JITTER, 0, 255)
    return tuple(int(c) for c in shade)


def segment_colors(segments_info, categories=None):
    """Colour of every segment.

    Stuff segments get their category colour exactly. Thing instances of one
    category are ranked by segment id: the first gets the category colour,
    later ones distinct shades within `INSTANCE_JITTER` per channel of it, so
    the colours depend on the ids and categories only, not on list order.

    Args:
        segments_info: dicts with `id`, `category_id` and `isthing`.
        categories: COCO-style dicts `{"id", "name", "isthing", "color"?}`;
            `None` colours every category from the palette.

    Returns:
        `{segment id: (r, g, b)}`.

    Example:
    >>> segment_colors([{"id": 1, "category_id": 1, "isthing": True},
    ...                 {"id": 2, "category_id": 1, "isthing": True}], coco_categories)
    {1: (220, 20, 60), 2: (206, 39, 89)}
    """
    by_id = None if categories is None else {c["id"]: c for c in categories}
    colors = {}
    shades_taken = {}  # category id -> instance colours already given
    for segment in sorted(segments_info, key=lambda s: s["id"]):
        category_id = segment["category_id"]
        if by_id is None:
            base = category_color({"id": category_id})
        elif category_id in by_id:
            base = category_color(by_id[category_id])
        else:
            raise ValueError(
                f"Segment {segment['id']} has category_id {category_id}, "
                "which is not among the categories."
            )
        if not segment["isthing"]:
            colors[segment["id"]] = base
            continue
        taken = shades_taken.setdefault(category_id, set())
        rank = len(taken)
        color = base if rank == 0 else _instance_shade(base, category_id, rank, 0)
        attempt = 0
        while color in taken:  # rare collision (clipping near 0 or 255)
            attempt += 1
            color = _instance_shade(base, category_id, rank, attempt)
        taken.add(color)
        colors[segment["id"]] = color
    return colors


def colorize_panoptic(segmentation, segments_info, categories=None):
    """The colour map of a panoptic result (void black).

    Args:
        segmentation: `[H, W]` segment ids (0 = void).
        segments_info: dicts with `id`, `category_id` and `isthing`, one for
            every non-zero id of `segmentation`.
        categories: as in `segment_colors`.

    Returns:
        `[H, W, 3]` uint8 colours.

    Example:
    >>> colors = colorize_panoptic(result["segmentation"], result["segments_info"], coco_categories)
    """
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2 or not np.issubdtype(segmentation.dtype, np.integer):
        raise ValueError(
            f"segmentation must be an [H, W] integer map, got shape {segmentation.shape} "
            f"and dtype {segmentation.dtype}."
        )
    id_counts = collections.Counter(segment["id"] for segment in segments_info)
    duplicates = sorted(i for i, count in id_counts.items() if count > 1)
    if duplicates:
        raise ValueError(f"segments_info lists segment ids {duplicates} more than once.")
    colors = segment_colors(segments_info, categories)
    colors[0] = (0, 0, 0)
    # Index colours by unique id rather than by id value: ids may be large
    # (raw COCO ids reach 256^3), which would make a lookup table huge.
    unique_ids, inverse = np.unique(segmentation, return_inverse=True)
    missing = [i for i in unique_ids.tolist() if i not in colors]
    if missing:
        raise ValueError(f"Segment ids {missing} are in the segmentation but not in segments_info.")
    palette = np.array([colors[i] for i in unique_ids.tolist()], np.uint8)
    return palette[inverse.reshape(segmentation.shape)]
