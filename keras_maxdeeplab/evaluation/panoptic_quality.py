"""Panoptic quality (PQ, SQ, RQ) with the official COCO rules.

`pq_compute` has panopticapi's signature and result structure, so it can stand
in for `panopticapi.evaluation.pq_compute`. The rules are panopticapi's:
* a GT and a predicted segment of the same category match when
  IoU > 0.5, where the union leaves out the prediction's overlap with
  unlabelled (id 0) pixels;
* crowd GT segments are never matched nor counted as false negatives;
* an unmatched prediction is not a false positive when more than half of it
  lies on unlabelled pixels or on a crowd segment of its own category (the
  last crowd segment of that category in the image, as panopticapi does);
* GT areas are read from the JSON, predicted areas counted in the PNG.
One difference, documented: a group (All / Things / Stuff) with no counted
class returns zeros with `n = 0`, where panopticapi divides by zero.
"""

import json
import os

import numpy as np
from PIL import Image

VOID = 0
# Segment-pair encoding: gt_id * OFFSET + pred_id (ids are < 256^3).
OFFSET = 256 * 256 * 256


def rgb2id(color):
    """COCO panoptic PNG colours `[H, W, 3]` -> ids `R + 256 G + 256^2 B`."""
    color = np.asarray(color)
    if color.ndim == 3:
        color = color.astype(np.int64)
        return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]
    return color.astype(np.int64)


