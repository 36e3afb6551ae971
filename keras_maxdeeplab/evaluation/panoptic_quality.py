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

import concurrent.futures
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
        """Accumulates one image (vectorised over pixels and segments).

        Args:
            gt_ids, pred_ids: `[H, W]` integer segment-id maps (0 = unlabelled).
            gt_segments, pred_segments: `{id: {"category_id", "iscrowd", "area"}}`
                in JSON order; GT areas are taken from here, predicted areas
                are counted.
            name: the image's name for error messages.
        """
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(
                f"{name}: prediction size {pred_ids.shape} differs from ground truth {gt_ids.shape}."
            )
        # Segment tables; index 0 stands for unlabelled pixels.
        gt_table = np.array([VOID] + list(gt_segments), np.int64)
        pred_table = np.array([VOID] + list(pred_segments), np.int64)
        gt_category = np.array([-1] + [s["category_id"] for s in gt_segments.values()])
        pred_category = np.array([-2] + [s["category_id"] for s in pred_segments.values()])
        gt_crowd = np.array([False] + [s["iscrowd"] == 1 for s in gt_segments.values()])
        gt_area = np.array([0] + [s["area"] for s in gt_segments.values()], np.int64)

        gt_index = _index_of(gt_ids, gt_table, f"{name}: ground-truth", "ground-truth JSON")
        pred_index = _index_of(pred_ids, pred_table, f"{name}: prediction", "prediction JSON")
        pred_area = np.bincount(pred_index.ravel(), minlength=len(pred_table))
        absent = pred_table[1:][pred_area[1:] == 0]
        if absent.size:
            raise ValueError(
                f"{name}: segment ids {absent.tolist()} are in the prediction JSON but not in its PNG."
            )
        size = len(pred_table)
        # Pixel counts of every (gt segment, predicted segment) pair in one pass.
        pair_counts = np.bincount(
            (gt_index.ravel() * size + pred_index.ravel()), minlength=len(gt_table) * size
        )
        codes = np.flatnonzero(pair_counts)
        intersections = pair_counts[codes]
        pair_gt, pair_pred = codes // size, codes % size
        void_overlap = np.zeros(size, np.int64)
        on_void = pair_gt == 0
        void_overlap[pair_pred[on_void]] = intersections[on_void]

        candidate = (
            (pair_gt > 0)
            & (pair_pred > 0)
            & ~gt_crowd[pair_gt]
            & (gt_category[pair_gt] == pred_category[pair_pred])
        )
        union = pred_area[pair_pred] + gt_area[pair_gt] - intersections - void_overlap[pair_pred]
        iou = np.where(candidate, intersections / np.maximum(union, 1), 0.0)
        matched = candidate & (iou > 0.5)
        for category, value in zip(gt_category[pair_gt[matched]].tolist(), iou[matched].tolist()):
            self._add(self.tp, category, 1)
            self._add(self.iou, category, value)
        gt_matched = np.zeros(len(gt_table), bool)
        gt_matched[pair_gt[matched]] = True
        pred_matched = np.zeros(size, bool)
        pred_matched[pair_pred[matched]] = True

        for category in gt_category[1:][~gt_matched[1:] & ~gt_crowd[1:]].tolist():
            self._add(self.fn, category, 1)

        # Unmatched predictions on unlabelled pixels or on the (last) crowd segment
        # of their own category for more than half of their area are not counted.
        crowd_of = {}
        for index in np.nonzero(gt_crowd & ~gt_matched)[0].tolist():
            crowd_of[int(gt_category[index])] = index
        ignored = void_overlap.copy()
        crowd_pairs = (
            np.array(
                [crowd_of.get(int(c), -1) == g for g, c in zip(pair_gt, pred_category[pair_pred])],
                bool,
            )
            if crowd_of
            else np.zeros(len(codes), bool)
        )
        np.add.at(ignored, pair_pred[crowd_pairs], intersections[crowd_pairs])
        unmatched = np.nonzero(~pred_matched)[0]
        unmatched = unmatched[unmatched > 0]
        counted = ignored[unmatched] / pred_area[unmatched] <= 0.5
        for category in pred_category[unmatched[counted]].tolist():
            self._add(self.fp, category, 1)
        return self

    def add_label_maps(
        self,
        gt_panoptic,
        pred_panoptic,
        label_divisor=256,
        gt_is_crowd=None,
        void_label=0,
        rules="coco",
        name="image",
    ):
        """Accumulates one image given as `category * label_divisor + instance` maps.

        Args:
            gt_panoptic, pred_panoptic: `[H, W]` integer maps; category
                `void_label` is unlabelled.
            gt_is_crowd: optional `[H, W]` bool, crowd pixels of the GT.
            rules: `"coco"` (panopticapi: crowd regions are separate segments)
                or `"deeplab2"` (deeplab2's evaluator: crowd pixels are void
                for every class).
        """
        if rules not in ("coco", "deeplab2"):
            raise ValueError(f"rules must be 'coco' or 'deeplab2'; got {rules!r}.")
        gt = np.asarray(gt_panoptic, np.int64)
        pred = np.asarray(pred_panoptic, np.int64)
        crowd = np.zeros(gt.shape, bool) if gt_is_crowd is None else np.asarray(gt_is_crowd, bool)
        if crowd.shape != gt.shape:
            raise ValueError(f"{name}: gt_is_crowd shape {crowd.shape} differs from {gt.shape}.")
        gt = np.where(gt // label_divisor == void_label, VOID, gt)
        pred = np.where(pred // label_divisor == void_label, VOID, pred)
        if rules == "deeplab2":
            gt = np.where(crowd, VOID, gt)
        crowd_ids = set(_unique(gt[crowd])[0].tolist()) if rules == "coco" else set()
        gt_ids, gt_areas = _unique(gt)
        gt_segments = {
            i: {"category_id": i // label_divisor, "iscrowd": int(i in crowd_ids), "area": a}
            for i, a in zip(gt_ids.tolist(), gt_areas.tolist())
            if i != VOID
        }
        pred_segments = {
            i: {"category_id": i // label_divisor, "iscrowd": 0}
            for i in _unique(pred)[0].tolist()
            if i != VOID
        }
        return self.add_image(gt, gt_segments, pred, pred_segments, name=name)

    def summary(self, categories):
        """panopticapi's result structure: All/Things/Stuff and `per_class`."""
        results = {}
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            results[name], per_class = self.pq_average(categories, isthing=isthing)
            if name == "All":
                results["per_class"] = per_class
        return results

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


def _unique(values):
    """`np.unique(values, return_counts=True)` in linear time for small ids."""
    values = values.ravel()
    if values.size == 0:
        return values, values
    if values.min() >= 0 and values.max() < (1 << 22):
        counts = np.bincount(values)
        ids = np.flatnonzero(counts)
        return ids, counts[ids]
    return np.unique(values, return_counts=True)


def _index_of(ids, table, what, where):
    """Position of every pixel's id in `table` (0 = unlabelled); unknown ids raise."""
    if ids.size and ids.min() >= 0 and max(ids.max(), table.max()) < (1 << 22):
        lookup = np.full(max(ids.max(), table.max()) + 1, -1, np.int64)
        lookup[table] = np.arange(len(table))
        index = lookup[ids]
        unknown = index < 0
    else:
        order = np.argsort(table)
        position = np.clip(np.searchsorted(table[order], ids), 0, len(table) - 1)
        index = order[position]
        unknown = (table[index] != ids) & (ids != VOID)
    if unknown.any():
        raise ValueError(
            f"{what} PNG ids {sorted(set(ids[unknown].tolist()))} are not in the {where}."
        )
    return np.where(ids == VOID, 0, index)


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


def _evaluate_job(job):
    return evaluate_image(*job)


def pq_compute(gt_json_file, pred_json_file, gt_folder=None, pred_folder=None, workers=None):
    """Panoptic quality of COCO-format predictions, as panopticapi computes it.

    Args:
        gt_json_file, pred_json_file: COCO panoptic JSON files.
        gt_folder, pred_folder: PNG folders; default: the JSON path without
            `.json` (panopticapi's default).
        workers: threads reading and scoring images in parallel (default:
            one per CPU core).

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
    jobs = []
    for gt_annotation in gt_json["annotations"]:
        image_id = gt_annotation["image_id"]
        if image_id not in predictions:
            raise ValueError(f"No prediction for the image with id {image_id}.")
        jobs.append((gt_annotation, predictions[image_id], gt_folder, pred_folder, categories))
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    stat = PQStat()
    # Threads: PNG decoding and NumPy's sorting release the GIL, and unlike
    # processes they need no re-import of the (heavy) package per worker.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for image_stat in pool.map(_evaluate_job, jobs):
            stat.merge(image_stat)
    return stat.summary(categories)


def read_coco_panoptic(json_file, folder=None):
    """Reads a COCO panoptic annotation set: yields `(annotation, ids [H, W])`.

    `folder` defaults to the JSON path without `.json` (panopticapi's layout).

    Example:
    >>> for annotation, ids in read_coco_panoptic("predictions.json"):
    ...     print(annotation["image_id"], ids.max())
    """
    with open(json_file) as f:
        data = json.load(f)
    folder = folder or json_file.replace(".json", "")
    for annotation in data["annotations"]:
        yield annotation, _read_ids(folder, annotation["file_name"])


def format_results(results):
    """PQ/SQ/RQ table (percent) for All, Things and Stuff, as panopticapi prints it."""
    lines = [f"{'':10s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s}  {'N':>5s}", "-" * 41]
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        lines.append(
            f"{name:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f}  {r['n']:5d}"
        )
    return "\n".join(lines)
