"""Issue item: preset config numbers had no bounds (num_mask_slots=10**7
allocated 5 GB for 43 s before a shape error; a huge block count built
without end). Now each is checked before anything is built."""

import json
import os
import shutil
import time

import pytest

from keras_maxdeeplab import MAX_DEEPLAB_CONFIGS
from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab import MaXDeepLabBackbone
from keras_maxdeeplab.demo import DEMO_PRESET

TINY = MAX_DEEPLAB_CONFIGS["max_deeplab_tiny"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_mask_slots": 10**7}, "num_mask_slots must be between 1 and 1024; got 10000000"),
        ({"num_mask_slots": 10**9}, "num_mask_slots must be between 1 and 1024"),
        ({"num_mask_slots": 12.5}, "num_mask_slots must be a whole number"),
        ({"num_blocks": (3, 4, 10**6, 3)}, "num_blocks must be between 1 and 64"),
        ({"num_blocks": (3, 4)}, "num_blocks must be 4 whole numbers"),
        ({"memory_channels": -1}, "memory_channels must be between 1 and 8192"),
        ({"backbone_layer_multiplier": 1e6}, r"backbone_layer_multiplier must be in \(0, 16\]"),
        ({"drop_path_keep_prob": 0}, r"drop_path_keep_prob must be in \(0, 1\]"),
        ({"extra_decoder_use_transformer_beyond_stride": 7}, "must be one of"),
        ({"image_shape": (10**6 + 1, 65, 3)}, "16k \\+ 1"),
    ],
)
def test_absurd_numbers_are_refused_at_once(change, message):
    arguments = {"image_shape": (65, 65, 3), **TINY, **change}
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        MaXDeepLabBackbone(**arguments)
    assert time.perf_counter() - start < 5


def _edit(folder, name, change):
    path = os.path.join(folder, name)
    with open(path) as f:
        data = json.load(f)
    change(data["config"])
    with open(path, "w") as f:
        json.dump(data, f)


def test_a_preset_config_with_absurd_numbers_is_refused(tmp_path):
    for name, change, message in (
        (
            "task.json",
            lambda c: c["backbone"]["config"].update(num_mask_slots=10**7),
            "num_mask_slots must be between 1 and 1024",
        ),
        ("config.json", lambda c: c.update(num_blocks=[3, 4, 10**6, 3]), "num_blocks must be"),
        ("task.json", lambda c: c.update(decoder_channels=10**6), "decoder_channels must be"),
    ):
        folder = str(tmp_path / f"{name}_{message[:8]}")
        shutil.copytree(DEMO_PRESET, folder)
        _edit(folder, name, change)
        load = MaXDeepLabBackbone.from_preset if name == "config.json" else MaXDeepLab.from_preset
        with pytest.raises(ValueError, match=message):
            load(folder)
