"""`PQStat.add_label_maps` (single and batched) against the official panopticapi.

Random label-map batches are written as COCO panoptic PNG/JSON and scored by
`panopticapi.evaluation.pq_compute_single_core`; our per-category IoU sums and
TP/FP/FN must equal its own.
"""

import os

import numpy as np
import pytest
from PIL import Image

from keras_maxdeeplab.evaluation import PQStat
from keras_maxdeeplab.evaluation import id2rgb

STATS = ("iou", "tp", "fp", "fn")


def _random_batch(seed, label_divisor, batch=3, height=40, width=48, void_label=0):
    """`[B, H, W]` GT, prediction and GT crowd maps with every rule at work.

    Stuff bands and thing boxes (instance numbers restart in every image, so
    ids repeat across the batch, and every image starts and ends with the
    same stuff id), void boxes, two crowd boxes of one category (only the
    last one in id order ignores predictions: one box is predicted on the
    first, two on the last), and a shifted, partly relabelled or dropped
    prediction.
    """
    rng = np.random.RandomState(seed)
    things, stuff = (1, 2, 3), (5, 6)
    gt = np.zeros((batch, height, width), np.int64)
    crowd = np.zeros(gt.shape, bool)
    for image in range(batch):
        gt[image] = stuff[0] * label_divisor
        gt[image, height // 3 : 2 * height // 3] = stuff[1] * label_divisor
        for instance in range(1, 7):
            y, x = rng.randint(0, height - 8), rng.randint(0, width - 8)
            gt[image, y : y + rng.randint(4, 14), x : x + rng.randint(4, 14)] = (
                rng.choice(things) * label_divisor + instance
            )
        for instance, (y, x) in ((20, (2, 30)), (21, (25, 2))):  # crowd of category 1
            gt[image, y : y + 8, x : x + 10] = label_divisor + instance
            crowd[image, y : y + 8, x : x + 10] = True
        y, x = rng.randint(0, height - 6), rng.randint(0, width - 6)
        gt[image, y : y + 6, x : x + 6] = void_label * label_divisor
        gt[image, 0, 0] = gt[image, -1, -1] = stuff[0] * label_divisor
    pred = np.roll(gt, 1, axis=2)
    for image in range(batch):
        ids = np.unique(pred[image])
        for value in rng.choice(ids, 3, replace=False):
            pred[image][pred[image] == value] = rng.choice(
                [void_label * label_divisor, (value // label_divisor % 7 + 1) * label_divisor + 9]
            )
        pred[image, 3:9, 31:39] = label_divisor + 30  # on the first crowd box: counted
        pred[image, 26:29, 3:11] = label_divisor + 31  # on the last crowd box: ignored
        pred[image, 29:32, 3:11] = label_divisor + 32  # on the last crowd box: ignored
    return gt, pred, crowd


def _official(tmp_path, gt, pred, crowd, label_divisor, void_label=0):
    """panopticapi's per-category `{stat: {category: value}}` for label-map batches."""
    evaluation = pytest.importorskip("panopticapi.evaluation")
    categories = {}
    annotations = []
    for image in range(len(gt)):
        pair = []
        for side, label_map in (("gt", gt[image]), ("pred", pred[image])):
            ids = np.zeros(label_map.shape, np.int64)
            segments = []
            for value in np.unique(label_map).tolist():
                category = value // label_divisor
                if category == void_label:
                    continue
                mask = label_map == value
                ids[mask] = len(segments) + 1
                iscrowd = int(side == "gt" and crowd[image][mask].any())
                segments.append(
                    {"id": len(segments) + 1, "category_id": category, "iscrowd": iscrowd}
                )
                segments[-1]["area"] = int(mask.sum())
                categories[category] = {"id": category, "isthing": 1}
            os.makedirs(os.path.join(tmp_path, side), exist_ok=True)
            Image.fromarray(id2rgb(ids)).save(os.path.join(tmp_path, side, f"{image}.png"))
            pair.append({"image_id": image, "file_name": f"{image}.png", "segments_info": segments})
        annotations.append(pair)
    stat = evaluation.pq_compute_single_core(
        0, annotations, os.path.join(tmp_path, "gt"), os.path.join(tmp_path, "pred"), categories
    )
    return {
        name: {
            category: getattr(values, name)
            for category, values in stat.pq_per_cat.items()
            if getattr(values, name)
        }
        for name in STATS
    }


def _ours(stat):
    return {name: {c: v for c, v in getattr(stat, name).items() if v} for name in STATS}


def _assert_same(ours, expected):
    for name in ("tp", "fp", "fn"):
        assert ours[name] == expected[name], name
    assert ours["iou"].keys() == expected["iou"].keys()
    for category, value in expected["iou"].items():
        assert ours["iou"][category] == pytest.approx(value, abs=1e-12), category


@pytest.mark.parametrize(
    "label_divisor, dtype",
    [
        (1000, np.int32),
        (256, np.int64),
        # ids up to 7 * 2^28 + 31, near the int32 bound (too wide for a lookup table)
        (1 << 28, np.int32),
        (1 << 40, np.int64),  # ids beyond int32
    ],
)
def test_matches_panopticapi_single_and_batched(tmp_path, label_divisor, dtype):
    gt, pred, crowd = _random_batch(0, label_divisor)
    gt, pred = gt.astype(dtype), pred.astype(dtype)
    expected = _official(tmp_path, gt, pred, crowd, label_divisor)
    assert expected["tp"] and expected["fp"] and expected["fn"]
    batched = PQStat().add_label_maps(gt, pred, label_divisor=label_divisor, gt_is_crowd=crowd)
    _assert_same(_ours(batched), expected)
    single = PQStat()
    for image in range(len(gt)):
        single.add_label_maps(
            gt[image], pred[image], label_divisor=label_divisor, gt_is_crowd=crowd[image]
        )
    _assert_same(_ours(single), expected)


def test_batch_equals_images_one_by_one():
    # Different seeds per image: a batch mixing up its images changes the counts.
    maps = [_random_batch(seed, 1000, batch=1) for seed in range(4)]
    gt, pred, crowd = (np.concatenate(column) for column in zip(*maps))
    single = PQStat()
    for image in range(len(gt)):
        single.add_label_maps(gt[image], pred[image], label_divisor=1000, gt_is_crowd=crowd[image])
    batched = PQStat().add_label_maps(gt, pred, label_divisor=1000, gt_is_crowd=crowd)
    _assert_same(_ours(batched), _ours(single))


def test_deeplab2_rules_make_crowd_pixels_unlabelled(tmp_path):
    gt, pred, crowd = _random_batch(1, 1000)
    expected = _official(tmp_path, np.where(crowd, 0, gt), pred, np.zeros_like(crowd), 1000)
    stat = PQStat().add_label_maps(
        gt, pred, label_divisor=1000, gt_is_crowd=crowd, rules="deeplab2"
    )
    _assert_same(_ours(stat), expected)


def test_void_label_other_than_zero(tmp_path):
    # Cityscapes-style: void is category 255 and id 0 is category 0 (road), a segment.
    gt, pred, crowd = _random_batch(2, 1000, void_label=255)
    gt[:, -4:], pred[:, -4:-1] = 0, 0
    expected = _official(tmp_path, gt, pred, crowd, 1000, void_label=255)
    assert expected["tp"][0] == len(gt)
    stat = PQStat().add_label_maps(gt, pred, label_divisor=1000, gt_is_crowd=crowd, void_label=255)
    _assert_same(_ours(stat), expected)


def test_empty_prediction_and_void_ground_truth():
    gt = np.array([[[1001, 1001, 2000], [1002, 0, 2000]]])
    crowd = np.array([[[False, False, False], [True, False, False]]])
    empty = PQStat().add_label_maps(gt, np.zeros_like(gt), label_divisor=1000, gt_is_crowd=crowd)
    assert (empty.tp, empty.fp, empty.iou, empty.fn) == ({}, {}, {}, {1: 1, 2: 1})
    # Every prediction lies on unlabelled pixels: nothing is counted.
    void = PQStat().add_label_maps(np.zeros_like(gt), gt, label_divisor=1000)
    assert (void.tp, void.fp, void.iou, void.fn) == ({}, {}, {}, {})


def test_only_the_last_crowd_segment_of_a_category_ignores_predictions():
    gt = np.array([[1001, 1001, 1002, 1002, 1002, 1002, 2000, 2000]])
    crowd = gt < 2000
    # Predictions of category 1: one on crowd 1001 (counted), two on crowd 1002 (ignored).
    pred = np.array([[1005, 1005, 1006, 1006, 1007, 1007, 2000, 2000]])
    stat = PQStat().add_label_maps(gt, pred, label_divisor=1000, gt_is_crowd=crowd)
    assert (stat.tp, stat.fp, stat.fn) == ({2: 1}, {1: 1}, {})


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((2, 3), (2, 4), None), "expected \\[H, W\\] or \\[B, H, W\\]"),
        (((1, 2, 3, 1), (1, 2, 3, 1), None), "expected \\[H, W\\] or \\[B, H, W\\]"),
        (((2, 3), (2, 3), (3, 2)), "gt_is_crowd shape"),
    ],
)
def test_bad_shapes(shapes, message):
    gt_shape, pred_shape, crowd_shape = shapes
    crowd = None if crowd_shape is None else np.zeros(crowd_shape, bool)
    with pytest.raises(ValueError, match=message):
        PQStat().add_label_maps(
            np.zeros(gt_shape, int), np.zeros(pred_shape, int), gt_is_crowd=crowd
        )


def test_streaming_metric_on_a_batch(tmp_path):
    import keras

    from keras_maxdeeplab.evaluation import PanopticQuality

    gt, pred, crowd = _random_batch(3, 1000)
    expected = _official(tmp_path, gt, pred, crowd, 1000)
    metric = PanopticQuality(num_classes=8, thing_class_ids=(1, 2, 3), label_divisor=1000)
    metric.update_state({"panoptic_gt": gt, "is_crowd_gt": crowd}, pred)
    table = keras.ops.convert_to_numpy(metric.stats)
    for row, name in enumerate(STATS):
        ours = {c: float(table[row, c]) for c in np.flatnonzero(table[row]).tolist()}
        assert ours.keys() == expected[name].keys(), name
        for category, value in expected[name].items():
            assert ours[category] == pytest.approx(value, abs=1e-5), (name, category)
