"""Issue items: the COCO reader paired images with other images' labels
(duplicate ids), raised a bare KeyError naming no file for a malformed
segment (even with on_error="skip"), hung the training stream when every
sample was bad, and read files outside the image folder (`../`)."""

import json
import os
import shutil

import pytest
import tensorflow as tf

from keras_maxdeeplab.data import COCOPanopticDataset
from keras_maxdeeplab.data.coco_panoptic import DatasetError
from tests.helpers import shared_path


def _copy_sample(tmp_path):
    root = shared_path("data", "coco_panoptic_sample")
    for folder in ("input_images", "panoptic_examples"):
        shutil.copytree(os.path.join(root, folder), tmp_path / folder)
    with open(os.path.join(root, "panoptic_examples.json")) as f:
        return json.load(f)


def _dataset(tmp_path, annotations, **kwargs):
    path = tmp_path / "panoptic.json"
    path.write_text(json.dumps(annotations))
    return COCOPanopticDataset(
        str(tmp_path / "input_images"), str(tmp_path / "panoptic_examples"), str(path), **kwargs
    )


def _changed(annotations, change):
    copy = json.loads(json.dumps(annotations))
    change(copy)
    return copy


def test_json_errors_are_refused_at_once(tmp_path):
    annotations = _copy_sample(tmp_path)

    def duplicate_image_id(a):
        a["images"][1]["id"] = a["images"][0]["id"]

    def duplicate_annotation(a):
        a["annotations"].append(dict(a["annotations"][0], file_name="copy.png"))

    def escaping_image(a):
        a["images"][0]["file_name"] = "../../etc/passwd"

    def absolute_png(a):
        a["annotations"][0]["file_name"] = "/etc/passwd"

    cases = {
        duplicate_image_id: rf"image id {annotations['images'][0]['id']} is listed twice",
        duplicate_annotation: "has two annotations",
        escaping_image: r"points outside its folder",
        absolute_png: r"points outside its folder",
    }
    for change, message in cases.items():
        for on_error in ("raise", "skip"):
            with pytest.raises(DatasetError, match=message):
                _dataset(tmp_path, _changed(annotations, change), on_error=on_error)
    assert len(_dataset(tmp_path, annotations)) == 2


@pytest.mark.parametrize("segment", [{"id": 4, "iscrowd": 0}, "not a segment", None])
def test_a_malformed_segment_names_its_file_and_can_be_skipped(tmp_path, segment):
    annotations = _copy_sample(tmp_path)
    bad = _changed(annotations, lambda a: a["annotations"][0]["segments_info"].append(segment))
    png = bad["annotations"][0]["file_name"]
    with pytest.raises(DatasetError, match=rf"{png}: malformed entry"):
        _dataset(tmp_path, bad).load(0)
    data = _dataset(tmp_path, bad, on_error="skip")
    with pytest.warns(UserWarning, match="Skipped a sample"):
        batches = list(data.as_dataset(crop_size=65, training=False))
    assert len(batches) == 1 and len(data.skipped) == 1 and "malformed entry" in data.skipped[0]


def test_skip_with_every_sample_bad_fails_instead_of_hanging(tmp_path):
    annotations = _copy_sample(tmp_path)
    for annotation in annotations["annotations"]:
        os.remove(tmp_path / "panoptic_examples" / annotation["file_name"])
    data = _dataset(tmp_path, annotations, on_error="skip")
    # An endless training stream: before the fix, asking for one batch never returned.
    stream = data.as_dataset(crop_size=65, batch_size=1, seed=0)
    with pytest.warns(UserWarning):
        with pytest.raises(tf.errors.OpError, match="Every one of the 2 samples was skipped"):
            next(iter(stream))
    assert len(data.skipped) == 2  # once each, not once per pass
