"""deeplab2's ImageNet-pretrained backbones: the pretrained pixel path only,
directly and converted on first use by `MaXDeepLabBackbone.from_preset`."""

import json
import os

import numpy as np
import pytest

from keras_maxdeeplab import MaXDeepLabBackbone
from keras_maxdeeplab.conversion import deeplab2_key_to_path
from keras_maxdeeplab.conversion import load_imagenet_backbone
from keras_maxdeeplab.conversion import read_checkpoint
from keras_maxdeeplab.conversion.preset_cache import cached_preset
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESETS
from keras_maxdeeplab.optimizers import is_pretrained_backbone_variable
from tests.helpers import TINY_BACKBONE
from tests.helpers import shared_path
from tests.helpers import to_numpy
from tests.hub_helpers import ArchiveServer
from tests.hub_helpers import checkpoint_archive
from tests.hub_helpers import offline_hf_cache
from tests.hub_helpers import write_checkpoint

CLASSIFIER = "backbone/_head/kernel/.ATTRIBUTES/VARIABLE_VALUE"


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """deeplab2's tiny checkpoint dressed as an ImageNet one: the pretrained
    encoder under TF Model Garden's prefix, plus a classifier; written as a
    TF checkpoint. Returns (checkpoint folder, {key: array})."""
    arrays = read_checkpoint(shared_path("reference", "max_deeplab_tiny", "ckpt"))
    backbone = MaXDeepLabBackbone(image_shape=(65, 65, 3), **TINY_BACKBONE)
    weights = {w.path: w for w in backbone.weights}
    dressed = {CLASSIFIER: np.zeros((64, 1000), "float32")}
    for key, value in arrays.items():
        weight = weights.get(deeplab2_key_to_path(key))
        if key.startswith("encoder/") and is_pretrained_backbone_variable(weight):
            dressed["backbone/_encoder/" + key[len("encoder/") :]] = value
    folder = tmp_path_factory.mktemp("imagenet") / "max_deeplab_tiny_imagenet"
    folder.mkdir()
    write_checkpoint(str(folder / "ckpt-0"), dressed)
    return str(folder), dressed


def _pretrained_path(key):
    return deeplab2_key_to_path("encoder/" + key[len("backbone/_encoder/") :])


def _check_loaded(backbone, dressed, fresh_before):
    weights = {w.path: w for w in backbone.weights}
    pretrained = {_pretrained_path(k) for k in dressed if k != CLASSIFIER}
    assert len(pretrained) > 100 and pretrained <= set(weights)
    for key, value in dressed.items():
        if key != CLASSIFIER:
            np.testing.assert_array_equal(to_numpy(weights[_pretrained_path(key)]), value)
    fresh = [path for path in weights if path not in pretrained]
    assert fresh and all("transformer" in p or "extra" in p or "memory" in p for p in fresh)
    if fresh_before is not None:
        for path in fresh:
            np.testing.assert_array_equal(to_numpy(weights[path]), fresh_before[path])


def test_loads_the_pretrained_part_only(imagenet):
    folder, dressed = imagenet
    backbone = MaXDeepLabBackbone(image_shape=(65, 65, 3), **TINY_BACKBONE)
    before = {w.path: to_numpy(w) for w in backbone.weights}
    assert load_imagenet_backbone(backbone, folder) == [CLASSIFIER]
    _check_loaded(backbone, dressed, before)


def test_a_missing_pretrained_weight_is_refused(imagenet, tmp_path):
    _, dressed = imagenet
    missing = dict(dressed)
    del missing["backbone/_encoder/_stage2/_block1/_conv1_bn_act/_conv/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    write_checkpoint(str(tmp_path / "ckpt-0"), missing)
    backbone = MaXDeepLabBackbone(image_shape=(65, 65, 3), **TINY_BACKBONE)
    with pytest.raises(ValueError, match="1 model weights are not in the checkpoint"):
        load_imagenet_backbone(backbone, str(tmp_path))


def test_first_use_of_an_imagenet_preset(imagenet, tmp_path, monkeypatch):
    folder, dressed = imagenet
    offline_hf_cache(tmp_path, monkeypatch)
    archive = "max_deeplab_tiny_backbone_imagenet1k.tar.gz"
    entry = dict(
        MAX_DEEPLAB_PRESETS["max_deeplab_s_imagenet"],
        config="max_deeplab_tiny",
        crop_size=65,
        archive=archive,
    )
    monkeypatch.setitem(MAX_DEEPLAB_PRESETS, "max_deeplab_tiny_imagenet", entry)
    files = {name: os.path.join(folder, name) for name in os.listdir(folder)}
    data = checkpoint_archive(str(tmp_path / archive), "max_deeplab_tiny_imagenet", files)
    with ArchiveServer({f"/{archive}": data}) as server:
        monkeypatch.setenv("KERAS_MAXDEEPLAB_CHECKPOINT_URL", server.url)
        backbone = MaXDeepLabBackbone.from_preset("max_deeplab_tiny_imagenet")
    _check_loaded(backbone, dressed, None)
    with open(os.path.join(cached_preset("max_deeplab_tiny_imagenet"), "conversion.json")) as f:
        record = json.load(f)
    assert record["skipped_variables"] == [CLASSIFIER]
    # Cached: the same weights again with no server.
    again = MaXDeepLabBackbone.from_preset("max_deeplab_tiny_imagenet")
    for a, b in zip(backbone.weights, again.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
