"""The kMaX-DeepLab preset table against deeplab2's model zoo, and the full-size
models against the published checkpoints' variables (no download)."""

import json
import os

import numpy as np
import pytest

from keras_maxdeeplab import KMAX_DEEPLAB_PRESETS
from keras_maxdeeplab import KMaXDeepLab
from keras_maxdeeplab import KMaXDeepLabBackbone
from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab.coco import ADE20K_PANOPTIC_CATEGORIES
from keras_maxdeeplab.coco import CITYSCAPES_PANOPTIC_CATEGORIES
from keras_maxdeeplab.conversion.deeplab2 import is_model_variable
from keras_maxdeeplab.conversion.deeplab2 import kmax_key_to_path
from keras_maxdeeplab.conversion.deeplab2 import match_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import void_channel_transforms
from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model
from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_CONFIGS
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import kmax_dataset_overrides
from tests.helpers import shared_path
from tests.hub_helpers import offline_hf_cache

CHECKPOINTS = "https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/"
# deeplab2's model zoo (g3doc/projects/kmax_deeplab.md): archive, deeplab2
# config, crop, val PQ / PQ things / PQ stuff (official script) and PQ (its
# evaluator).
MODEL_ZOO = {
    "kmax_r50_coco": ("kmax_resnet50_coco_train", "kmax_meta_r50_os32", 1281, (53.0, 58.3, 44.9, 53.50)),
    "kmax_axial_r50_coco": ("kmax_maxs_gelu_coco_train", "kmax_meta_axial_r50_os32", 1281, (56.2, 62.2, 47.1, 56.71)),
    "kmax_convnext_tiny_coco": ("kmax_convnext_tiny_coco_train", "kmax_meta_convnext_tiny_os32", 1281, (55.3, 61.0, 46.7, 55.80)),
    "kmax_convnext_small_coco": ("kmax_convnext_small_coco_train", "kmax_meta_convnext_small_os32", 1281, (56.3, 62.2, 47.5, 56.86)),
    "kmax_convnext_base_coco": ("kmax_convnext_base_coco_train", "kmax_meta_convnext_base_os32", 1281, (57.2, 63.4, 47.8, 57.73)),
    "kmax_convnext_large_coco": ("kmax_convnext_large_coco_train", "kmax_meta_convnext_large_os32", 1281, (57.9, 64.0, 48.6, 58.38)),
    "kmax_convnext_large_coco_unlabeled": ("kmax_convnext_large_coco_train_unlabeled", "kmax_meta_convnext_large_os32", 1281, (58.1, 64.3, 48.8, 58.69)),
    "kmax_r50_cityscapes": ("kmax_resnet50_cityscapes_train", "kmax_meta_r50_os32", (1025, 2049), (64.3, 57.7, 69.1, 64.65)),
    "kmax_axial_r50_cityscapes": ("kmax_maxs_gelu_cityscapes_train", "kmax_meta_axial_r50_os32", (1025, 2049), (66.4, 61.2, 70.2, 66.73)),
    "kmax_convnext_tiny_cityscapes": ("kmax_convnext_tiny_cityscapes_train", "kmax_meta_convnext_tiny_os32", (1025, 2049), (66.3, 60.2, 70.8, 66.65)),
    "kmax_convnext_small_cityscapes": ("kmax_convnext_small_cityscapes_train", "kmax_meta_convnext_small_os32", (1025, 2049), (67.3, 61.6, 71.5, 67.71)),
    "kmax_convnext_base_cityscapes": ("kmax_convnext_base_cityscapes_train", "kmax_meta_convnext_base_os32", (1025, 2049), (68.0, 62.6, 72.0, 68.30)),
    "kmax_convnext_large_cityscapes": ("kmax_convnext_large_cityscapes_train", "kmax_meta_convnext_large_os32", (1025, 2049), (68.4, 62.9, 72.4, 68.73)),
    "kmax_r50_ade20k_641": ("kmax_resnet50_res641_ade20k_train", "kmax_meta_r50_os32", 641, (41.5, 40.4, 43.7, 41.47)),
    "kmax_r50_ade20k_1281": ("kmax_resnet50_res1281_ade20k_train", "kmax_meta_r50_os32_res1281", 1281, (42.3, 42.2, 42.5, 42.37)),
    "kmax_convnext_large_ade20k_641": ("kmax_convnext_large_res641_ade20k_train", "kmax_meta_convnext_large_os32", 641, (48.7, 48.0, 50.0, 48.75)),
    "kmax_convnext_large_ade20k_1281": ("kmax_convnext_large_res1281_ade20k_train", "kmax_meta_convnext_large_os32_res1281", 1281, (50.9, 51.0, 50.7, 50.92)),
}  # fmt: skip
# deeplab2's datasets: its configs' semantic output channels and training steps.
DATASETS = {"coco": (134, 150_000), "cityscapes": (19, 60_000), "ade20k": (151, 100_000)}
# shared/reference/kmax_deeplab_tiny README section 2e: the full models'
# parameters and checkpoint variables (optimizer slots left out).
FULL = {
    "kmax_r50_coco": ("variables_full_r50.txt", 72_650_796, 1_184),
    "kmax_axial_r50_coco": ("variables_full_axial_r50.txt", 90_577_452, 1_410),
}
# tests/models/deeplab2_convnext/params_full.json: trainable + non-trainable.
CONVNEXT_PARAMS = {
    "kmax_convnext_tiny_coco": 67_265_502 + 164_910,
    "kmax_convnext_small_coco": 88_900_062 + 164_910,
    "kmax_convnext_base_coco": 129_747_390 + 164_910,
    "kmax_convnext_large_coco": 243_882_366 + 164_910,
    "kmax_convnext_large_coco_unlabeled": 243_882_366 + 164_910,
}
# ADE20K's models: counted on the built models (test_ade20k_rows_build_...).
ADE20K_PARAMS = {
    "kmax_r50_ade20k_641": 72_685_748,
    "kmax_r50_ade20k_1281": 72_685_748,
    "kmax_convnext_large_ade20k_641": 244_082_228,
    "kmax_convnext_large_ade20k_1281": 244_082_228,
}
# deeplab2's evaluator options of configs/ade20k/kmax_deeplab/*.textproto.
ADE20K_POSTPROCESS = {
    "transformer_post_processing": "maskwise",
    "pixel_confidence_threshold": 0.4,
    "transformer_class_confidence_threshold_thing": 0.4,
    "transformer_class_confidence_threshold_stuff": 0.4,
    "overlapping_threshold": 0.8,
    "reorder_class_weight": 1.0,
    "reorder_mask_weight": 1.0,
    "thing_area_limit": 0,
    "stuff_area_limit": 0,
}
# ... and of configs/cityscapes/kmax_deeplab/*.textproto.
CITYSCAPES_POSTPROCESS = {
    "transformer_post_processing": "maskwise",
    "pixel_confidence_threshold": 0.4,
    "transformer_class_confidence_threshold_thing": 0.5,
    "transformer_class_confidence_threshold_stuff": 0.3,
    "overlapping_threshold": 0.9,
    "reorder_class_weight": 1.0,
    "reorder_mask_weight": 0.0,
    "thing_area_limit": 256,
    "stuff_area_limit": 2048,
}
# tests/models/deeplab2_cityscapes/params_full.json (trainable + non-trainable)
# plus our void channel's 257 semantic-head weights.
CITYSCAPES_PARAMS = {
    "kmax_r50_cityscapes": 56_986_125 + 212_526 + 257,
    "kmax_axial_r50_cityscapes": 74_823_693 + 303_790 + 257,
    "kmax_convnext_tiny_cityscapes": 60_981_933 + 160_942 + 257,
    "kmax_convnext_small_cityscapes": 82_616_493 + 160_942 + 257,
    "kmax_convnext_base_cityscapes": 121_631_693 + 161_454 + 257,
    "kmax_convnext_large_cityscapes": 232_102_413 + 162_478 + 257,
}
POSTPROCESS = {"ade20k": ADE20K_POSTPROCESS, "cityscapes": CITYSCAPES_POSTPROCESS}


