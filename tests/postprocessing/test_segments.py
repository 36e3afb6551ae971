import json
import os

import numpy as np
import pytest
from PIL import Image

from keras_maxdeeplab.evaluation import pq_compute
from keras_maxdeeplab.evaluation import rgb2id
from keras_maxdeeplab.postprocessing import post_process_panoptic_segmentation
from keras_maxdeeplab.postprocessing import segments_from_panoptic
from keras_maxdeeplab.postprocessing import to_coco_panoptic
from keras_maxdeeplab.coco.categories import contiguous_categories
from keras_maxdeeplab import MaXDeepLabImageConverter
from tests.helpers import shared_path


def _coco_categories():
    return json.load(
        open(shared_path("data", "coco_panoptic_sample", "panoptic_coco_categories.json"))
    )


def test_end_to_end_on_deeplab2_post_processor_case():
    data = np.load(shared_path("reference", "max_deeplab_s", "postprocess_cases.npz"))
    outputs = {
        "pixel_space_mask_logits": data["synthetic_default/in/pixel_space_mask_logits"],
        "transformer_class_logits": data["synthetic_default/in/transformer_class_logits"],
    }
    converter = MaXDeepLabImageConverter(image_size=(129, 129))
    (result,) = post_process_panoptic_segmentation(
        outputs, [(360, 640)], _coco_categories(), converter
    )
    reference = converter.restore_original_size(
        data["synthetic_default/out/panoptic_pred"][0], (360, 640)
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
