import json
import os
import shutil
import types

import keras_hub
import numpy as np
import pytest

import huggingface_hub
from huggingface_hub.file_download import repo_folder_name

from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab import MaXDeepLabBackbone
from keras_maxdeeplab.conversion import build_model
from keras_maxdeeplab.coco.categories import COCO_PANOPTIC_CATEGORIES
from keras_maxdeeplab.hub import PresetNotFoundError
from keras_maxdeeplab.hub import upload_preset
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESETS
from tests.helpers import to_numpy
from tests.hub_helpers import cache_preset
from tests.hub_helpers import offline_hf_cache

REPO_ID = "keras-maxdeeplab/max_deeplab_tiny_test"
CATEGORIES = [
    {"id": 3, "name": "road", "isthing": 0},
    {"id": 7, "name": "car", "isthing": 1},
    {"id": 9, "name": "sky", "isthing": 0},
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny preset folder (with a preprocessor and non-default post-processing),
    the model it was saved from and that model's outputs."""
    folder = str(tmp_path_factory.mktemp("presets") / "tiny")
    model = build_model("max_deeplab_tiny", 65, {"postprocess_options": {"thing_area_limit": 7}})
    model.save_to_preset(folder)
    images = np.random.RandomState(0).uniform(-1, 1, (1, 65, 65, 3)).astype("float32")
    return types.SimpleNamespace(
        folder=folder, model=model, images=images, outputs=to_numpy(model(images))
    )


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    return offline_hf_cache(tmp_path, monkeypatch)


def _assert_same_outputs(model, saved):
    got = to_numpy(model(saved.images))
    assert sorted(got) == sorted(saved.outputs)
    for key, value in saved.outputs.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def _architecture(model):
    """Every constructor argument of the model, its backbone and its converter, less names."""
    heads = model.get_config()
    backbone = model.backbone.get_config()
    converter = model.preprocessor.image_converter.get_config()
    for config, keys in ((heads, ("backbone", "preprocessor")), (backbone, ()), (converter, ())):
        for key in ("name", *keys):
            config.pop(key)
    return heads, backbone, converter


def _weights(model):
    return {w.path: np.asarray(w.numpy()) for w in model.weights}


def test_folder_hf_cache_and_name_give_the_saved_model_bit_for_bit(saved, hf_cache, monkeypatch):
    _assert_same_outputs(MaXDeepLab.from_preset(saved.folder), saved)

    cache_preset(saved.folder, REPO_ID, hf_cache)
    from_hub = MaXDeepLab.from_preset(f"hf://{REPO_ID}")
    _assert_same_outputs(from_hub, saved)
    assert from_hub.postprocess_options["thing_area_limit"] == 7
    assert from_hub.preprocessor.image_converter.image_size == (65, 65)
    backbone = MaXDeepLabBackbone.from_preset(f"hf://{REPO_ID}")
    expected = to_numpy(saved.model.backbone(saved.images))
    np.testing.assert_array_equal(
        to_numpy(backbone(saved.images))["feature_panoptic"], expected["feature_panoptic"]
    )

    # A table name: the architecture from the package, the weights from the cache.
    entry = dict(
        MAX_DEEPLAB_PRESETS["max_deeplab_s_coco_641_400k"],
        handle=f"hf://{REPO_ID}",
        config="max_deeplab_tiny",
        crop_size=65,
        postprocess_options={"thing_area_limit": 7},
    )
    monkeypatch.setitem(MAX_DEEPLAB_PRESETS, "max_deeplab_tiny_test", entry)
    by_name = MaXDeepLab.from_preset("max_deeplab_tiny_test")
    _assert_same_outputs(by_name, saved)
    assert _architecture(by_name) == _architecture(saved.model)
    backbone = MaXDeepLabBackbone.from_preset("max_deeplab_tiny_test")
    np.testing.assert_array_equal(
        to_numpy(backbone(saved.images))["feature_panoptic"], expected["feature_panoptic"]
    )


def test_offline_without_cache_says_so(hf_cache):
    with pytest.raises(ValueError, match="Hub is unreachable") as error:
        MaXDeepLab.from_preset("hf://keras-maxdeeplab/max_deeplab_s_coco_641_400k")
    message = str(error.value)
    assert hf_cache in message and "load a local preset folder" in message
    # A name also tries the local cache and deeplab2's archive (nothing listens there).
    for load in (
        lambda: MaXDeepLab.from_preset("max_deeplab_s_coco"),
        lambda: MaXDeepLabBackbone.from_preset("max_deeplab_s_imagenet"),
    ):
        with pytest.raises(PresetNotFoundError, match="could not be fetched from any of") as error:
            load()
        assert "Hugging Face Hub unreachable" in str(error.value)


def test_a_partly_cached_preset_is_not_completed_with_fresh_heads(saved, tmp_path, hf_cache):
    # Cached by a backbone load: the task files were never fetched.
    folder = os.path.join(tmp_path, "partial")
    os.makedirs(folder)
    for name in ("config.json", "model.weights.h5", "image_converter.json", "metadata.json"):
        shutil.copy(os.path.join(saved.folder, name), folder)
    commit = cache_preset(folder, REPO_ID, hf_cache)
    with pytest.raises(ValueError, match="Cannot fetch task.json .* Hub is unreachable"):
        MaXDeepLab.from_preset(f"hf://{REPO_ID}")

    # huggingface_hub's record of a file the repository lacks (left by a 404):
    # a backbone preset, whose heads do start afresh.
    storage = os.path.join(hf_cache, repo_folder_name(repo_id=REPO_ID, repo_type="model"))
    for name in ("task.json", "preprocessor.json"):
        marker = os.path.join(storage, ".no_exist", commit, name)
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        open(marker, "w").close()
    model = MaXDeepLab.from_preset(f"hf://{REPO_ID}")
    source, loaded = _weights(saved.model), _weights(model)
    for weight in model.backbone.weights:
        np.testing.assert_array_equal(loaded[weight.path], source[weight.path])
    kernel = "transformer_class_head/conv/kernel"
    assert not np.array_equal(loaded[kernel], source[kernel])


def test_unknown_name_lists_the_presets():
    for cls in (MaXDeepLab, MaXDeepLabBackbone):
        with pytest.raises(
            ValueError, match="Unknown MaX-DeepLab preset 'max_deeplab_m_coco'"
        ) as e:
            cls.from_preset("max_deeplab_m_coco")
        assert "max_deeplab_s_coco_641_400k" in str(e.value)
        assert "max_deeplab_l_imagenet" in str(e.value)


def _broken_copy(saved, tmp_path, name):
    folder = os.path.join(tmp_path, name)
    shutil.copytree(saved.folder, folder)
    return folder


def test_broken_preset_folders(saved, tmp_path):
    folder = _broken_copy(saved, tmp_path, "no_weights")
    os.remove(os.path.join(folder, "model.weights.h5"))
    with pytest.raises(ValueError, match="has no model.weights.h5"):
        MaXDeepLab.from_preset(folder)
    # The architecture alone needs no weights.
    assert MaXDeepLab.from_preset(folder, load_weights=False).num_classes == 134

    folder = _broken_copy(saved, tmp_path, "no_task_weights")
    os.remove(os.path.join(folder, "task.weights.h5"))
    with pytest.raises(ValueError, match="has no task.weights.h5"):
        MaXDeepLab.from_preset(folder)

    folder = _broken_copy(saved, tmp_path, "truncated")
    path = os.path.join(folder, "model.weights.h5")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        MaXDeepLabBackbone.from_preset(folder)

    folder = _broken_copy(saved, tmp_path, "other_model")
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"registered_name": "keras_hub>ResNetBackbone", "config": {}}, f)
    with pytest.raises(ValueError, match="holds another model.*keras_hub>ResNetBackbone"):
        MaXDeepLab.from_preset(folder)

    folder = _broken_copy(saved, tmp_path, "other_weights")
    shutil.copy(os.path.join(folder, "task.weights.h5"), os.path.join(folder, "model.weights.h5"))
    with pytest.raises(ValueError, match="do not fit the architecture"):
        MaXDeepLabBackbone.from_preset(folder)