def id2rgb(ids):
    """Ids `[H, W]` -> COCO panoptic PNG colours `[H, W, 3]` uint8."""
    ids = np.asarray(ids, np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // (256 * 256) % 256], -1).astype(np.uint8)


class PQStat:
    """Per-category accumulators: IoU sum, TP, FP, FN (summed over images).

    Example:
    >>> stat = PQStat()
    >>> stat.add_image(gt_ids, gt_segments, pred_ids, pred_segments)
    >>> results, per_class = stat.pq_average(categories, isthing=None)
    """

    def __init__(self):
        self.iou = {}
        self.tp = {}
        self.fp = {}
        self.fn = {}

    def _add(self, table, category, value):
        table[category] = table.get(category, 0) + value

    def merge(self, other):
        for name in ("iou", "tp", "fp", "fn"):
            for category, value in getattr(other, name).items():
                self._add(getattr(self, name), category, value)
        return self

    def add_image(self, gt_ids, gt_segments, pred_ids, pred_segments, name="image"):
        """Accumulates one image.

        Args:
            gt_ids, pred_ids: `[H, W]` integer segment-id maps (0 = unlabelled).
            gt_segments, pred_segments: `{id: {"category_id", "iscrowd", "area"}}`;
                GT areas are taken from here, predicted areas are counted.
            name: the image's name for error messages.
        """
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(
                f"{name}: prediction size {pred_ids.shape} differs from ground truth {gt_ids.shape}."
            )
        labels, counts = np.unique(pred_ids, return_counts=True)
        pred_areas = {}
        for label, count in zip(labels.tolist(), counts.tolist()):
            if label not in pred_segments:
                if label == VOID:
                    continue
                raise ValueError(
                    f"{name}: segment id {label} is in the prediction PNG but not in its JSON."
                )
            pred_areas[label] = count
        absent = sorted(set(pred_segments) - set(pred_areas))
        if absent:
            raise ValueError(
                f"{name}: segment ids {absent} are in the prediction JSON but not in its PNG."
            )

        pairs, intersections = np.unique(
            gt_ids.astype(np.int64) * OFFSET + pred_ids.astype(np.int64), return_counts=True
        )
        overlap = dict(
            zip(zip((pairs // OFFSET).tolist(), (pairs % OFFSET).tolist()), intersections.tolist())
        )

        gt_matched, pred_matched = set(), set()
        for (gt_label, pred_label), intersection in overlap.items():
            gt = gt_segments.get(gt_label)
            pred = pred_segments.get(pred_label)
            if gt is None or pred is None or gt["iscrowd"] == 1:
                continue
            if gt["category_id"] != pred["category_id"]:
                continue
            union = (
                pred_areas[pred_label]
                + gt["area"]
                - intersection
                - overlap.get((VOID, pred_label), 0)
            )
            iou = intersection / union
            if iou > 0.5:
                self._add(self.tp, gt["category_id"], 1)
                self._add(self.iou, gt["category_id"], iou)
                gt_matched.add(gt_label)
                pred_matched.add(pred_label)

        crowd_by_category = {}
        for gt_label, gt in gt_segments.items():
            if gt_label in gt_matched:
                continue
            if gt["iscrowd"] == 1:
                crowd_by_category[gt["category_id"]] = gt_label
                continue
            self._add(self.fn, gt["category_id"], 1)

        for pred_label, pred in pred_segments.items():
            if pred_label in pred_matched:
                continue
            ignored = overlap.get((VOID, pred_label), 0)
            crowd = crowd_by_category.get(pred["category_id"])
            if crowd is not None:
                ignored += overlap.get((crowd, pred_label), 0)
            if ignored / pred_areas[pred_label] > 0.5:
                continue
            self._add(self.fp, pred["category_id"], 1)
        return self

    def pq_average(self, categories, isthing=None):
        """Mean PQ/SQ/RQ over the counted categories of a group, and per class.

        Args:
            categories: `{category_id: {"isthing": 0/1, ...}}`.
            isthing: None (all), True (things) or False (stuff).

        Returns:
            `({"pq", "sq", "rq", "n"}, {category_id: {"pq", "sq", "rq"}})`.
        """
        pq = sq = rq = 0.0
        n = 0
        per_class = {}
        for label, info in categories.items():
            if isthing is not None and (info["isthing"] == 1) != isthing:
                continue
            iou, tp = self.iou.get(label, 0.0), self.tp.get(label, 0)
            fp, fn = self.fp.get(label, 0), self.fn.get(label, 0)
            if tp + fp + fn == 0:
                per_class[label] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            pq_class = iou / (tp + 0.5 * fp + 0.5 * fn)
            sq_class = iou / tp if tp != 0 else 0
            rq_class = tp / (tp + 0.5 * fp + 0.5 * fn)
            per_class[label] = {"pq": pq_class, "sq": sq_class, "rq": rq_class}
            pq += pq_class
            sq += sq_class
            rq += rq_class
        if n == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def _segments(annotation, categories, file_name):
    segments = {}
    for segment in annotation["segments_info"]:
        if segment["id"] in segments:
            raise ValueError(f"{file_name}: duplicate segment id {segment['id']} in the JSON.")
        if segment["category_id"] not in categories:
            raise ValueError(
                f"{file_name}: segment {segment['id']} has unknown category_id "
                f"{segment['category_id']}."
            )
        segments[segment["id"]] = {
            "category_id": segment["category_id"],
            "iscrowd": segment.get("iscrowd", 0),
            "area": segment.get("area", 0),
        }
    return segments


def _read_ids(folder, file_name):
    path = os.path.join(folder, file_name)
    try:
        with Image.open(path) as image:
            return rgb2id(np.asarray(image.convert("RGB")))
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read panoptic PNG {path}: {error}") from error


def evaluate_image(gt_annotation, pred_annotation, gt_folder, pred_folder, categories):
    """PQ statistics of one image from COCO panoptic annotations and folders."""
    name = gt_annotation["file_name"]
    gt_segments = _segments(gt_annotation, categories, name)
    pred_segments = _segments(pred_annotation, categories, pred_annotation["file_name"])
    gt_ids = _read_ids(gt_folder, gt_annotation["file_name"])
    pred_ids = _read_ids(pred_folder, pred_annotation["file_name"])
    gt_labels = set(np.unique(gt_ids).tolist()) - {VOID}
    missing = sorted(gt_labels - set(gt_segments))
    if missing:
        raise ValueError(
            f"{name}: ground-truth PNG ids {missing} are not in the ground-truth JSON."
        )
    return PQStat().add_image(gt_ids, gt_segments, pred_ids, pred_segments, name=name)


def pq_compute(gt_json_file, pred_json_file, gt_folder=None, pred_folder=None):
    """Panoptic quality of COCO-format predictions, as panopticapi computes it.

    Args:
        gt_json_file, pred_json_file: COCO panoptic JSON files.
        gt_folder, pred_folder: PNG folders; default: the JSON path without
            `.json` (panopticapi's default).

    Returns:
        `{"All": {"pq", "sq", "rq", "n"}, "Things": {...},
        "Stuff": {...}, "per_class": {category_id: {"pq", "sq", "rq"}}}`, as panopticapi.

    Example:
    >>> results = pq_compute("panoptic_val2017.json", "predictions.json")
    >>> results["All"]["pq"]
    """
    with open(gt_json_file) as f:
        gt_json = json.load(f)
    with open(pred_json_file) as f:
        pred_json = json.load(f)
    gt_folder = gt_folder or gt_json_file.replace(".json", "")
    pred_folder = pred_folder or pred_json_file.replace(".json", "")
    categories = {c["id"]: c for c in gt_json["categories"]}
    predictions = {a["image_id"]: a for a in pred_json["annotations"]}
    stat = PQStat()
    for gt_annotation in gt_json["annotations"]:
        image_id = gt_annotation["image_id"]
        if image_id not in predictions:
            raise ValueError(f"No prediction for the image with id {image_id}.")
        stat.merge(
            evaluate_image(gt_annotation, predictions[image_id], gt_folder, pred_folder, categories)
        )
    results = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = stat.pq_average(categories, isthing=isthing)
        if name == "All":
            results["per_class"] = per_class
    return results
