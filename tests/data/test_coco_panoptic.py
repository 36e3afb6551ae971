import json
import os
import shutil
import warnings

import numpy as np
import pytest
import tensorflow as tf

from keras_maxdeeplab.data import COCOPanopticDataset
from keras_maxdeeplab.data import DatasetError
from keras_maxdeeplab.data import panoptic_label_to_coco
from keras_maxdeeplab.data.targets import panoptic_targets
from keras_maxdeeplab.evaluation import rgb2id
from tests.helpers import shared_path


def _coco_sample():
    root = shared_path("data", "coco_panoptic_sample")
    return COCOPanopticDataset(
        os.path.join(root, "input_images"),
        os.path.join(root, "panoptic_examples"),
        os.path.join(root, "panoptic_examples.json"),
    )


def _mini_real():
    root = shared_path("data", "mini_real_panoptic")
    return COCOPanopticDataset(
        os.path.join(root, "images"),
        os.path.join(root, "panoptic"),
        os.path.join(root, "panoptic.json"),
    )


def _numpy(tree):
    return {key: value.numpy() for key, value in tree.items()}


def test_a_model_without_preprocessor_gets_normalised_images():
    """keras-hub's fit applies a model's preprocessor; kMaX-DeepLab has none,
    so its batches come as its network takes them: deeplab2's x / 127.5 - 1."""
    from keras_maxdeeplab import build_model
    from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model

    data = _coco_sample()
    raw = [b[0].numpy() for b in data.as_dataset(crop_size=65, training=False)]
    kmax = build_kmax_model("kmax_r50_tiny", 65)
    normalised = [b[0].numpy() for b in data.as_dataset(model=kmax, training=False)]
    assert kmax.preprocessor is None and len(raw) == len(normalised) == 2
    for image, expected in zip(normalised, raw):
        np.testing.assert_array_equal(image, expected / np.float32(127.5) - np.float32(1))
        assert image.min() >= -1 and expected.max() > 1
    max_deeplab = build_model("max_deeplab_tiny", 65)
    assert max_deeplab.preprocessor is not None
    fed = [b[0].numpy() for b in data.as_dataset(model=max_deeplab, training=False)]
    np.testing.assert_array_equal(fed[0], raw[0])