def test_new_categories_reinitialise_only_the_class_heads(saved):
    model = MaXDeepLab.from_preset(saved.folder, categories=CATEGORIES)
    assert model.num_classes == 4 and model.thing_class_ids == (2,)
    assert model.postprocess_options["thing_area_limit"] == 7
    source, tuned = _weights(saved.model), _weights(model)
    backbone_paths = [w.path for w in model.backbone.weights]
    assert len(backbone_paths) > 300
    for path in backbone_paths:
        np.testing.assert_array_equal(tuned[path], source[path], err_msg=path)
    kept = [p for p in tuned if p not in backbone_paths and "class_head" not in p]
    kept = [p for p in kept if not p.startswith("semantic_head/final_conv")]
    assert {p.split("/")[0] for p in kept} == {
        "pixel_space_head",
        "pixel_space_feature_batch_norm",
        "transformer_mask_head",
        "pixel_space_mask_logits",
        "semantic_decoder",
        "semantic_head",
    }
    for path in kept:
        np.testing.assert_array_equal(tuned[path], source[path], err_msg=path)
    assert tuned["transformer_class_head/conv/kernel"].shape == (1, 32, 4)
    assert tuned["semantic_head/final_conv/kernel"].shape[-1] == 4
    outputs = to_numpy(model(saved.images))
    assert outputs["transformer_class_logits"].shape == (1, 32, 4)

    # The same ids and thing flags under other names (a dataset's own file,
    # e.g. with COCO's `supercategory` fields): the heads are kept and the
    # predictions take the given names.
    renamed = [
        dict(c, name=c["name"] + " (other)", supercategory="x") for c in COCO_PANOPTIC_CATEGORIES
    ]
    same_layout = MaXDeepLab.from_preset(saved.folder, categories=renamed)
    _assert_same_outputs(same_layout, saved)
    assert same_layout.categories == renamed
    # As many classes but another thing / stuff split: the class heads start afresh.
    flipped = [dict(c, isthing=int(c["id"] == 200)) for c in COCO_PANOPTIC_CATEGORIES]
    tuned = _weights(MaXDeepLab.from_preset(saved.folder, categories=flipped))
    for path in ("transformer_class_head/conv/kernel", "semantic_head/final_conv/kernel"):
        assert tuned[path].shape == source[path].shape
        assert not np.array_equal(tuned[path], source[path]), path
    np.testing.assert_array_equal(
        tuned["semantic_head/conv_block/conv1_bn_act/pointwise/conv/kernel"],
        source["semantic_head/conv_block/conv1_bn_act/pointwise/conv/kernel"],
    )

    with pytest.raises(ValueError, match="num_classes=5 does not match 3 categories"):
        MaXDeepLab.from_preset(saved.folder, categories=CATEGORIES, num_classes=5)
    with pytest.raises(ValueError, match="pass the new dataset's `categories`"):
        MaXDeepLab.from_preset(saved.folder, num_classes=5)
    unchanged = MaXDeepLab.from_preset(saved.folder, categories=COCO_PANOPTIC_CATEGORIES)
    _assert_same_outputs(unchanged, saved)


