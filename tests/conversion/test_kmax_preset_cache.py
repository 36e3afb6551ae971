"""kMaX-DeepLab presets converted on first use: deeplab2's tiny kMaX checkpoint
(../shared/reference/kmax_deeplab_tiny), packed as deeplab2 publishes its
archives and served on 127.0.0.1, through `KMaXDeepLab.from_preset(name)`."""

import json
import os

import numpy as np
import pytest

from keras_maxdeeplab import KMaXDeepLab
from keras_maxdeeplab import KMaXDeepLabBackbone
from keras_maxdeeplab.conversion.preset_cache import cached_preset
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import KMAX_DEEPLAB_PRESETS
from keras_maxdeeplab.postprocessing import postprocess_panoptic_maskwise
from tests.helpers import shared_path
from tests.helpers import to_numpy
from tests.hub_helpers import ArchiveServer
from tests.hub_helpers import assert_only_preset_cached
from tests.hub_helpers import TableSetter
from tests.hub_helpers import cache_listing
from tests.hub_helpers import checkpoint_archive
from tests.hub_helpers import offline_hf_cache
from tests.models.test_kmax_deeplab import OUTPUT_KEYS
from tests.models.test_kmax_deeplab import _images
from tests.models.test_kmax_deeplab import _tolerance

NAME = "kmax_r50_tiny_coco_65"
ARCHIVE = "kmax_resnet50_tiny_coco_train.tar.gz"
REFERENCE = ("reference", "kmax_deeplab_tiny")


def _tiny_row(monkeypatch, tmp_path, row, name, archive):
    """Table row `row` as preset `name`: the tiny architecture at 65x65, its
    archive named `archive`, offline (the Hub step finds nothing)."""
    offline_hf_cache(tmp_path, monkeypatch)
    entry = dict(
        KMAX_DEEPLAB_PRESETS[row],
        config="kmax_r50_tiny",
        crop_size=65,
        archive=archive,
        handle=f"hf://keras-maxdeeplab/{name}",
    )
    TableSetter(monkeypatch, KMAX_DEEPLAB_PRESETS)[name] = entry
    return entry


@pytest.fixture
def tiny_preset(monkeypatch, tmp_path):
    """`kmax_r50_coco`'s entry with the tiny architecture at 65x65 and its archive name."""
    return _tiny_row(monkeypatch, tmp_path, "kmax_r50_coco", NAME, ARCHIVE)


def _archive(tmp_path, reference):
    ckpt = shared_path(*reference, "ckpt")
    files = {name: os.path.join(ckpt, name) for name in os.listdir(ckpt)}
    return checkpoint_archive(str(tmp_path / ARCHIVE), "kmax_resnet50_tiny", files)


@pytest.fixture(scope="module")
def io():
    return np.load(shared_path(*REFERENCE, "io.npz"))


def _assert_reference_outputs(model, io):
    """The final outputs of deeplab2's model at 65x65 (README section 8 tolerances)."""
    outputs = to_numpy(model(_images(io, 65)))
    assert sorted(outputs) == sorted(OUTPUT_KEYS)
    for key in OUTPUT_KEYS:
        reference = io[f"s65/output/{key}"]
        assert outputs[key].shape == reference.shape, key
        name = f"output/{key}"
        np.testing.assert_allclose(
            outputs[key], reference, rtol=0, atol=_tolerance(name, reference), err_msg=key
        )
    return outputs