@pytest.fixture(scope="module")
def coco_postprocess():
    """deeplab2's kMaX COCO evaluator options, as the tiny reference recorded them."""
    path = shared_path("reference", "kmax_deeplab_tiny", "config.json")
    with open(path) as f:
        return json.load(f)["post_processing"]["deeplab2_default_thresholds (kMaX COCO config)"]


def test_the_table_is_deeplab2s_model_zoo(coco_postprocess):
    # In the zoo's order.
    assert list(KMAX_DEEPLAB_PRESETS) == list(MODEL_ZOO) and len(MODEL_ZOO) == 17
    for name, (archive, config, crop, pq) in MODEL_ZOO.items():
        entry = KMAX_DEEPLAB_PRESETS[name]
        dataset = next(d for d in DATASETS if f"_{d}" in name)
        assert (entry["num_classes"], entry["training_steps"]) == DATASETS[dataset], name
        assert entry["dataset"] == f"{dataset}_panoptic"
        assert entry["source_url"] == f"{CHECKPOINTS}{archive}.tar.gz"
        assert entry["archive"] == f"{archive}.tar.gz" and entry["archive_sha256"] is None
        assert entry["deeplab2_name"] == config and entry["crop_size"] == crop
        assert entry["pq"] == dict(zip(("pq", "pq_thing", "pq_stuff", "pq_deeplab2"), pq))
        assert f"Val PQ {pq[0]} " in entry["metadata"]["description"]
        assert (entry["family"], entry["kind"]) == ("kmax_deeplab", "task")
        assert entry["handle"] == f"hf://keras-maxdeeplab/{name}"
        assert entry["config"] in KMAX_DEEPLAB_CONFIGS
        assert entry["config"].endswith("_cityscapes") == (dataset == "cityscapes")
        params = {**CONVNEXT_PARAMS, **ADE20K_PARAMS, **CITYSCAPES_PARAMS}.get(name)
        assert entry["metadata"]["params"] == (params or FULL[name][1])
        assert entry["postprocess_options"] == POSTPROCESS.get(dataset, coco_postprocess)