def test_backbone_folder_starts_a_new_model(saved, tmp_path):
    folder = os.path.join(tmp_path, "backbone_only")
    saved.model.backbone.save_to_preset(folder)
    model = MaXDeepLab.from_preset(folder, categories=CATEGORIES)
    assert model.num_classes == 4
    assert model.preprocessor.image_converter.image_size == (65, 65)
    source = _weights(saved.model)
    for path, value in _weights(model.backbone).items():
        np.testing.assert_array_equal(value, source[path], err_msg=path)


def test_weights_load_at_another_input_size(saved):
    backbone = MaXDeepLabBackbone.from_preset(saved.folder, image_shape=(129, 129, 3))
    assert backbone.image_shape == (129, 129, 3)
    source = _weights(saved.model)
    for path, value in _weights(backbone).items():
        np.testing.assert_array_equal(value, source[path], err_msg=path)


def test_a_preset_saved_under_mixed_precision_loads_under_the_global_policy(tmp_path):
    """keras-hub 0.32 cannot resolve a saved "mixed_bfloat16" policy by itself."""
    import keras

    folder = os.path.join(tmp_path, "bf16")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        trained = build_model("max_deeplab_tiny", 65)
        trained.save_to_preset(folder)
        again = MaXDeepLab.from_preset(folder)
        assert again.backbone.dtype_policy.name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    loaded = MaXDeepLab.from_preset(folder)
    assert loaded.backbone.dtype_policy.name == "float32"
    assert loaded.transformer_class_head.dtype_policy.name == "float32"
    backbone = MaXDeepLabBackbone.from_preset(folder)
    assert backbone.dtype_policy.name == "float32"
    for loaded in (loaded, backbone):
        assert {keras.backend.standardize_dtype(w.dtype) for w in loaded.weights} == {"float32"}
    source = _weights(trained)
    for path, value in _weights(MaXDeepLab.from_preset(folder)).items():
        np.testing.assert_array_equal(value, source[path], err_msg=path)
    model = MaXDeepLab.from_preset(folder, dtype="mixed_float16")
    assert model.backbone.dtype_policy.name == "mixed_float16"
    assert model.transformer_class_head.dtype_policy.name == "mixed_float16"


