import json
import os

import numpy as np

from keras_maxdeeplab.cli import main
from keras_maxdeeplab.data import COCOPanopticDataset
from keras_maxdeeplab.demo import DEMO_PRESET
from keras_maxdeeplab.evaluation import pq_compute


def test_demo_segments_held_out_scenes_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output = os.path.join(tmp_path, "demo")
    assert main(["demo", "--output", output, "--scenes", "4"]) == 0
    printed = capsys.readouterr().out
    assert "PQ on 4 held-out synthetic scenes" in printed
    assert sorted(n for n in os.listdir(output) if n.endswith(".png")) == [
        f"scene_{i:02d}.png" for i in range(4)
    ]
    # The exported predictions are valid COCO panoptic files, and the official
    # rules on them give the PQ the demo printed.
    scenes = os.path.join(output, "scenes")
    predictions = os.path.join(output, "predictions")
    written = COCOPanopticDataset(
        os.path.join(scenes, "images"),
        os.path.join(predictions, "panoptic"),
        os.path.join(predictions, "panoptic.json"),
    )
    assert len(written) == 4 and all(written.load(i)[1].any() for i in range(4))
    results = pq_compute(
        os.path.join(scenes, "panoptic.json"), os.path.join(predictions, "panoptic.json")
    )
    assert f"All       | {100 * results['All']['pq']:5.1f}" in printed
    # The embedded model was trained for this: held-out scenes are segmented well.
    with open(os.path.join(DEMO_PRESET, "training.json")) as f:
        trained = json.load(f)
    assert trained["held_out"]["All"]["pq"] >= 0.8
    assert results["All"]["pq"] >= 0.7, printed


def test_demo_refuses_missing_photos(capsys):
    assert main(["demo", "--preset", DEMO_PRESET, "--images", "missing.jpg"]) == 1
    assert "Cannot read image missing.jpg" in capsys.readouterr().err


def test_the_embedded_preset_loads_by_name(capsys):
    from keras_maxdeeplab import MaXDeepLab
    from keras_maxdeeplab import MaXDeepLabBackbone
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import EMBEDDED_PRESETS

    by_name = MaXDeepLab.from_preset("max_deeplab_tiny_synthetic")
    by_folder = MaXDeepLab.from_preset(DEMO_PRESET)
    for a, b in zip(by_name.weights, by_folder.weights):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))
    entry = EMBEDDED_PRESETS["max_deeplab_tiny_synthetic"]
    assert by_name.count_params() == entry["metadata"]["params"]
    assert by_name.backbone.image_shape[:2] == (entry["crop_size"],) * 2
    assert "max_deeplab_tiny_synthetic" in MaXDeepLab.presets
    backbone = MaXDeepLabBackbone.from_preset("max_deeplab_tiny_synthetic")
    np.testing.assert_array_equal(
        np.asarray(backbone.weights[0].numpy()), np.asarray(by_name.backbone.weights[0].numpy())
    )
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (row,) = [line.split() for line in lines if line.startswith("max_deeplab_tiny_synthetic")]
    assert row[:5] == ["max_deeplab_tiny_synthetic", "task", "0.9M", "129", "4k"]
    assert row[-3] == "embedded"
