import os

import pytest

from keras_maxdeeplab import MAX_DEEPLAB_CONFIGS
from keras_maxdeeplab import MAX_DEEPLAB_PRESET_ALIASES
from keras_maxdeeplab import MAX_DEEPLAB_PRESETS
from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab import MaXDeepLabBackbone
from keras_maxdeeplab.coco.categories import COCO_PANOPTIC_CATEGORIES
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import EMBEDDED_PRESETS
from keras_maxdeeplab.postprocessing import DEFAULT_POSTPROCESS_OPTIONS
from tests.hub_helpers import offline_hf_cache

CHECKPOINTS = "https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/"
# deeplab2's model zoo (g3doc/projects/max_deeplab.md): crop, steps, PQ, PQ
# things, PQ stuff by the official script, PQ by deeplab2's evaluator.
MODEL_ZOO = {
    "max_deeplab_s_coco_641_100k": (641, 100_000, 45.9, 49.2, 40.9, 46.36),
    "max_deeplab_s_coco_641_200k": (641, 200_000, 46.5, 50.6, 40.4, 47.04),
    "max_deeplab_s_coco_641_400k": (641, 400_000, 47.0, 51.3, 40.5, 47.56),
    "max_deeplab_s_coco_1025_100k": (1025, 100_000, 47.9, 52.1, 41.5, 48.41),
    "max_deeplab_s_coco_1025_200k": (1025, 200_000, 48.7, 53.6, 41.3, 49.23),
    "max_deeplab_s_coco_1025_400k": (1025, 400_000, 49.0, 54.0, 41.4, 49.54),
    "max_deeplab_l_coco_1025_100k": (1025, 100_000, 50.9, 56.9, 42.0, 51.48),
    "max_deeplab_l_coco_1025_200k": (1025, 200_000, 51.1, 56.8, 42.5, 51.64),
    "max_deeplab_l_coco_1025_400k": (1025, 400_000, 51.3, 57.5, 42.0, 51.87),
}


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    return offline_hf_cache(tmp_path, monkeypatch)


def test_coco_presets_are_deeplab2_model_zoo():
    coco = {name: e for name, e in MAX_DEEPLAB_PRESETS.items() if e["kind"] == "task"}
    assert sorted(coco) == sorted(MODEL_ZOO)
    for name, (crop, steps, pq, thing, stuff, deeplab2) in MODEL_ZOO.items():
        entry = coco[name]
        size = name.split("_")[2]
        zoo_name = f"max_deeplab_{size}_os16_res{crop}_{steps // 1000}k"
        assert entry["config"] == f"max_deeplab_{size}"
        assert (entry["crop_size"], entry["training_steps"]) == (crop, steps)
        assert entry["pq"] == {
            "pq": pq,
            "pq_thing": thing,
            "pq_stuff": stuff,
            "pq_deeplab2": deeplab2,
        }
        assert entry["deeplab2_name"] == zoo_name
        assert entry["source_url"] == f"{CHECKPOINTS}{zoo_name}_coco_train.tar.gz"
        assert entry["handle"] == f"hf://keras-maxdeeplab/{name}"
        # deeplab2's 1025 configs: thing_area_limit 256, stuff_area_limit 4096.
        expected = {"thing_area_limit": 256, "stuff_area_limit": 4096} if crop == 1025 else {}
        assert entry["postprocess_options"] == expected
        assert str(pq) in entry["metadata"]["description"]


def test_imagenet_backbones():
    for size, crop in (("s", 641), ("l", 1025)):
        entry = MAX_DEEPLAB_PRESETS[f"max_deeplab_{size}_imagenet"]
        assert entry["kind"] == "backbone" and entry["pq"] is None
        assert (entry["config"], entry["crop_size"]) == (f"max_deeplab_{size}", crop)
        assert entry["source_url"] == (
            f"{CHECKPOINTS}max_deeplab_{size}_backbone_imagenet1k_strong_training_strategy.tar.gz"
        )
    for entry in MAX_DEEPLAB_PRESETS.values():
        assert entry["config"] in MAX_DEEPLAB_CONFIGS
        assert (entry["crop_size"] - 1) % 16 == 0


def test_aliases_name_the_best_checkpoint_of_each_size():
    for size in ("s", "l"):
        rows = [n for n in MODEL_ZOO if n.startswith(f"max_deeplab_{size}_")]
        best = max(rows, key=lambda n: MODEL_ZOO[n][2])
        assert MAX_DEEPLAB_PRESET_ALIASES[f"max_deeplab_{size}_coco"] == best
    assert MAX_DEEPLAB_PRESET_ALIASES == {
        "max_deeplab_s_coco": "max_deeplab_s_coco_1025_400k",
        "max_deeplab_l_coco": "max_deeplab_l_coco_1025_400k",
    }


def test_presets_property_lists_every_name_with_a_description():
    names = set(MAX_DEEPLAB_PRESETS) | set(MAX_DEEPLAB_PRESET_ALIASES)
    for cls in (MaXDeepLab, MaXDeepLabBackbone):
        presets = cls.presets
        assert set(presets) == names | set(EMBEDDED_PRESETS)
        for name, preset in presets.items():
            assert preset["metadata"]["description"] and preset["metadata"]["params"] > 0
            if name in EMBEDDED_PRESETS:  # shipped in the package: its folder
                assert os.path.isfile(os.path.join(preset["handle"], "task.weights.h5"))
            else:
                assert preset["handle"].startswith("hf://keras-maxdeeplab/")
    alias = MaXDeepLab.presets["max_deeplab_l_coco"]
    assert alias["metadata"]["description"].startswith("Alias of max_deeplab_l_coco_1025_400k.")
    assert alias["handle"] == "hf://keras-maxdeeplab/max_deeplab_l_coco_1025_400k"


def test_a_name_builds_its_architecture_offline(hf_cache):
    # No network and an empty cache: only the weights would need a download.
    model = MaXDeepLab.from_preset("max_deeplab_s_coco", load_weights=False)
    entry = MAX_DEEPLAB_PRESETS["max_deeplab_s_coco_1025_400k"]
    assert model.count_params() == entry["metadata"]["params"] == 77_990_256
    backbone_params = MAX_DEEPLAB_PRESETS["max_deeplab_s_imagenet"]["metadata"]["params"]
    assert model.backbone.count_params() == backbone_params
    assert model.backbone.image_shape == (1025, 1025, 3)
    assert model.backbone.num_mask_slots == 128
    assert model.preprocessor.image_converter.image_size == (1025, 1025)
    assert model.categories == COCO_PANOPTIC_CATEGORIES and model.num_classes == 134
    assert model.postprocess_options == dict(
        DEFAULT_POSTPROCESS_OPTIONS, thing_area_limit=256, stuff_area_limit=4096
    )


@pytest.mark.large
def test_large_presets_build_offline(hf_cache):
    model = MaXDeepLab.from_preset("max_deeplab_l_coco", load_weights=False)
    assert (
        model.count_params()
        == MAX_DEEPLAB_PRESETS["max_deeplab_l_coco_1025_400k"]["metadata"]["params"]
    )
    backbone = MaXDeepLabBackbone.from_preset("max_deeplab_l_imagenet", load_weights=False)
    assert (
        backbone.count_params()
        == MAX_DEEPLAB_PRESETS["max_deeplab_l_imagenet"]["metadata"]["params"]
    )
    backbone = MaXDeepLabBackbone.from_preset("max_deeplab_s_imagenet", load_weights=False)
    assert backbone.count_params() == 61_951_872
    assert backbone.image_shape == (641, 641, 3)