def test_presets_load_under_loss_scaling_without_optimizer_warnings(saved):
    """A preset's task weights file holds the compiled optimizer's counter; a
    model compiled under mixed_float16 has a loss-scaling one instead."""
    import warnings

    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = MaXDeepLab.from_preset(saved.folder)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert [str(w.message) for w in caught if "optimizer" in str(w.message)] == []
    source = _weights(saved.model)
    for path, value in _weights(model).items():
        if path in source:
            np.testing.assert_array_equal(value, source[path], err_msg=path)


def _record_uploads(monkeypatch):
    calls = []

    def create_repo(repo_id, exist_ok):
        calls.append(("create_repo", repo_id, exist_ok))
        return types.SimpleNamespace(repo_id=repo_id)

    def upload_file(path_or_fileobj, path_in_repo, repo_id):
        with open(path_or_fileobj) as f:
            calls.append(("upload_file", path_in_repo, repo_id, f.read()))

    def keras_hub_upload(uri, preset):
        calls.append(("keras_hub.upload_preset", uri, sorted(os.listdir(preset))))

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_file", upload_file)
    monkeypatch.setattr(keras_hub, "upload_preset", keras_hub_upload)
    return calls


def test_upload_sends_our_model_card_first(saved, tmp_path, monkeypatch):
    folder = _broken_copy(saved, tmp_path, "converted")
    entry = MAX_DEEPLAB_PRESETS["max_deeplab_s_coco_641_400k"]
    record = {
        "source_url": entry["source_url"],
        "source_sha256": {"ckpt-400000.index": "ab" * 32},
        "config": "max_deeplab_tiny",
        "crop_size": 65,
        "overrides": {},
        "converted_on": "2026-01-02",
    }
    with open(os.path.join(folder, "conversion.json"), "w") as f:
        json.dump(record, f)
    calls = _record_uploads(monkeypatch)
    uri = "hf://keras-maxdeeplab/max_deeplab_s_coco_641_400k"
    assert upload_preset(folder, uri) == "keras-maxdeeplab/max_deeplab_s_coco_641_400k"

    assert [call[0] for call in calls] == ["create_repo", "upload_file", "keras_hub.upload_preset"]
    _, path_in_repo, repo_id, card = calls[1]
    assert (path_in_repo, repo_id) == ("README.md", "keras-maxdeeplab/max_deeplab_s_coco_641_400k")
    assert calls[2][1:] == (
        uri,
        sorted(os.listdir(saved.folder) + ["README.md", "conversion.json"]),
    )
    with open(os.path.join(folder, "README.md")) as f:
        assert f.read() == card
    assert card.startswith("---\nlibrary_name: keras-hub\nlicense: apache-2.0\n")
    for text in (
        "# max_deeplab_s_coco_641_400k",
        f'MaXDeepLab.from_preset("{uri}")',
        "| Architecture | MaX-DeepLab-S (`max_deeplab_tiny`) |",
        "| Input | 65x65 RGB",
        "| Mask slots (max. segments) | 32 |",
        "| Classes | 133 (80 things, 53 stuff) + void |",
        "thing_area_limit 7",
        "deeplab2 model zoo checkpoint: `max_deeplab_s_os16_res641_400k`",
        f"Downloaded from: {entry['source_url']}",
        "SHA-256 of `ckpt-400000.index`: `" + "ab" * 32 + "`",
        "| 47.0 | 51.3 | 40.5 | 47.56 |",
        "Apache License 2.0",
        "CC BY 4.0",
        "Huiyu Wang and Yukun Zhu and Hartwig Adam and Alan Yuille and Liang-Chieh Chen",
        "booktitle={CVPR}",
    ):
        assert text in card, text


