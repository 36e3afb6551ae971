import os


from keras_maxdeeplab.cli import main
from keras_maxdeeplab.conversion import convert_checkpoint
from tests.helpers import shared_path


def test_evaluate_ground_truth_against_itself(capsys):
    gt = shared_path("data", "coco_panoptic_sample", "panoptic_examples.json")
    assert main(["evaluate", "--annotations", gt, "--predictions", gt]) == 0
    table = capsys.readouterr().out
    assert "All       | 100.0  100.0  100.0" in table


def test_evaluate_a_preset_end_to_end(tmp_path, capsys):
    preset = os.path.join(tmp_path, "tiny")
    convert_checkpoint(
        shared_path("reference", "max_deeplab_tiny", "ckpt"),
        preset,
        config="max_deeplab_tiny",
        crop_size=129,
    )
    folder = shared_path("data", "coco_panoptic_sample")
    code = main(
        [
            "evaluate",
            "--annotations",
            os.path.join(folder, "panoptic_examples.json"),
            "--panoptic",
            os.path.join(folder, "panoptic_examples"),
            "--images",
            os.path.join(folder, "input_images"),
            "--preset",
            preset,
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "Things    |" in capsys.readouterr().out


def test_evaluate_bad_arguments(capsys):
    gt = shared_path("data", "coco_panoptic_sample", "panoptic_examples.json")
    assert main(["evaluate", "--annotations", gt]) == 1
    assert "needs --predictions" in capsys.readouterr().err
