"""COCO panoptic ground truth in the form the drawing functions take."""

import numpy as np

from keras_maxdeeplab.evaluation import rgb2id
from keras_maxdeeplab.data.categories import contiguous_categories


def coco_panoptic_to_segments(panoptic, segments_info, categories):
    """COCO panoptic ground truth -> `(segmentation, segments_info)` like a
    prediction's, so it can be drawn by `overlay_panoptic` / `plot_panoptic`.

    Segments are renumbered 1..K in order of their COCO id. Crowd segments
    are kept (and drawn): their `isthing` is their category's, and they
    carry `iscrowd` True. Ground truth has no `score`.

    Args:
        panoptic: the annotation PNG, `[H, W, 3]` colours (id
            `R + 256 G + 256^2 B`) or `[H, W]` ids.
        segments_info: the annotation's JSON segments
            `{"id", "category_id", "iscrowd"?, ...}`.
        categories: COCO-style category dicts `{"id", "name", "isthing"}`.

    Returns:
        `segmentation` `[H, W]` int32 (0 = void) and `segments_info`: per
        segment `id`, `label_id` (contiguous class), `category_id`, `label`,
        `isthing`, `iscrowd`, `area` (pixels).

    Example:
    >>> annotation = coco_json["annotations"][0]
    >>> png = np.asarray(PIL.Image.open("panoptic/" + annotation["file_name"]))
    >>> segmentation, segments = coco_panoptic_to_segments(
    ...     png, annotation["segments_info"], coco_json["categories"])
    """
    coco_ids = rgb2id(panoptic)
    if coco_ids.ndim != 2:
        raise ValueError(f"panoptic must be [H, W, 3] colours or [H, W] ids, got {coco_ids.shape}.")
    label_ids = {c["id"]: label_id for label_id, c in contiguous_categories(categories).items()}
    by_id = {c["id"]: c for c in categories}
    json_segments = sorted(segments_info, key=lambda s: s["id"])
    coco_segment_ids = [s["id"] for s in json_segments]
    if len(set(coco_segment_ids)) != len(coco_segment_ids):
        raise ValueError("segments_info lists a segment id more than once.")
    unique_ids, inverse, areas = np.unique(coco_ids, return_inverse=True, return_counts=True)
    missing = sorted(set(unique_ids.tolist()) - set(coco_segment_ids) - {0})
    if missing:
        raise ValueError(f"Panoptic ids {missing} are in the PNG but not in segments_info.")
    new_ids = np.zeros(len(unique_ids), np.int32)  # unlisted ids are only 0: void
    area_by_coco_id = dict(zip(unique_ids.tolist(), areas.tolist()))
    segments = []
    for new_id, segment in enumerate(json_segments, start=1):
        category_id = segment["category_id"]
        if category_id not in by_id:
            raise ValueError(f"Segment {segment['id']} has unknown category_id {category_id}.")
        category = by_id[category_id]
        new_ids[unique_ids == segment["id"]] = new_id
        segments.append(
            {
                "id": new_id,
                "label_id": label_ids[category_id],
                "category_id": category_id,
                "label": category["name"],
                "isthing": bool(category["isthing"]),
                "iscrowd": bool(segment.get("iscrowd", 0)),
                "area": int(area_by_coco_id.get(segment["id"], 0)),
            }
        )
    return new_ids[inverse.reshape(coco_ids.shape)], segments