def test_upload_checks_its_arguments(saved, tmp_path, monkeypatch):
    calls = _record_uploads(monkeypatch)
    with pytest.raises(ValueError, match="'hf://org/name'"):
        upload_preset(saved.folder, "kaggle://org/model/keras/tiny")
    folder = _broken_copy(saved, tmp_path, "incomplete")
    os.remove(os.path.join(folder, "model.weights.h5"))
    with pytest.raises(ValueError, match="has no model.weights.h5"):
        upload_preset(folder, "hf://org/tiny")
    assert calls == []


def test_task_class_tells_the_family_of_any_preset(saved, tmp_path, hf_cache):
    from keras_maxdeeplab import KMaXDeepLab
    from keras_maxdeeplab.hub import task_class
    from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model

    # Names (and aliases) from the tables, with no download.
    assert task_class("max_deeplab_s_coco") is MaXDeepLab
    assert task_class("max_deeplab_s_coco_641_400k") is MaXDeepLab
    assert task_class("kmax_axial_r50_coco") is KMaXDeepLab
    # Folders and handles: the backbone class in config.json.
    kmax_folder = str(tmp_path / "kmax")
    build_kmax_model("kmax_r50_tiny", 65).save_to_preset(kmax_folder)
    assert task_class(saved.folder) is MaXDeepLab
    assert task_class(kmax_folder) is KMaXDeepLab
    cache_preset(kmax_folder, "keras-maxdeeplab/kmax_tiny_test", hf_cache)
    assert task_class("hf://keras-maxdeeplab/kmax_tiny_test") is KMaXDeepLab

    folder = _broken_copy(saved, tmp_path, "other_model")
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"registered_name": "keras_hub>ResNetBackbone", "config": {}}, f)
    with pytest.raises(ValueError, match="describes 'keras_hub>ResNetBackbone', not one of"):
        task_class(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write("{")
    with pytest.raises(ValueError, match="config.json of preset .* is not readable JSON"):
        task_class(folder)
    with pytest.raises(ValueError, match="Unknown preset 'kmax_r51_coco'.*kmax_r50_coco"):
        task_class("kmax_r51_coco")
    assert task_class("kmax_convnext_tiny_coco") is KMaXDeepLab
    assert task_class("kmax_r50_cityscapes") is KMaXDeepLab
