import contextlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from keras_maxdeeplab.evaluation import id2rgb
from keras_maxdeeplab.evaluation import pq_compute
from keras_maxdeeplab.evaluation import rgb2id
from tests.helpers import SHARED
from tests.helpers import shared_path

CASES = sorted(
    name
    for name in (
        os.listdir(os.path.join(SHARED, "data", "pq_cases")) if os.path.isdir(SHARED) else []
    )
    if os.path.isdir(os.path.join(SHARED, "data", "pq_cases", name))
)


@pytest.mark.parametrize("case", CASES or ["absent"])
def test_matches_official_panopticapi(case):
    folder = shared_path("data", "pq_cases", case)
    expected = json.load(open(os.path.join(folder, "expected.json")))["panopticapi"]
    results = pq_compute(
        os.path.join(folder, "gt.json"),
        os.path.join(folder, "pred.json"),
        os.path.join(folder, "gt"),
        os.path.join(folder, "pred"),
    )
    for group in ("All", "Things", "Stuff"):
        for key in ("pq", "sq", "rq", "n"):
            assert results[group][key] == pytest.approx(expected[group][key], abs=1e-9), (
                group,
                key,
            )
    for category, values in results["per_class"].items():
        reference = expected["per_class"].get(str(category), {"pq": 0.0, "sq": 0.0, "rq": 0.0})
        for key in ("pq", "sq", "rq"):
            assert values[key] == pytest.approx(reference[key], abs=1e-9), (category, key)


@pytest.mark.parametrize(
    "json_name, png_folder",
    [
        (
            ("coco_panoptic_sample", "panoptic_examples.json"),
            ("coco_panoptic_sample", "panoptic_examples"),
        ),
        (("mini_real_panoptic", "panoptic.json"), ("mini_real_panoptic", "panoptic")),
    ],
)
def test_ground_truth_against_itself(json_name, png_folder):
    gt_json = shared_path("data", *json_name)
    folder = shared_path("data", *png_folder)
    results = pq_compute(gt_json, gt_json, folder, folder)
    assert results["All"]["pq"] == 1.0 and results["All"]["n"] > 0


def test_rgb_id_round_trip():
    ids = np.array([[0, 1, 256], [65536, 16777215, 123456]])
    np.testing.assert_array_equal(rgb2id(id2rgb(ids)), ids)


def _write_case(tmp_path, gt_ids, pred_ids, gt_segments, pred_segments, categories):
    for side, ids, segments in (("gt", gt_ids, gt_segments), ("pred", pred_ids, pred_segments)):
        os.makedirs(os.path.join(tmp_path, side), exist_ok=True)
        Image.fromarray(id2rgb(ids)).save(os.path.join(tmp_path, side, "a.png"))
        annotation = {"image_id": 1, "file_name": "a.png", "segments_info": segments}
        json.dump(
            {
                "images": [{"id": 1, "file_name": "a.jpg"}],
                "annotations": [annotation],
                "categories": categories,
            },
            open(os.path.join(tmp_path, f"{side}.json"), "w"),
        )
    return (os.path.join(tmp_path, "gt.json"), os.path.join(tmp_path, "pred.json"))


CATEGORIES = [{"id": 1, "name": "person", "isthing": 1}, {"id": 2, "name": "sky", "isthing": 0}]


def test_hand_computed_case(tmp_path):
    # GT: a 4x4 person (id 5) on sky (id 9); the prediction shifts the person by one column.
    gt = np.full((6, 6), 9)
    gt[1:5, 1:5] = 5
    pred = np.full((6, 6), 9)
    pred[1:5, 2:6] = 5
    files = _write_case(
        tmp_path,
        gt,
        pred,
        [
            {"id": 5, "category_id": 1, "iscrowd": 0, "area": 16},
            {"id": 9, "category_id": 2, "iscrowd": 0, "area": 20},
        ],
        [{"id": 5, "category_id": 1, "iscrowd": 0}, {"id": 9, "category_id": 2, "iscrowd": 0}],
        CATEGORIES,
    )
    results = pq_compute(*files)
    person_iou = 12 / 20  # intersection 12, union 16 + 16 - 12
    sky_iou = 16 / 24  # intersection 16, union 20 + 20 - 16
    assert results["per_class"][1]["pq"] == pytest.approx(person_iou)
    assert results["per_class"][2]["pq"] == pytest.approx(sky_iou)
    assert results["All"]["pq"] == pytest.approx((person_iou + sky_iou) / 2)
    assert results["Things"]["n"] == 1 and results["Stuff"]["n"] == 1