def test_first_use_converts_deeplab2s_archive(tiny_preset, tmp_path, io, monkeypatch):
    archive = _archive(tmp_path, REFERENCE)
    with ArchiveServer({f"/mirror/{ARCHIVE}": archive}) as server:
        monkeypatch.setenv("KERAS_MAXDEEPLAB_CHECKPOINT_URL", server.url + "/mirror/")
        model = KMaXDeepLab.from_preset(NAME)
        assert server.gets(f"/mirror/{ARCHIVE}") == 1
    assert model.count_params() == 673_870 + 20_462  # the tiny reference's params.json
    first = _assert_reference_outputs(model, io)
    # The preset's post-processing options give deeplab2's default maps exactly.
    options = dict(tiny_preset["postprocess_options"])
    assert options.pop("transformer_post_processing") == "maskwise"
    maps = to_numpy(
        postprocess_panoptic_maskwise(
            first["pixel_space_mask_logits"], first["transformer_class_logits"], (65, 65), **options
        )
    )
    for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
        np.testing.assert_array_equal(maps[key], io[f"s65/postprocess_default/{key}"], err_msg=key)

    folder = cached_preset(NAME)
    assert sorted(os.listdir(folder)) == [
        "config.json",
        "conversion.json",
        "metadata.json",
        "model.weights.h5",
        "task.json",
        "task.weights.h5",
    ]
    assert_only_preset_cached(NAME)
    with open(os.path.join(folder, "conversion.json")) as f:
        record = json.load(f)
    assert record["source_url"] == f"{server.url}/mirror/{ARCHIVE}"
    assert (record["config"], record["crop_size"], record["preset"]) == ("kmax_r50_tiny", 65, NAME)
    assert record["source_checkpoint"] == "kmax_resnet50_tiny"
    assert record["archive_sha256"] == __import__("hashlib").sha256(archive).hexdigest()

    # The server is gone: the cache serves the task, its backbone and the folder itself.
    again = to_numpy(KMaXDeepLab.from_preset(NAME)(_images(io, 65)))
    for key in OUTPUT_KEYS:
        np.testing.assert_array_equal(again[key], first[key], err_msg=key)
    backbone = KMaXDeepLabBackbone.from_preset(NAME)
    decoder_output = to_numpy(backbone(_images(io, 65))["decoder_output"])
    reference = io["s65/pixel_decoder/decoder_output"]
    tolerance = _tolerance("pixel_decoder/decoder_output", reference)
    np.testing.assert_allclose(decoder_output, reference, rtol=0, atol=tolerance)
    folder_outputs = to_numpy(KMaXDeepLab.from_preset(folder)(_images(io, 65)))
    for key in OUTPUT_KEYS:
        np.testing.assert_array_equal(folder_outputs[key], first[key], err_msg=key)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("MaX-DeepLab checkpoint", "does not match this kMaX-DeepLab architecture"),
        ("truncated archive", "is not a readable .tar.gz archive"),
    ],
)
def test_bad_archives_are_refused_and_nothing_is_cached(
    tiny_preset, tmp_path, monkeypatch, case, expected
):
    if case == "MaX-DeepLab checkpoint":  # deeplab2's tiny MaX-DeepLab where kMaX should be
        archive = _archive(tmp_path, ("reference", "max_deeplab_tiny"))
    else:
        archive = _archive(tmp_path, REFERENCE)
        archive = archive[: len(archive) * 2 // 3]
    with ArchiveServer({f"/{ARCHIVE}": archive}) as server:
        monkeypatch.setenv("KERAS_MAXDEEPLAB_CHECKPOINT_URL", server.url)
        with pytest.raises(ValueError) as error:
            KMaXDeepLab.from_preset(NAME)
    message = str(error.value)
    assert "\n" not in message
    assert f"deeplab2's archive of preset {NAME!r}" in message and expected in message
    assert cached_preset(NAME) is None
    assert cache_listing() == ["downloads", "presets"]


def _ade20k_checkpoint(folder):
    """The tiny COCO checkpoint with ADE20K's 151 class channels: every class
    head keeps COCO's channels 0..132, repeats 0..16 as 133..149 and moves the
    "no object" channel 133 to 150; the other variables as they are (written
    with TensorFlow's checkpoint op, keys unchanged)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(shared_path(*REFERENCE, "ckpt"))
    names, tensors = [], []
    for name in sorted(reader.get_variable_to_shape_map()):
        value = reader.get_tensor(name)
        if "class_head" in name or "semantic_last_layer" in name:
            assert value.shape[-1] == 134, name
            value = np.concatenate([value[..., :133], value[..., :17], value[..., 133:]], -1)
        names.append(name)
        tensors.append(tf.constant(value))
    prefix = os.path.join(folder, "ckpt-0")
    tf.raw_ops.SaveV2(
        prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors
    )
    return {name: os.path.join(folder, name) for name in os.listdir(folder)}


def test_an_ade20k_row_converts_with_ade20ks_classes(monkeypatch, tmp_path, io):
    """An ADE20K row (`kmax_r50_ade20k_641`, tiny architecture at 65x65):
    first-use conversion builds ADE20K's 151 classes, deeplab2's ADE20K
    evaluator options and drop path, loads the checkpoint strictly, and
    predictions name ADE20K's categories (ids 0..149)."""
    from keras_maxdeeplab.coco import ADE20K_PANOPTIC_CATEGORIES
    from keras_maxdeeplab.coco import LABEL_DIVISOR

    name, archive_name = "kmax_r50_tiny_ade20k_65", "kmax_resnet50_tiny_ade20k_train.tar.gz"
    _tiny_row(monkeypatch, tmp_path, "kmax_r50_ade20k_641", name, archive_name)
    os.makedirs(tmp_path / "ckpt")
    files = _ade20k_checkpoint(str(tmp_path / "ckpt"))
    archive = checkpoint_archive(str(tmp_path / archive_name), "kmax_tiny_ade20k", files)
    with ArchiveServer({f"/mirror/{archive_name}": archive}) as server:
        monkeypatch.setenv("KERAS_MAXDEEPLAB_CHECKPOINT_URL", server.url + "/mirror/")
        model = KMaXDeepLab.from_preset(name)
    assert (model.num_classes, model.categories) == (151, ADE20K_PANOPTIC_CATEGORIES)
    assert model.transformer_drop_path_keep_prob == 1.0
    assert model.postprocess_options["transformer_class_confidence_threshold_thing"] == 0.4
    assert model.postprocess_options["thing_area_limit"] == 0

    outputs = to_numpy(model(_images(io, 65)))
    coco = io["s65/output/transformer_class_logits"]
    tolerance = _tolerance("output/transformer_class_logits", coco)
    classes = outputs["transformer_class_logits"]
    np.testing.assert_allclose(classes[..., :133], coco[..., :133], rtol=0, atol=tolerance)
    np.testing.assert_allclose(classes[..., 133:150], coco[..., :17], rtol=0, atol=tolerance)
    # deeplab2 adds a constant "no object" bias, log(0.9 (C - 1) / 0.1), to the
    # last channel: 150 classes instead of 133 raise it by log(150 / 133).
    no_object = coco[..., 133] + np.log(150 / 133)
    np.testing.assert_allclose(classes[..., 150], no_object, rtol=0, atol=tolerance)
    masks = io["s65/output/pixel_space_mask_logits"]
    tolerance = _tolerance("output/pixel_space_mask_logits", masks)
    np.testing.assert_allclose(outputs["pixel_space_mask_logits"], masks, rtol=0, atol=tolerance)

    # Segments come back in ADE20K's ids: class k is category k - 1.
    (result,) = model.predict_panoptic(io["s65/input/image_0_255"][0], thing_area_limit=0)
    semantic = np.asarray(result["panoptic_pred"]) // LABEL_DIVISOR
    assert result["segments_info"]
    for segment in result["segments_info"]:
        classes_here = np.unique(semantic[result["segmentation"] == segment["id"]])
        assert classes_here.tolist() == [segment["category_id"] + 1]
        category = ADE20K_PANOPTIC_CATEGORIES[segment["category_id"]]
        assert segment["isthing"] == bool(category["isthing"])