def test_unknown_and_other_family_names():
    with pytest.raises(ValueError) as error:
        KMaXDeepLab.from_preset("kmax_r101_coco")
    message = str(error.value)
    assert "Unknown kMaX-DeepLab preset 'kmax_r101_coco'" in message
    assert "kmax_r50_coco" in message and "max_deeplab_s_coco" in message
    assert "kmax_convnext_large_cityscapes" in message
    with pytest.raises(ValueError, match=r"is a kMaX-DeepLab model; load it with KMaXDeepLab"):
        MaXDeepLab.from_preset("kmax_r50_coco", load_weights=False)
    with pytest.raises(ValueError, match=r"is a MaX-DeepLab model; load it with MaXDeepLab"):
        KMaXDeepLab.from_preset("max_deeplab_s_coco", load_weights=False)
    with pytest.raises(ValueError, match="pass the new dataset's `categories`"):
        KMaXDeepLab.from_preset("kmax_r50_coco", load_weights=False, num_classes=20)


def test_presets_property():
    for cls in (KMaXDeepLab, KMaXDeepLabBackbone):
        assert sorted(cls.presets) == sorted(MODEL_ZOO)
        preset = cls.presets["kmax_r50_coco"]
        assert preset["handle"] == "hf://keras-maxdeeplab/kmax_r50_coco"
        assert preset["metadata"]["params"] == 72_650_796
        assert preset["metadata"]["path"] == "kmax_deeplab"


def _checkpoint_variables(path):
    """`{deeplab2 checkpoint key: shape}` of a variable list (`key<TAB>[shape]` lines)."""
    checkpoint = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            key, shape = line.rstrip("\n").split("\t")[:2]
            if is_model_variable(key):
                checkpoint[key] = tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())
    return checkpoint


@pytest.mark.large
@pytest.mark.parametrize("name", sorted(FULL))
def test_full_models_map_one_to_one_onto_the_published_checkpoints(name):
    """Every variable of the published checkpoint has exactly one home, and the
    table's `params` is the built model's count (no weight depends on the crop)."""
    filename, params, variables = FULL[name]
    checkpoint = _checkpoint_variables(shared_path("reference", "kmax_deeplab_tiny", filename))
    assert len(checkpoint) == variables
    model = build_kmax_model(KMAX_DEEPLAB_PRESETS[name]["config"], 65)
    block_names = [block.name for block in model.transformer_blocks]
    pairs = match_checkpoint(
        model, checkpoint, key_to_path=lambda key: kmax_key_to_path(key, block_names)
    )
    assert len(pairs) == len(model.weights) == variables
    assert len({id(variable) for variable, _ in pairs}) == len(pairs)
    total = sum(int(np.prod(shape)) for shape in checkpoint.values())
    assert model.count_params() == total == params == KMAX_DEEPLAB_PRESETS[name]["metadata"]["params"]