def test_empty_group_is_zero_with_n_0(tmp_path):
    gt = np.full((4, 4), 9)
    files = _write_case(
        tmp_path,
        gt,
        gt,
        [{"id": 9, "category_id": 2, "iscrowd": 0, "area": 16}],
        [{"id": 9, "category_id": 2, "iscrowd": 0}],
        CATEGORIES,
    )
    results = pq_compute(*files)
    assert results["Things"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    assert results["Stuff"]["pq"] == 1.0


@pytest.mark.parametrize(
    "mutation, message",
    [
        ("size", "differs from ground truth"),
        ("category", "unknown category_id 7"),
        ("duplicate", "duplicate segment id 9"),
        ("png_only", "prediction PNG ids \\[9\\] are not in the prediction JSON"),
    ],
)
def test_bad_input(tmp_path, mutation, message):
    gt = np.full((4, 4), 9)
    pred = gt if mutation != "size" else np.full((4, 5), 9)
    gt_segments = [{"id": 9, "category_id": 2, "iscrowd": 0, "area": 16}]
    pred_segments = [{"id": 9, "category_id": 2, "iscrowd": 0}]
    if mutation == "category":
        pred_segments = [{"id": 9, "category_id": 7, "iscrowd": 0}]
    if mutation == "duplicate":
        pred_segments = pred_segments * 2
    if mutation == "png_only":
        pred_segments = []
    files = _write_case(tmp_path, gt, pred, gt_segments, pred_segments, CATEGORIES)
    with pytest.raises(ValueError, match=message):
        pq_compute(*files)


def _label_map_results(case, rules):
    from keras_maxdeeplab.evaluation import PQStat

    folder = shared_path("data", "pq_cases", case)
    arrays = np.load(os.path.join(folder, "arrays.npz"))
    categories = {
        c["id"]: c for c in json.load(open(os.path.join(folder, "gt.json")))["categories"]
    }
    stat = PQStat()
    index = 0
    while f"gt_panoptic_{index}" in arrays.files:
        stat.add_label_maps(
            arrays[f"gt_panoptic_{index}"],
            arrays[f"pred_panoptic_{index}"],
            label_divisor=int(arrays["label_divisor"]),
            gt_is_crowd=arrays[f"gt_is_crowd_{index}"],
            rules=rules,
        )
        index += 1
    return {
        name: stat.pq_average(categories, isthing)[0]
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False))
    }


@pytest.mark.parametrize("case", CASES or ["absent"])
def test_label_maps_match_official_panopticapi(case):
    expected = json.load(open(shared_path("data", "pq_cases", case, "expected.json")))[
        "panopticapi"
    ]
    results = _label_map_results(case, "coco")
    for group in ("All", "Things", "Stuff"):
        for key in ("pq", "sq", "rq", "n"):
            assert results[group][key] == pytest.approx(expected[group][key], abs=1e-9), (
                group,
                key,
            )


def test_deeplab2_rules_match_deeplab2_evaluator():
    published = json.load(open(shared_path("data", "pq_cases", "deeplab2_testdata", "case.json")))
    results = _label_map_results("deeplab2_testdata", "deeplab2")["All"]
    for key in ("pq", "sq", "rq"):
        assert results[key] == pytest.approx(published["deeplab2_published"][key], abs=1e-6)


def test_parallel_workers_give_the_same_result():
    folder = shared_path("data", "pq_cases", "real_mixed")
    args = [os.path.join(folder, name) for name in ("gt.json", "pred.json", "gt", "pred")]
    assert pq_compute(*args, workers=1) == pq_compute(*args, workers=3)


@pytest.mark.parametrize("rules", ["coco", "deeplab2"])
def test_streaming_metric_on_label_maps(rules):
    import keras

    from keras_maxdeeplab.evaluation import PanopticQuality

    case = "real_mixed" if rules == "coco" else "deeplab2_testdata"
    arrays = np.load(shared_path("data", "pq_cases", case, "arrays.npz"))
    categories = json.load(open(shared_path("data", "pq_cases", case, "gt.json")))["categories"]
    things = [c["id"] for c in categories if c["isthing"]]
    metric = PanopticQuality(
        num_classes=201, thing_class_ids=things, label_divisor=1000, rules=rules
    )
    index = 0
    while f"gt_panoptic_{index}" in arrays.files:
        metric.update_state(
            {
                "panoptic_gt": arrays[f"gt_panoptic_{index}"][None],
                "is_crowd_gt": arrays[f"gt_is_crowd_{index}"][None],
            },
            arrays[f"pred_panoptic_{index}"][None],
        )
        index += 1
    expected = _label_map_results(case, rules)
    results = metric.results()
    for group in ("All", "Things", "Stuff"):
        assert results[group]["n"] == expected[group]["n"]
        assert results[group]["pq"] == pytest.approx(expected[group]["pq"], abs=1e-6)
    assert float(keras.ops.convert_to_numpy(metric.result())) == pytest.approx(
        expected["All"]["pq"], abs=1e-6
    )
    metric.reset_state()
    assert float(keras.ops.convert_to_numpy(metric.result())) == 0.0


