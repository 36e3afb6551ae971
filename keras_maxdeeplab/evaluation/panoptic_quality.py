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
* GT areas are read from the JSON, predicted areas counted in the PNG;
* where the GT files disagree with each other, panopticapi's numbers still
  come out: a GT PNG id missing from the GT JSON is left out of matching (as
  panopticapi skips it), a GT segment of a category not in the category list
  is never matched and counted nowhere, a GT JSON segment absent from its
  PNG is a false negative, and a GT JSON area that differs from the PNG's
  pixel count is used as it is. Each such inconsistency is reported in a
  warning (`strict=True` raises instead).
Differences, documented: a group (All / Things / Stuff) with no counted class
returns zeros with `n = 0`, where panopticapi divides by zero; a PNG whose
size differs from its GT's raises, where panopticapi broadcasts or fails.
"""

import concurrent.futures
import json
import os
import warnings

import numpy as np

from keras_maxdeeplab.coco.categories import LABEL_DIVISOR
from keras_maxdeeplab.coco.panoptic_format import read_panoptic_png

VOID = 0


class PQStat:
    """Per-category accumulators: IoU sum, TP, FP, FN (summed over images).

    Example:
    >>> stat = PQStat()
    >>> stat.add_label_maps(gt_panoptic, pred_panoptic)  # [H, W] or [B, H, W]
    >>> stat.add_image(gt_ids, gt_segments, pred_ids, pred_segments)
    >>> results, per_class = stat.pq_average(categories, isthing=None)
    """

    def __init__(self):
        self.iou = {}
        self.tp = {}
        self.fp = {}
        self.fn = {}
        # Inconsistencies of the GT files scored the way panopticapi scores them.
        self.problems = []

    def merge(self, other):
        for name in ("iou", "tp", "fp", "fn"):
            table = getattr(self, name)
            for category, value in getattr(other, name).items():
                table[category] = table.get(category, 0) + value
        self.problems += other.problems
        return self

    def _add(self, table, categories, values=None):
        """Adds `values` (default 1 each) to `table` per category of `categories`."""
        labels, inverse = np.unique(categories, return_inverse=True)
        sums = np.bincount(inverse, values, len(labels))
        for category, value in zip(labels.tolist(), sums.tolist()):
            table[category] = table.get(category, 0) + value

    def add_image(self, gt_ids, gt_segments, pred_ids, pred_segments, name="image", strict=True):
        """Accumulates one image given as segment-id maps and COCO segment infos.

        Args:
            gt_ids, pred_ids: `[H, W]` integer segment-id maps (0 = unlabelled).
            gt_segments, pred_segments: `{id: {"category_id", "iscrowd", "area"}}`
                in JSON order; GT areas are taken from here, predicted areas
                are counted.
            name: the image's name for error messages.
            strict: True raises on any inconsistency between the GT map and
                its segments; False scores them as panopticapi does (see the
                module's notes) and records each in `self.problems`.

        Example:
        >>> PQStat().add_image(gt_ids, {5: {"category_id": 1, "iscrowd": 0, "area": 16}},
        ...                    pred_ids, {7: {"category_id": 1, "iscrowd": 0}})
        """
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(
                f"{name}: prediction size {pred_ids.shape} differs from ground truth {gt_ids.shape}."
            )
        (gt_run, pred_run), lengths = _runs([gt_ids, pred_ids])
        gt_segments = dict(gt_segments)
        unlisted = sorted(set(np.unique(gt_run).tolist()) - set(gt_segments) - {VOID})
        if unlisted:
            self._problem(
                f"{name}: ground-truth PNG ids {unlisted} are not in the ground-truth JSON "
                "(left out of matching, as panopticapi does)",
                strict,
            )
            # Stand-ins no prediction can match and nothing counts: a crowd of no category.
            for segment_id in unlisted:
                gt_segments[segment_id] = {"category_id": -3, "iscrowd": 1, "area": 0}
        # Segment tables; index 0 stands for unlabelled pixels.
        gt_table = np.array([VOID] + list(gt_segments), np.int64)
        pred_table = np.array([VOID] + list(pred_segments), np.int64)
        gt_category = np.array([-1] + [s["category_id"] for s in gt_segments.values()])
        pred_category = np.array([-2] + [s["category_id"] for s in pred_segments.values()])
        gt_crowd = np.array([False] + [s["iscrowd"] == 1 for s in gt_segments.values()])
        gt_area = np.array([0] + [s["area"] for s in gt_segments.values()], np.int64)

        gt_index = _index_of(gt_run, gt_table, f"{name}: ground-truth", "ground-truth JSON")
        pred_index = _index_of(pred_run, pred_table, f"{name}: prediction", "prediction JSON")
        absent = pred_table[1:][np.bincount(pred_index, minlength=len(pred_table))[1:] == 0]
        if absent.size:
            raise ValueError(
                f"{name}: segment ids {absent.tolist()} are in the prediction JSON but not in its PNG."
            )
        counted = np.bincount(gt_index, lengths, len(gt_table)).astype(np.int64)
        listed = slice(1, len(gt_table) - len(unlisted))
        missing = gt_table[listed][counted[listed] == 0]
        if missing.size:
            self._problem(
                f"{name}: ground-truth JSON segments {missing.tolist()} are not in the "
                "ground-truth PNG (counted as missed, as panopticapi does)",
                strict,
            )
        differing = gt_table[listed][(counted[listed] != gt_area[listed]) & (counted[listed] > 0)]
        if differing.size:
            self._problem(
                f"{name}: ground-truth JSON areas of segments {differing.tolist()} differ from "
                "their pixel counts in the PNG (the JSON areas are used, as panopticapi does)",
                strict,
            )
        gt_image = np.zeros(len(gt_table), np.int64)
        return self._match(
            gt_index, pred_index, lengths, gt_category, gt_crowd, gt_area, gt_image, pred_category
        )

    def _problem(self, message, strict):
        if strict:
            raise ValueError(message + "; strict evaluation refuses it.")
        self.problems.append(message)

    def add_label_maps(
        self,
        gt_panoptic,
        pred_panoptic,
        label_divisor=LABEL_DIVISOR,
        gt_is_crowd=None,
        void_label=0,
        rules="coco",
        name="image",
        pred_label_divisor=None,
    ):
        """Accumulates images given as `category * label_divisor + instance` maps.

        A batch in one call gives the same statistics as its images one by
        one, in less time.

        Args:
            gt_panoptic, pred_panoptic: `[H, W]` or `[B, H, W]` integer maps;
                pixels of category `void_label` are unlabelled.
            pred_label_divisor: the predictions' divisor where it differs
                from the ground truth's `label_divisor` (a Cityscapes
                kMaX-DeepLab's 1000 against the data's 256).
            gt_is_crowd: optional bool map of the same shape, crowd pixels of
                the GT.
            rules: `"coco"` (panopticapi: a GT segment with crowd pixels is a
                crowd segment) or `"deeplab2"` (deeplab2's evaluator: crowd
                pixels are unlabelled).
            name: the images' name for error messages.

        Example:
        >>> stat = PQStat().add_label_maps(gt, pred, gt_is_crowd=crowd)  # [B, H, W]
        >>> stat.summary({1: {"isthing": 1}, 2: {"isthing": 0}})["All"]["pq"]
        """
        if rules not in ("coco", "deeplab2"):
            raise ValueError(f"rules must be 'coco' or 'deeplab2'; got {rules!r}.")
        gt, pred = np.asarray(gt_panoptic), np.asarray(pred_panoptic)
        if gt.shape != pred.shape or gt.ndim not in (2, 3):
            raise ValueError(
                f"{name}: expected [H, W] or [B, H, W] maps of one shape; got ground truth "
                f"{gt.shape} and prediction {pred.shape}."
            )
        if gt.size == 0:
            return self
        size = gt.shape[-2] * gt.shape[-1]
        crowd = None
        if gt_is_crowd is not None:
            crowd = np.asarray(gt_is_crowd, bool)
            if crowd.shape != gt.shape:
                raise ValueError(
                    f"{name}: gt_is_crowd shape {crowd.shape} differs from {gt.shape}."
                )
            # The metric passes all-False masks: skip scanning them.
            crowd = crowd.reshape(-1, size) if crowd.any() else None
        gt, pred = gt.reshape(-1, size), pred.reshape(-1, size)
        tables = [
            _pair_counts(gt[i], pred[i], None if crowd is None else crowd[i])
            for i in range(len(gt))
        ]
        image = np.repeat(np.arange(len(tables)), [len(table[-1]) for table in tables])
        gt_id, pred_id, is_crowd, counts = (np.concatenate(column) for column in zip(*tables))

        gt_void = gt_id // label_divisor == void_label
        if rules == "deeplab2":
            gt_void |= is_crowd
        gt_index, gt_image, gt_id = _number_segments(image, gt_id, gt_void)
        pred_divisor = pred_label_divisor or label_divisor
        pred_index, _, pred_id = _number_segments(
            image, pred_id, pred_id // pred_divisor == void_label
        )
        gt_area = np.bincount(gt_index, counts, len(gt_id))
        gt_crowd = np.bincount(gt_index, is_crowd, len(gt_id)) > 0
        gt_crowd[0] = False
        return self._match(
            gt_index,
            pred_index,
            counts,
            gt_id // label_divisor,
            gt_crowd,
            gt_area,
            gt_image,
            pred_id // pred_divisor,
        )

    def _match(
        self, gt_index, pred_index, counts, gt_category, gt_crowd, gt_area, gt_image, pred_category
    ):
        """Matches segments by panopticapi's rules and adds TP, FN, FP and IoU.

        Args:
            gt_index, pred_index, counts: `[R]` groups of pixels (runs or
                pairs) with one GT and one predicted segment: their indices in
                the tables below (0 = unlabelled) and pixel counts.
            gt_category, gt_crowd, gt_area, gt_image: `[G]` GT segment tables
                (entry 0 unused); a crowd rule looks at the image's last crowd
                segment of a category in table order.
            pred_category: `[P]` predicted segment categories (entry 0 unused).
        """
        size = len(pred_category)
        pairs, pair_of_group = _rank(gt_index * size + pred_index)
        intersections = np.bincount(pair_of_group, counts, len(pairs))
        pair_gt, pair_pred = pairs // size, pairs % size
        pred_area = np.bincount(pred_index, counts, size)
        void_overlap = np.bincount(pair_pred, np.where(pair_gt == 0, intersections, 0), size)

        same_category = gt_category[pair_gt] == pred_category[pair_pred]
        candidate = (pair_gt > 0) & (pair_pred > 0) & ~gt_crowd[pair_gt] & same_category
        union = pred_area[pair_pred] + gt_area[pair_gt] - intersections - void_overlap[pair_pred]
        iou = np.where(candidate, intersections / np.maximum(union, 1), 0.0)
        matched = candidate & (iou > 0.5)
        self._add(self.tp, gt_category[pair_gt[matched]])
        self._add(self.iou, gt_category[pair_gt[matched]], iou[matched])
        gt_missed = np.ones(len(gt_category), bool)
        gt_missed[pair_gt[matched]] = False
        gt_missed[0] = False
        self._add(self.fn, gt_category[gt_missed & ~gt_crowd])

        # Unmatched predictions on unlabelled pixels or on the last crowd segment
        # of their own category in their image for more than half of their area
        # are not counted (panopticapi keeps one crowd segment per category).
        crowd = np.flatnonzero(gt_crowd)
        crowd = crowd[np.lexsort((crowd, gt_category[crowd], gt_image[crowd]))]
        last = np.ones(len(crowd), bool)
        last[:-1] = (np.diff(gt_image[crowd]) != 0) | (np.diff(gt_category[crowd]) != 0)
        last_crowd = np.zeros(len(gt_category), bool)
        last_crowd[crowd[last]] = True
        on_crowd = last_crowd[pair_gt] & same_category
        ignored = void_overlap + np.bincount(pair_pred[on_crowd], intersections[on_crowd], size)
        unmatched = np.ones(size, bool)
        unmatched[pair_pred[matched]] = False
        unmatched = np.flatnonzero(unmatched[1:]) + 1
        counted = ignored[unmatched] / pred_area[unmatched] <= 0.5
        self._add(self.fp, pred_category[unmatched[counted]])
        return self

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


def _runs(maps):
    """Run-length encodes aligned maps of one image, flattened.

    Label maps are piecewise constant: a 640x480 GT/prediction pair has a few
    thousand runs of equal values, so all later work is on runs, not pixels.

    Returns:
        `([values of each map per run], lengths)`, `[R]` each.
    """
    flat = [np.ravel(values) for values in maps]
    change = np.empty(flat[0].size, bool)
    change[:1] = True
    np.not_equal(flat[0][1:], flat[0][:-1], out=change[1:])
    for values in flat[1:]:
        change[1:] |= values[1:] != values[:-1]
    starts = np.flatnonzero(change)
    return [values[starts] for values in flat], np.diff(starts, append=change.size)


def _rank(values):
    """`np.unique(values, return_inverse=True)` for a non-empty integer array.

    In linear time through a lookup table where the values span fewer than
    2^20 integers (label-map ids, packed pairs): sorting the ~10^4 runs of a
    real image costs milliseconds.
    """
    low = values.min()
    span = int(values.max()) - int(low) + 1
    if span > 1 << 20:
        return np.unique(values, return_inverse=True)
    offset = values - low
    present = np.zeros(span, bool)
    present[offset] = True
    distinct = np.flatnonzero(present)
    lookup = np.empty(span, np.intp)
    lookup[distinct] = np.arange(len(distinct))
    return distinct + low, lookup[offset]


def _pair_counts(gt, pred, crowd):
    """The distinct `(gt id, pred id, crowd)` of one image's pixels and their counts.

    Args:
        gt, pred: `[N]` integer ids; crowd: `[N]` bool or None.

    Returns:
        `(gt ids, pred ids, crowd, pixel counts)`, `[M]` each.
    """
    (gt_run, pred_run, *crowd_run), lengths = _runs([gt, pred] + ([] if crowd is None else [crowd]))
    crowd_run = crowd_run[0] if crowd_run else np.zeros(len(lengths), bool)
    gt_ids, gt_rank = _rank(gt_run.astype(np.int64))
    pred_ids, pred_rank = _rank(pred_run.astype(np.int64))
    pairs, pair_of_run = _rank((gt_rank * len(pred_ids) + pred_rank) * 2 + crowd_run)
    counts = np.bincount(pair_of_run, lengths, len(pairs))
    pairs, pair_crowd = pairs // 2, pairs % 2 == 1
    return gt_ids[pairs // len(pred_ids)], pred_ids[pairs % len(pred_ids)], pair_crowd, counts


def _number_segments(image, ids, void):
    """Numbers the distinct `(image, id)` of non-void rows 1, 2, ... in that order.

    Returns:
        `(number per row (0 if void), image per number, id per number)`;
        entry 0 of the last two stands for void and is unused.
    """
    values, rank = np.unique(ids, return_inverse=True)
    keys = np.where(void, -1, image * len(values) + rank)
    segments, index = np.unique(np.append(-1, keys), return_inverse=True)
    return index[1:], segments // len(values), values[segments % len(values)]


def _index_of(ids, table, what, where):
    """Position of every id in `table` (0 = unlabelled); unknown ids raise."""
    order = np.argsort(table)
    position = np.clip(np.searchsorted(table[order], ids), 0, len(table) - 1)
    index = order[position]
    unknown = (table[index] != ids) & (ids != VOID)
    if unknown.any():
        raise ValueError(
            f"{what} PNG ids {sorted(set(ids[unknown].tolist()))} are not in the {where}."
        )
    return np.where(ids == VOID, 0, index)


def _segments(annotation, categories, file_name, problems=None):
    """`{id: {"category_id", "iscrowd", "area"}}` of a JSON annotation.

    An unknown category raises, unless `problems` is a list (the lenient
    GT side): then it is recorded there and the segment kept, never matched.
    """
    segments = {}
    for segment in annotation["segments_info"]:
        if segment["id"] in segments:
            raise ValueError(f"{file_name}: duplicate segment id {segment['id']} in the JSON.")
        if segment["category_id"] not in categories:
            message = (
                f"{file_name}: segment {segment['id']} has unknown category_id "
                f"{segment['category_id']}"
            )
            if problems is None:
                raise ValueError(message + ".")
            problems.append(message + " (never matched, counted nowhere, as panopticapi does)")
        segments[segment["id"]] = {
            "category_id": segment["category_id"],
            "iscrowd": segment.get("iscrowd", 0),
            "area": segment.get("area", 0),
        }
    return segments


def evaluate_image(gt_annotation, pred_annotation, gt_folder, pred_folder, categories, strict=False):
    """PQ statistics of one image from COCO panoptic annotations and folders.

    `strict` as in `pq_compute`; inconsistencies land in the result's `problems`.
    """
    name = gt_annotation["file_name"]
    stat = PQStat()
    gt_segments = _segments(gt_annotation, categories, name, None if strict else stat.problems)
    pred_segments = _segments(pred_annotation, categories, pred_annotation["file_name"])
    gt_ids = read_panoptic_png(os.path.join(gt_folder, gt_annotation["file_name"]))
    pred_ids = read_panoptic_png(os.path.join(pred_folder, pred_annotation["file_name"]))
    # add_image raises for prediction PNG ids missing from the prediction JSON.
    return stat.add_image(gt_ids, gt_segments, pred_ids, pred_segments, name=name, strict=strict)


def _evaluate_job(job):
    return evaluate_image(*job)


def pq_compute(
    gt_json_file, pred_json_file, gt_folder=None, pred_folder=None, workers=None, strict=False
):
    """Panoptic quality of COCO-format predictions, as panopticapi computes it.

    Args:
        gt_json_file, pred_json_file: COCO panoptic JSON files.
        gt_folder, pred_folder: PNG folders; default: the JSON path without
            `.json` (panopticapi's default).
        workers: threads reading and scoring images in parallel (default:
            one per CPU core).
        strict: False (default) gives panopticapi's numbers where the GT
            files disagree with each other, and warns about each
            disagreement; True raises on the first.

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
        jobs.append(
            (gt_annotation, predictions[image_id], gt_folder, pred_folder, categories, strict)
        )
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    stat = PQStat()
    # Threads: PNG decoding and NumPy's sorting release the GIL, and unlike
    # processes they need no re-import of the (heavy) package per worker.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for image_stat in pool.map(_evaluate_job, jobs):
            stat.merge(image_stat)
    if stat.problems:
        shown = "; ".join(stat.problems[:5])
        more = f" (and {len(stat.problems) - 5} more)" if len(stat.problems) > 5 else ""
        warnings.warn(
            f"The ground truth is inconsistent in {len(stat.problems)} places, scored as "
            f"panopticapi scores them (pass strict=True to refuse): {shown}{more}",
            stacklevel=2,
        )
    return stat.summary(categories)


def format_results(results):
    """PQ/SQ/RQ table (percent) for All, Things and Stuff, as panopticapi prints it."""
    lines = [f"{'':10s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s}  {'N':>5s}", "-" * 41]
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        lines.append(
            f"{name:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f}  {r['n']:5d}"
        )
    return "\n".join(lines)
