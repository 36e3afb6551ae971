import json
import os

import numpy as np
import pytest

from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab.cli import main
from keras_maxdeeplab.conversion import convert_checkpoint
from tests.helpers import relative_error
from tests.helpers import shared_path
from tests.helpers import to_numpy


def test_convert_to_preset_and_load(tmp_path):
    io = np.load(shared_path("reference", "max_deeplab_tiny", "io.npz"))
    checkpoint = shared_path("reference", "max_deeplab_tiny", "ckpt")
    output = os.path.join(tmp_path, "tiny_preset")
    converted = convert_checkpoint(checkpoint, output, config="max_deeplab_tiny", crop_size=65)
    record = json.load(open(os.path.join(output, "conversion.json")))
    assert record["crop_size"] == 65 and record["config"] == "max_deeplab_tiny"
    assert record["source_sha256"]["ckpt-0.index"].startswith("717ce7b0")
    for name in ("config.json", "model.weights.h5", "task.json", "preprocessor.json"):
        assert os.path.exists(os.path.join(output, name)), name

    loaded = MaXDeepLab.from_preset(output)
    images = io["s65/input/image_normalized"]
    expected = to_numpy(converted(images))
    got = to_numpy(loaded(images))
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    assert (
        relative_error(got["pixel_space_mask_logits"], io["s65/output/pixel_space_mask_logits"])
        < 1e-4
    )
    # The preset's preprocessor reproduces deeplab2's input.
    np.testing.assert_allclose(
        to_numpy(loaded.preprocessor(io["image/decoded_uint8"])), images[0], atol=1e-5
    )


def test_failed_conversion_leaves_nothing(tmp_path):
    output = os.path.join(tmp_path, "bad_preset")
    with pytest.raises(ValueError, match="shape mismatches"):
        convert_checkpoint(
            shared_path("reference", "max_deeplab_tiny", "ckpt"),
            output,
            config="max_deeplab_tiny",
            crop_size=65,
            overrides={"memory_channels": 64},
        )
    assert os.listdir(tmp_path) == []


def test_cli_convert_errors_in_one_message(tmp_path, capsys):
    code = main(["convert", str(tmp_path), "--output", os.path.join(tmp_path, "out")])
    assert code == 1
    error = capsys.readouterr().err
    assert error.startswith("maxdeeplab convert: error: No TensorFlow checkpoint found")
    assert "Traceback" not in error


def test_cli_convert_tiny(tmp_path, capsys):
    output = os.path.join(tmp_path, "preset")
    code = main(
        [
            "convert",
            shared_path("reference", "max_deeplab_tiny", "ckpt"),
            "--config",
            "max_deeplab_tiny",
            "--crop-size",
            "65",
            "--output",
            output,
            "--override",
            "num_mask_slots=32",
            "--override",
            "low_level_channels=[16, 8]",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert os.path.exists(os.path.join(output, "model.weights.h5"))
    record = json.load(open(os.path.join(output, "conversion.json")))
    assert record["overrides"] == {"num_mask_slots": 32, "low_level_channels": [16, 8]}


def test_cli_convert_refuses_to_replace_what_is_not_a_preset(tmp_path, capsys):
    checkpoint = shared_path("reference", "max_deeplab_tiny", "ckpt")
    base = ["convert", checkpoint, "--config", "max_deeplab_tiny", "--crop-size", "65"]
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"precious")
    assert main(base + ["--output", str(photos)]) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(base + ["--output", str(photos), "--overwrite"]) == 1
    assert "is not a preset folder" in capsys.readouterr().err
    assert (photos / "holiday.jpg").read_bytes() == b"precious"

    preset = str(tmp_path / "preset")
    assert main(base + ["--output", preset]) == 0
    assert main(base + ["--output", preset, "--overwrite"]) == 0, capsys.readouterr().err
    assert os.path.isfile(os.path.join(preset, "conversion.json"))
