import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_maxdeeplab.evaluation import pq_compute
from keras_maxdeeplab.evaluation import rgb2id
from keras_maxdeeplab.postprocessing import post_process_panoptic_segmentation
from keras_maxdeeplab.postprocessing import segments_from_panoptic
from keras_maxdeeplab.postprocessing import to_coco_panoptic
from keras_maxdeeplab.data.categories import contiguous_categories
from keras_maxdeeplab.postprocessing.segments import restore_original_size
from tests.helpers import shared_path


def _coco_categories():
    return json.load(
        open(shared_path("data", "coco_panoptic_sample", "panoptic_coco_categories.json"))
    )


def test_restore_original_size_matches_deeplab2_evaluator():
    crop = np.arange(129 * 129).reshape(129, 129)
    restored = restore_original_size(crop, (360, 640), (129, 129))
    # deeplab2: crop the valid 72x129 region, TF1 align-corners nearest resize.
    expected = tf.compat.v1.image.resize_nearest_neighbor(
        crop[None, :72, :129, None], (360, 640), align_corners=True
    ).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(restored, expected)


def test_end_to_end_on_deeplab2_post_processor_case():
    data = np.load(shared_path("reference", "max_deeplab_s", "postprocess_cases.npz"))
    outputs = {
        "pixel_space_mask_logits": data["synthetic_default/in/pixel_space_mask_logits"],
        "transformer_class_logits": data["synthetic_default/in/transformer_class_logits"],
    }
    (result,) = post_process_panoptic_segmentation(
        outputs, [(360, 640)], _coco_categories(), (129, 129)
    )
    reference = restore_original_size(
        data["synthetic_default/out/panoptic_pred"][0], (360, 640), (129, 129)
    )
    np.testing.assert_array_equal(result["panoptic_pred"], reference)
    # 3 thing and 2 stuff segments survive deeplab2's defaults (the case's README).
    things = [s for s in result["segments_info"] if s["isthing"]]
    assert len(things) == 3 and len(result["segments_info"]) == 5
    assert sorted(s["label"] for s in things).count("person") == 2
    categories = contiguous_categories(_coco_categories())
    for segment in result["segments_info"]:
        assert segment["label_id"] == segment["panoptic_id"] // 256
        assert segment["category_id"] == categories[segment["label_id"]]["id"]
        mask = result["segmentation"] == segment["id"]
        assert segment["area"] == mask.sum()
        assert np.all(result["panoptic_pred"][mask] == segment["panoptic_id"])
        assert 0.7 <= segment["score"] <= 1.0
    assert np.all((result["segmentation"] == 0) == (result["panoptic_pred"] == 0))


def test_coco_export_round_trip_gives_pq_1(tmp_path):
    folder = shared_path("data", "coco_panoptic_sample")
    gt = json.load(open(os.path.join(folder, "panoptic_examples.json")))
    categories = contiguous_categories(gt["categories"])
    contiguous = {c["id"]: k for k, c in categories.items()}
    predictions = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
    os.makedirs(os.path.join(tmp_path, "pred"))
    for annotation in gt["annotations"]:
        ids = rgb2id(
            np.asarray(
                Image.open(os.path.join(folder, "panoptic_examples", annotation["file_name"]))
            )
        )
        # deeplab2's label format: class * 256 + instance, crowd -> void.
        panoptic = np.zeros(ids.shape, np.int64)
        for instance, segment in enumerate(annotation["segments_info"], start=1):
            if segment["iscrowd"]:
                continue
            label = contiguous[segment["category_id"]]
            panoptic[ids == segment["id"]] = label * 256 + (
                instance if categories[label]["isthing"] else 0
            )
        segmentation, segments_info = segments_from_panoptic(
            panoptic, np.ones(ids.shape), categories
        )
        rgb, record = to_coco_panoptic(
            segmentation, segments_info, annotation["image_id"], annotation["file_name"]
        )
        Image.fromarray(rgb).save(os.path.join(tmp_path, "pred", annotation["file_name"]))
        predictions["annotations"].append(record)
    pred_json = os.path.join(tmp_path, "pred.json")
    json.dump(predictions, open(pred_json, "w"))
    results = pq_compute(
        os.path.join(folder, "panoptic_examples.json"),
        pred_json,
        os.path.join(folder, "panoptic_examples"),
        os.path.join(tmp_path, "pred"),
    )
    assert results["All"]["pq"] == pytest.approx(1.0)


def test_unknown_class_is_an_error():
    categories = contiguous_categories([{"id": 1, "name": "person", "isthing": 1}])
    with pytest.raises(ValueError, match="class 5"):
        segments_from_panoptic(np.full((2, 2), 5 * 256), np.ones((2, 2)), categories)


def test_save_coco_panoptic_round_trip(tmp_path):
    """Results written as COCO panoptic files read back to the same segments,
    and score PQ 1.0 against themselves with the official rules."""
    from keras_maxdeeplab.postprocessing import save_coco_panoptic

    categories = [{"id": 7, "name": "road", "isthing": 0}, {"id": 3, "name": "car", "isthing": 1}]
    segmentation = np.zeros((6, 8), np.int32)
    segmentation[:3] = 1
    segmentation[4:, 2:5] = 2
    segments_info = [
        {"id": 1, "category_id": 7, "label": "road", "isthing": False, "score": 0.9, "area": 24},
        {"id": 2, "category_id": 3, "label": "car", "isthing": True, "score": 0.8, "area": 6},
    ]
    result = {"segmentation": segmentation, "segments_info": segments_info}
    path = save_coco_panoptic([result, result], ["a.jpg", "b.jpg"], str(tmp_path), categories)
    written = json.load(open(path))
    assert [i["file_name"] for i in written["images"]] == ["a.jpg", "b.jpg"]
    assert written["categories"] == categories
    annotation = written["annotations"][1]
    assert annotation["file_name"] == "b.png" and annotation["image_id"] == 1
    assert [(s["category_id"], s["area"], s["bbox"]) for s in annotation["segments_info"]] == [
        (7, 24, [0, 0, 8, 3]),
        (3, 6, [2, 4, 3, 2]),
    ]
    ids = rgb2id(np.asarray(Image.open(tmp_path / "panoptic" / "b.png")))
    np.testing.assert_array_equal(ids, segmentation)
    results = pq_compute(path, path, str(tmp_path / "panoptic"), str(tmp_path / "panoptic"))
    assert results["All"]["pq"] == 1.0 and results["All"]["n"] == 2
    with pytest.raises(ValueError, match="1 file names for 2 results"):
        save_coco_panoptic([result, result], ["a.jpg"], str(tmp_path), categories)