def test_evaluation_targets_equal_deeplab2():
    """loss_case_439180: deeplab2's eval-mode input and targets at 129x129."""
    reference = np.load(shared_path("reference", "max_deeplab_s", "loss_case_439180.npz"))
    data = _coco_sample()
    index = [s["image_id"] for s in data.samples].index(439180)
    batches = list(data.as_dataset(crop_size=129, training=False))
    images, y_true = batches[index][0].numpy(), _numpy(batches[index][1])

    np.testing.assert_array_equal(images, reference["input/image_0_255"])
    for key in ("semantic_gt", "thing_id_mask_gt", "thing_id_class_gt", "semantic_loss_weight"):
        np.testing.assert_array_equal(y_true[key], reference[f"gt/{key}"], err_msg=key)
    # deeplab2's COCO records make crowd void; we keep it as class * 256 + 0.
    crowd = y_true["is_crowd_gt"].astype(bool)
    assert crowd.sum() == 346 and not reference["gt/is_crowd_gt"].any()
    np.testing.assert_array_equal(
        y_true["panoptic_gt"][~crowd], reference["gt/panoptic_gt"][~crowd]
    )
    assert (reference["gt/panoptic_gt"][crowd] == 0).all()
    crowd_values = np.unique(y_true["panoptic_gt"][crowd])
    assert (crowd_values % 256 == 0).all() and (crowd_values // 256 <= 80).all()


@pytest.mark.parametrize("reader", [_coco_sample, _mini_real])
def test_round_trip_reproduces_ground_truth(reader):
    """files -> targets (original size) -> COCO segments: the same pixels,
    categories and crowd flags as the PNG + JSON, void included."""
    data = reader()
    for index, sample in enumerate(data.samples):
        _, label = data.load(index)
        targets = _numpy(panoptic_targets(label, data.thing_class_ids))
        ids, segments = panoptic_label_to_coco(targets["panoptic_gt"], data.categories)
        original = rgb2id(np.asarray(tf.io.decode_png(tf.io.read_file(sample["panoptic_file"]))))
        assert ((ids == 0) == (original == 0)).all()
        by_id = {s["id"]: s for s in segments}
        matched = set()
        for segment in sample["segments_info"]:
            pixels = original == segment["id"]
            new_ids = np.unique(ids[pixels])
            assert len(new_ids) == 1, segment
            new = by_id[int(new_ids[0])]
            assert (ids == new_ids[0]).sum() == pixels.sum() == segment["area"]
            assert new["category_id"] == segment["category_id"]
            assert new["iscrowd"] == segment.get("iscrowd", 0)
            matched.add(new["id"])
        assert matched == set(by_id)
        # Crowd is void for the loss: no thing id and no semantic class.
        crowd = targets["is_crowd_gt"].astype(bool)
        assert (targets["semantic_gt"][crowd] == 0).all()
        assert (targets["thing_id_mask_gt"][crowd] == -1).all()


def test_thing_ids_follow_first_appearance_and_small_instance_weight():
    # Classes: 1 thing, 2 stuff. Raster order of first appearance: 258, 257.
    label = np.array([[512, 258, 258], [257, 257, 0], [256, 512, 257]], np.int32)
    targets = _numpy(
        panoptic_targets(
            label, [1], max_thing_id=4, small_instance_area=3, small_instance_weight=3.0
        )
    )
    np.testing.assert_array_equal(
        targets["thing_id_mask_gt"], [[-1, 0, 0], [1, 1, -1], [-1, -1, 1]]
    )
    np.testing.assert_array_equal(targets["thing_id_class_gt"], [1, 1, -1, -1])
    np.testing.assert_array_equal(targets["semantic_gt"], [[2, 1, 1], [1, 1, 0], [0, 2, 1]])
    np.testing.assert_array_equal(targets["is_crowd_gt"], [[0, 0, 0], [0, 0, 0], [1, 0, 0]])
    # Instance 258 has 2 pixels (< 3): weight 3; instance 257 has 3.
    np.testing.assert_array_equal(
        targets["semantic_loss_weight"], [[1, 3, 3], [1, 1, 1], [1, 1, 1]]
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_thing_id=1"):
        panoptic_targets(label, [1], max_thing_id=1)


def test_training_batches_shapes_and_determinism():
    import keras

    data = _mini_real()

    def batches(seed, count=4):
        dataset = data.as_dataset(crop_size=129, batch_size=4, seed=seed).take(count)
        return [(images.numpy(), _numpy(y_true)) for images, y_true in dataset]

    first = batches(3)
    keras.utils.set_random_seed(123)  # TensorFlow's global seed does not matter
    again, other = batches(3), batches(4)
    images, y_true = first[0]
    assert images.shape == (4, 129, 129, 3) and images.dtype == np.float32
    assert y_true["thing_id_class_gt"].shape == (4, 128)
    for (a, ya), (b, yb) in zip(first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ya["panoptic_gt"], yb["panoptic_gt"])
    assert not any(np.array_equal(a, b) for (a, _), (b, _) in zip(first, other))
    # 8 images, batch 4: batches 2-3 are the second pass, with new augmentations.
    assert not np.array_equal(first[0][0], first[2][0])
    assert not np.array_equal(first[1][0], first[3][0])
    # Evaluation: one deterministic pass, remainder kept.
    assert len(list(data.as_dataset(crop_size=129, training=False, batch_size=3))) == 3


def test_augmentation_is_identical_on_every_backend():
    """The digest below was computed once; tf.data does not depend on the
    Keras backend, and this test runs under each of them."""
    data = _coco_sample()
    images, y_true = next(iter(data.as_dataset(crop_size=129, batch_size=2, seed=0)))
    digest = (
        float(np.asarray(images, np.float64).sum()),
        int(np.asarray(y_true["panoptic_gt"], np.int64).sum()),
        int(np.asarray(y_true["thing_id_mask_gt"]).sum()),
    )
    assert digest == pytest.approx(EXPECTED_DIGEST, rel=1e-6)


EXPECTED_DIGEST = (8932166.75353241, 609871056, 25352)


def _copy_sample(tmp_path):
    root = shared_path("data", "coco_panoptic_sample")
    for folder in ("input_images", "panoptic_examples"):
        shutil.copytree(os.path.join(root, folder), tmp_path / folder)
    with open(os.path.join(root, "panoptic_examples.json")) as f:
        annotations = json.load(f)
    return annotations


def _dataset(tmp_path, annotations, **kwargs):
    path = tmp_path / "panoptic.json"
    path.write_text(json.dumps(annotations))
    return COCOPanopticDataset(
        str(tmp_path / "input_images"), str(tmp_path / "panoptic_examples"), str(path), **kwargs
    )


def test_bad_files_raise_errors_naming_the_file(tmp_path):
    annotations = _copy_sample(tmp_path)
    first = annotations["annotations"][0]
    png = str(tmp_path / "panoptic_examples" / first["file_name"])
    image_name = [i for i in annotations["images"] if i["id"] == first["image_id"]][0]["file_name"]
    jpg = tmp_path / "input_images" / image_name

    with pytest.raises(DatasetError, match="no 'categories'"):
        _dataset(tmp_path, {k: v for k, v in annotations.items() if k != "categories"})

    broken = json.loads(json.dumps(annotations))
    broken["annotations"][0]["segments_info"].append(
        {"id": 4242, "category_id": 1, "iscrowd": 0, "area": 10}
    )
    with pytest.raises(DatasetError, match=r"JSON segment ids \[4242\] are absent"):
        _dataset(tmp_path, broken).load(0)

    broken = json.loads(json.dumps(annotations))
    dropped = broken["annotations"][0]["segments_info"].pop()
    with pytest.raises(DatasetError, match=rf"ids \[{dropped['id']}\] are in the PNG"):
        _dataset(tmp_path, broken).load(0)

    broken = json.loads(json.dumps(annotations))
    broken["annotations"][0]["segments_info"][0]["category_id"] = 9999
    with pytest.raises(DatasetError, match="category_id 9999"):
        _dataset(tmp_path, broken).load(0)

    data = _dataset(tmp_path, annotations)
    intact = jpg.read_bytes()
    jpg.write_bytes(intact[:100])
    with pytest.raises(DatasetError, match=f"{image_name}: cannot decode"):
        data.load(0)
    jpg.write_bytes(intact)
    os.remove(png)
    with pytest.raises(DatasetError, match=f"{first['file_name']}: file not found"):
        data.load(0)
    # In a pipeline the error surfaces with the file name too.
    with pytest.raises(tf.errors.OpError, match=first["file_name"]):
        list(data.as_dataset(crop_size=129, training=False))


def test_skip_option_leaves_out_bad_samples_with_a_counted_warning(tmp_path):
    annotations = _copy_sample(tmp_path)
    os.remove(tmp_path / "panoptic_examples" / annotations["annotations"][0]["file_name"])
    data = _dataset(tmp_path, annotations, on_error="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(data.as_dataset(crop_size=129, training=False))
    assert len(batches) == 1
    assert len(data.skipped) == 1 and "file not found" in data.skipped[0]
    assert any("1 so far" in str(w.message) for w in caught)


def test_crop_size_must_be_16k_plus_1():
    with pytest.raises(ValueError, match="16k \\+ 1"):
        _coco_sample().as_dataset(crop_size=128)


def test_ade20k_format_reads_with_category_id_0_and_string_image_ids(tmp_path):
    """ADE20K in COCO format (Mask2Former's `prepare_ade20k_pan_seg.py`, the
    files deeplab2 converts): category ids 0..149 and string image ids. The
    COCO sample relabelled with ADE20K ids (things to things, stuff to stuff,
    one stuff class to id 0 "wall") gives the same targets under the new
    classes: ADE20K's class k is category k - 1."""
    from keras_maxdeeplab.coco import ADE20K_PANOPTIC_CATEGORIES

    annotations = _copy_sample(tmp_path)
    segments = [s for a in annotations["annotations"] for s in a["segments_info"]]
    used = sorted({s["category_id"] for s in segments})
    coco = {c["id"]: c for c in annotations["categories"]}
    ade_things = [c["id"] for c in ADE20K_PANOPTIC_CATEGORIES if c["isthing"]]
    ade_stuff = [c["id"] for c in ADE20K_PANOPTIC_CATEGORIES if not c["isthing"]]
    to_ade = {}
    for category in used:
        pool = ade_things if coco[category]["isthing"] else ade_stuff
        to_ade[category] = pool.pop(0)
    assert 0 in to_ade.values()  # ADE20K's "wall"
    relabelled = json.loads(json.dumps(annotations))
    relabelled["categories"] = ADE20K_PANOPTIC_CATEGORIES
    names = {}
    for image in relabelled["images"]:
        names[image["id"]] = f"ADE_val_{image['id']:08d}"
        image["id"] = names[image["id"]]
    for annotation in relabelled["annotations"]:
        annotation["image_id"] = names[annotation["image_id"]]
        for segment in annotation["segments_info"]:
            segment["category_id"] = to_ade[segment["category_id"]]

    original = COCOPanopticDataset(
        str(tmp_path / "input_images"),
        str(tmp_path / "panoptic_examples"),
        os.path.join(shared_path("data", "coco_panoptic_sample"), "panoptic_examples.json"),
    )
    ade20k = _dataset(tmp_path, relabelled)
    expected_ids = [names[s["image_id"]] for s in original.samples]
    assert [s["image_id"] for s in ade20k.samples] == expected_ids
    # Contiguous classes: COCO's by its id order, ADE20K's = id + 1.
    coco_ids = sorted(coco)
    class_map = np.zeros(max(coco_ids) + 2, np.int32)
    for index, category in enumerate(coco_ids):
        class_map[index + 1] = to_ade.get(category, -1) + 1
    batches = zip(
        original.as_dataset(crop_size=65, training=False),
        ade20k.as_dataset(crop_size=65, training=False),
    )
    for (_, want), (_, got) in batches:
        want, got = _numpy(want), _numpy(got)
        np.testing.assert_array_equal(got["semantic_gt"], class_map[want["semantic_gt"]])
        np.testing.assert_array_equal(got["thing_id_mask_gt"], want["thing_id_mask_gt"])
        classes = want["thing_id_class_gt"].astype(int)
        expected = np.where(classes >= 0, class_map[np.maximum(classes, 0)], -1)
        np.testing.assert_array_equal(got["thing_id_class_gt"], expected)