def test_streaming_metric_post_processes_model_outputs():
    from keras_maxdeeplab.evaluation import PanopticQuality

    data = np.load(shared_path("reference", "max_deeplab_s", "postprocess_cases.npz"))
    outputs = {
        "pixel_space_mask_logits": data["synthetic_default/in/pixel_space_mask_logits"],
        "transformer_class_logits": data["synthetic_default/in/transformer_class_logits"],
    }
    # deeplab2's own prediction as ground truth: every segment matches itself.
    metric = PanopticQuality()
    metric.update_state({"panoptic_gt": data["synthetic_default/out/panoptic_pred"]}, outputs)
    results = metric.results()
    assert results["All"]["pq"] == 1.0 and results["All"]["n"] == 4  # 5 segments, 4 classes


def _inconsistent_ground_truth(tmp_path, case):
    """GT files that disagree with each other, as panopticapi still scores them.

    GT: person 5 (4x4) and person 6 (2x2) on sky 9; the prediction finds
    person 5 shifted, sky, and a false person over GT id 6.
    """
    gt = np.full((8, 8), 9)
    gt[1:5, 1:5] = 5
    gt[6:8, 6:8] = 6
    pred = np.full((8, 8), 9)
    pred[1:5, 2:6] = 5
    pred[6:8, 5:8] = 7
    gt_segments = [
        {"id": 5, "category_id": 1, "iscrowd": 0, "area": 16},
        {"id": 6, "category_id": 1, "iscrowd": 0, "area": 4},
        {"id": 9, "category_id": 2, "iscrowd": 0, "area": 44},
    ]
    if case == "gt_png_id_not_in_json":
        del gt_segments[1]
    if case == "unknown_gt_category":
        gt_segments[1]["category_id"] = 40
    if case == "gt_json_segment_not_in_png":
        gt_segments.append({"id": 12, "category_id": 2, "iscrowd": 0, "area": 3})
    if case == "gt_area_differs":
        gt_segments[0]["area"] = 20
    pred_segments = [
        {"id": 5, "category_id": 1, "iscrowd": 0},
        {"id": 7, "category_id": 1, "iscrowd": 0},
        {"id": 9, "category_id": 2, "iscrowd": 0},
    ]
    return _write_case(tmp_path, gt, pred, gt_segments, pred_segments, CATEGORIES)


@pytest.mark.parametrize(
    "case, problem",
    [
        ("gt_png_id_not_in_json", r"ground-truth PNG ids \[6\] are not in the ground-truth JSON"),
        ("unknown_gt_category", "segment 6 has unknown category_id 40"),
        ("gt_json_segment_not_in_png", r"ground-truth JSON segments \[12\] are not in the"),
        ("gt_area_differs", r"ground-truth JSON areas of segments \[5\] differ"),
    ],
)
def test_inconsistent_ground_truth_scores_as_panopticapi(tmp_path, case, problem):
    evaluation = pytest.importorskip("panopticapi.evaluation")
    gt_json, pred_json = _inconsistent_ground_truth(tmp_path, case)
    with pytest.warns(UserWarning, match=problem):
        results = pq_compute(gt_json, pred_json)

    gt, pred = json.load(open(gt_json)), json.load(open(pred_json))
    categories = {c["id"]: c for c in gt["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        stat = evaluation.pq_compute_single_core(
            0,
            [(gt["annotations"][0], pred["annotations"][0])],
            gt_json[: -len(".json")],
            pred_json[: -len(".json")],
            categories,
        )
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        expected, per_class = stat.pq_average(categories, isthing=isthing)
        for key in ("pq", "sq", "rq", "n"):
            assert results[name][key] == pytest.approx(expected[key], abs=1e-12), (name, key)
    assert 0 < results["All"]["pq"] < 1

    with pytest.raises(ValueError, match=problem):
        pq_compute(gt_json, pred_json, strict=True)