def _ade20k_row_builds(name):
    entry = KMAX_DEEPLAB_PRESETS[name]
    model = KMaXDeepLab.from_preset(name, load_weights=False, image_shape=(65, 65, 3))
    assert model.count_params() == ADE20K_PARAMS[name] == entry["metadata"]["params"]
    assert (model.num_classes, len(model.thing_class_ids)) == (151, 100)
    assert model.categories == ADE20K_PANOPTIC_CATEGORIES
    assert model.transformer_drop_path_keep_prob == 1.0  # deeplab2's for ADE20K (0.8 elsewhere)
    options = {k: v for k, v in ADE20K_POSTPROCESS.items() if k != "transformer_post_processing"}
    assert model.postprocess_options == options


def test_ade20k_rows_build_with_ade20ks_classes_and_options():
    """By name: ADE20K's 150 categories (ids 0..149, things interleaved), its
    evaluator options and drop path, and the count the table states."""
    _ade20k_row_builds("kmax_r50_ade20k_641")


@pytest.mark.large
def test_convnext_large_ade20k_row_builds():
    _ade20k_row_builds("kmax_convnext_large_ade20k_1281")


@pytest.mark.large
def test_a_name_builds_its_architecture_offline(tmp_path, monkeypatch):
    offline_hf_cache(tmp_path, monkeypatch)  # No network and an empty cache.
    model = KMaXDeepLab.from_preset("kmax_r50_coco", load_weights=False)
    assert model.count_params() == 72_650_796
    assert model.backbone.image_shape == (1281, 1281, 3)
    assert (model.num_classes, model.num_mask_slots) == (134, 128)


def _cityscapes_row_builds(name):
    entry = KMAX_DEEPLAB_PRESETS[name]
    model = KMaXDeepLab.from_preset(name, load_weights=False, image_shape=(65, 129, 3))
    assert model.count_params() == CITYSCAPES_PARAMS[name] == entry["metadata"]["params"]
    assert (model.num_classes, model.thing_class_ids) == (20, tuple(range(12, 20)))
    assert model.categories == CITYSCAPES_PANOPTIC_CATEGORIES
    assert (model.num_mask_slots, model.label_divisor) == (256, 1000)
    assert model.semantic_decoder is None and model.transformer_drop_path_keep_prob == 0.8
    assert model.backbone.pixel_decoder_dims == (512, 256, 128, 64, 32)
    options = {k: v for k, v in CITYSCAPES_POSTPROCESS.items() if k != "transformer_post_processing"}
    assert model.postprocess_options == options
    return model


def test_cityscapes_rows_build_as_deeplab2_builds_them_for_cityscapes():
    """By name: the fifth pixel-decoder stage, 256 slots, no semantic decoder,
    Cityscapes' 19 classes (things the last 8), its evaluator options, its
    label divisor and the count the table states (deeplab2's own + 257)."""
    model = _cityscapes_row_builds("kmax_r50_cityscapes")
    assert model.output["pixel_space_mask_logits"].shape == (None, 33, 65, 256)
    assert model.output["semantic_logits"].shape == (None, 3, 5, 20)


@pytest.mark.large
def test_convnext_large_cityscapes_row_builds():
    _cityscapes_row_builds("kmax_convnext_large_cityscapes")


@pytest.mark.large
def test_full_cityscapes_r50_maps_one_to_one_onto_deeplab2s_variables():
    """Every variable of deeplab2's full Cityscapes ResNet-50 has one home;
    the semantic head's last layer gets our void channel."""
    checkpoint = _checkpoint_variables(
        os.path.join(os.path.dirname(__file__), "deeplab2_cityscapes", "variables_full_r50.txt")
    )
    model = build_kmax_model(
        "kmax_r50_cityscapes", 65, overrides=kmax_dataset_overrides("cityscapes")
    )
    block_names = [block.name for block in model.transformer_blocks]
    _, shapes = void_channel_transforms(model, checkpoint)
    pairs = match_checkpoint(
        model, shapes, key_to_path=lambda key: kmax_key_to_path(key, block_names)
    )
    assert len(pairs) == len(model.weights) == len(checkpoint)
    total = sum(int(np.prod(shape)) for shape in checkpoint.values())
    assert model.count_params() == total + 257 == CITYSCAPES_PARAMS["kmax_r50_cityscapes"]
