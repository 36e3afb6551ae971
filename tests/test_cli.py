import os

import pytest

from keras_maxdeeplab.cli import main
from keras_maxdeeplab.conversion import convert_checkpoint
from tests.helpers import KMAX_ONE_BLOCK_PER_STAGE
from tests.helpers import save_one_block_preset
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


def test_presets_lists_the_table(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = "name kind params crop steps PQ PQ Th PQ St PQ deeplab2 cached size"
    assert lines[0].split() == header.split()
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:12]}
    assert (
        rows["max_deeplab_s_coco_1025_400k"]
        == "task 78.0M 1025 400k 49.0 54.0 41.4 49.54 no -".split()
    )
    assert rows["max_deeplab_l_coco_1025_100k"][:5] == ["task", "451.6M", "1025", "100k", "50.9"]
    assert rows["max_deeplab_s_imagenet"] == ["backbone", "62.0M", "641"] + ["-"] * 5 + ["no", "-"]
    assert "max_deeplab_s_coco -> max_deeplab_s_coco_1025_400k" in out


def test_presets_lists_deeplab2s_kmax_checkpoints(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("kmax_")}
    assert len(rows) == 17
    assert rows["kmax_r50_coco"] == "task 72.7M 1281 150k 53.0 58.3 44.9 53.5 no -".split()
    assert rows["kmax_axial_r50_coco"][:6] == ["task", "90.6M", "1281", "150k", "56.2", "62.2"]
    assert rows["kmax_r50_cityscapes"] == "task 57.2M 1025x2049 60k 64.3 57.7 69.1 64.65 no -".split()
    assert rows["kmax_convnext_large_coco"] == "task 244.0M 1281 150k 57.9 64.0 48.6 58.38 no -".split()
    assert rows["kmax_convnext_large_ade20k_1281"] == (
        "task 244.1M 1281 100k 50.9 51.0 50.7 50.92 no -".split()
    )
    assert rows["kmax_r50_ade20k_641"] == "task 72.7M 641 100k 41.5 40.4 43.7 41.47 no -".split()
    assert not any("unavailable" in line or "Not yet available" in line for line in lines)


def test_upload_writes_the_model_card_then_calls_keras_hub(tmp_path, monkeypatch, capsys):
    import huggingface_hub
    import keras_hub

    from keras_maxdeeplab.conversion import build_model

    folder = os.path.join(tmp_path, "tiny")
    build_model("max_deeplab_tiny", 65).save_to_preset(folder)
    calls = []

    def create_repo(repo_id, exist_ok):
        calls.append("create_repo")
        return type("RepoUrl", (), {"repo_id": "someone/" + repo_id})()

    def upload_file(path_or_fileobj, path_in_repo, repo_id):
        calls.append((path_in_repo, repo_id))

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_file", upload_file)
    monkeypatch.setattr(keras_hub, "upload_preset", lambda uri, preset: calls.append(uri))
    assert main(["upload", folder, "hf://tiny"]) == 0
    assert calls == ["create_repo", ("README.md", "someone/tiny"), "hf://tiny"]
    assert "to https://huggingface.co/someone/tiny" in capsys.readouterr().out
    with open(os.path.join(folder, "README.md")) as f:
        card = f.read()
    assert 'MaXDeepLab.from_preset("hf://tiny")' in card
    assert "it has no `conversion.json`" in card

    assert main(["upload", folder, "s3://bucket/tiny"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("maxdeeplab upload: error: Upload target must be a Hugging Face handle")
    assert len(error.strip().splitlines()) == 1


def test_predict_writes_valid_coco_panoptic_files(tmp_path, capsys):
    from keras_maxdeeplab.conversion import build_model
    from keras_maxdeeplab.data import COCOPanopticDataset

    preset = os.path.join(tmp_path, "tiny")
    build_model("max_deeplab_tiny", 65).save_to_preset(preset)
    images = shared_path("data", "coco_panoptic_sample", "input_images")
    output = os.path.join(tmp_path, "out")
    assert main(["predict", images, "--preset", preset, "--output", output]) == 0
    assert "Wrote 2 predictions" in capsys.readouterr().out
    names = sorted(os.listdir(images))
    assert sorted(os.listdir(os.path.join(output, "overlays"))) == [
        n.replace(".jpg", ".png") for n in names
    ]
    # The reader checks every PNG id against the JSON (ids, areas, categories).
    written = COCOPanopticDataset(
        images, os.path.join(output, "panoptic"), os.path.join(output, "panoptic.json")
    )
    for index in range(len(written)):
        image, label = written.load(index)
        assert label.shape == image.shape[:2]
    assert main(["predict", os.path.join(tmp_path, "nothing.jpg"), "--preset", preset]) == 1
    assert "nothing.jpg: no such image file or folder" in capsys.readouterr().err


def test_train_two_steps_then_resume(tmp_path, capsys):
    import json

    from keras_maxdeeplab import MaXDeepLab
    from keras_maxdeeplab.data import SYNTHETIC_CATEGORIES
    from keras_maxdeeplab.data import write_synthetic_panoptic_dataset

    data = os.path.join(tmp_path, "data")
    write_synthetic_panoptic_dataset(data, 4, seed=0)
    missing = sorted(os.listdir(os.path.join(data, "images")))[0]
    os.remove(os.path.join(data, "images", missing))
    output = os.path.join(tmp_path, "run")
    preset = os.path.join(tmp_path, "tiny")
    save_one_block_preset(preset)
    command = ["train", data, "--output", output, "--preset", preset]
    command += ["--batch-size", "2", "--quiet", "--skip-errors"]

    def record():
        with open(os.path.join(output, "training.json")) as f:
            return json.load(f)

    assert main(command + ["--steps", "2", "--steps-per-epoch", "1"]) == 0
    assert record()["steps_done"] == 2
    assert "function" not in json.dumps(record()["arguments"])
    assert f"Skipped a sample: {os.path.join(data, 'images', missing)}: file not found" in (
        capsys.readouterr().out
    )
    # Resumed in another epoch length: counted in steps, one more trained.
    assert main(command + ["--steps", "3", "--steps-per-epoch", "2"]) == 0
    assert record()["steps_done"] == 3
    out = capsys.readouterr().out
    assert "Resuming at step 2 of 3" in out and "Trained to step 3" in out
    model = MaXDeepLab.from_preset(os.path.join(output, "preset"))
    assert [c["id"] for c in model.categories] == [c["id"] for c in SYNTHETIC_CATEGORIES]
    assert main(["train", data, "--output", output]) == 1
    assert "exactly one of --preset" in capsys.readouterr().err


def test_train_refuses_devices_it_cannot_use(tmp_path, capsys):
    import keras

    from keras_maxdeeplab.data import write_synthetic_panoptic_dataset

    data = os.path.join(tmp_path, "data")
    write_synthetic_panoptic_dataset(data, 2, seed=0)
    command = ["train", data, "--output", os.path.join(tmp_path, "run")]
    command += ["--config", "max_deeplab_tiny", "--crop-size", "65"]
    assert main(command + ["--devices", "3", "--batch-size", "8"]) == 1
    assert "cannot be split evenly over --devices 3" in capsys.readouterr().err
    assert main(command + ["--devices", "64", "--batch-size", "64", "--precision", "bf16"]) == 1
    expected = {"torch": "not available on the 'torch' backend"}.get(
        keras.backend.backend(), "64 devices requested"
    )
    assert expected in capsys.readouterr().err
    assert keras.mixed_precision.global_policy().name == "float32"


def test_train_stops_at_a_bad_sample_in_one_line(tmp_path):
    from keras_maxdeeplab.data import write_synthetic_panoptic_dataset
    from tests.helpers import run_python

    data = os.path.join(tmp_path, "data")
    write_synthetic_panoptic_dataset(data, 4, seed=0)
    missing = os.path.join(data, "images", sorted(os.listdir(os.path.join(data, "images")))[1])
    os.remove(missing)
    command = ["train", data, "--output", os.path.join(tmp_path, "run"), "--config"]
    command += ["max_deeplab_tiny", "--crop-size", "65", "--batch-size", "2", "--steps", "3"]
    # A child process: the issue was a hang; the timeout turns one into a failure.
    cli = "import sys; from keras_maxdeeplab.cli import main; sys.exit(main())"
    code, _, err = run_python(cli, *command, timeout=900)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("maxdeeplab")]
    assert errors == [
        f"maxdeeplab train: error: {missing}: file not found. (pass --skip-errors to leave out "
        "unreadable samples)"
    ]
    assert "Traceback" not in err


def test_export_refuses_a_format_this_backend_cannot_write_before_loading(tmp_path, capsys):
    from keras_maxdeeplab.backend_seam import export_formats
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_export import EXPORT_FORMATS

    format = next(f for f in EXPORT_FORMATS if f not in export_formats())
    output = str(tmp_path / "served")
    code = main(["export", "max_deeplab_tiny_synthetic", "--format", format, "--output", output])
    assert code == 1
    error = capsys.readouterr().err
    assert error.startswith("maxdeeplab export: error: ") and f"'{format}'" in error
    assert not os.listdir(tmp_path)


def test_export_refuses_a_bad_input_size_before_loading(tmp_path, capsys):
    output = str(tmp_path / "served")
    code = main(
        ["export", "max_deeplab_tiny_synthetic", "--output", output, "--input-size", "0", "64"]
    )
    assert code == 1
    error = capsys.readouterr().err
    assert error.startswith("maxdeeplab export: error: input_size must be (height, width)")
    assert "[0, 64]" in error
    assert not os.listdir(tmp_path)


def test_convert_predict_and_evaluate_a_kmax_checkpoint(tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from keras_maxdeeplab import KMaXDeepLab
    from keras_maxdeeplab.coco import rgb2id
    from keras_maxdeeplab.evaluation import format_results
    from keras_maxdeeplab.evaluation import pq_compute

    preset = str(tmp_path / "kmax")
    checkpoint = shared_path("reference", "kmax_deeplab_tiny", "ckpt")
    command = ["convert", checkpoint, "--config", "kmax_r50_tiny", "--output", preset]
    assert main(command + ["--crop-size", "65", "--override", "num_mask_slots=8"]) == 1
    assert "--override applies to MaX-DeepLab configs" in capsys.readouterr().err
    # A COCO checkpoint read as ADE20K's: its class heads have 134 channels, not 151.
    assert main(command + ["--crop-size", "65", "--dataset", "ade20k"]) == 1
    error = capsys.readouterr().err
    assert "134" in error and "151" in error and not os.path.exists(preset)
    max_command = ["convert", checkpoint, "--output", preset, "--dataset", "ade20k"]
    assert main(max_command) == 1
    assert "--dataset applies to kMaX-DeepLab configs" in capsys.readouterr().err
    assert main(command + ["--crop-size", "65"]) == 0
    model = KMaXDeepLab.from_preset(preset)
    assert model.backbone.image_shape == (65, 65, 3)

    folder = shared_path("data", "coco_panoptic_sample")
    annotations = os.path.join(folder, "panoptic_examples.json")
    images = os.path.join(folder, "input_images")
    output = str(tmp_path / "out")
    command = ["predict", images, "--preset", preset, "--output", output, "--no-overlays"]
    assert main(command + ["--annotations", annotations]) == 0
    with open(os.path.join(output, "panoptic.json")) as f:
        written = {a["file_name"]: a["segments_info"] for a in json.load(f)["annotations"]}
    segments = 0
    for name in sorted(os.listdir(images)):
        png_name = name.replace(".jpg", ".png")
        ids = rgb2id(np.asarray(Image.open(os.path.join(output, "panoptic", png_name))))
        (result,) = model.predict_panoptic(np.asarray(Image.open(os.path.join(images, name))))
        predicted = np.asarray(result["panoptic_pred"])
        # kMaX's maskwise post-processor's segments, one to one, with their classes.
        pairs = np.unique(np.stack([ids.ravel(), predicted.ravel()]), axis=1)
        assert len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]
        listed = {s["id"] for s in written[png_name]}
        assert listed == set(np.unique(ids)) - {0}
        segments += len(listed)
    assert segments > 0

    capsys.readouterr()
    gt_folder = os.path.join(folder, "panoptic_examples")
    command = ["evaluate", "--annotations", annotations, "--panoptic", gt_folder]
    assert main(command + ["--images", images, "--preset", preset]) == 0
    expected = pq_compute(annotations, os.path.join(output, "panoptic.json"), gt_folder)
    assert capsys.readouterr().out.endswith(format_results(expected) + "\n")

    # export: the maskwise pipeline in an artifact, run by its own runtime.
    import importlib.util

    from keras_maxdeeplab.backend_seam import export_formats
    from tests.models.export_runtimes import RUNTIMES
    from tests.models.test_max_deeplab_export import RUNTIME_MODULES

    # The quickest exporter of the backend (torch.export's .pt2 on PyTorch, not ONNX).
    runnable = [f for f in export_formats() if importlib.util.find_spec(RUNTIME_MODULES[f])]
    format = next(f for f in ("tf_saved_model", "torch", *runnable) if f in runnable)
    served = str(tmp_path / "served")
    assert main(["export", preset, "--output", served, "--format", format]) == 0
    path = capsys.readouterr().out.split(f"Wrote {format} artifact ", 1)[1].split(":")[0]
    io = np.load(shared_path("reference", "kmax_deeplab_tiny", "io.npz"))
    image = np.ceil(io["s65/input/image_0_255"]).astype("uint8")
    (result,) = model.predict_panoptic(image)
    got = RUNTIMES[format](path)(image)["panoptic_pred"][0]
    np.testing.assert_array_equal(got, result["panoptic_pred"])
    assert len(np.unique(got)) >= 2  # a segment and void (deeplab2's default thresholds)


def test_train_a_kmax_preset_with_its_recipe(tmp_path, capsys):
    """kMaX-DeepLab through `train`: deeplab2's kMaX recipe (AdamW 5e-4, weight
    decay 0.05), the sample count checked against the crop, a kMaX preset out.
    A one-block kMaX preset trains here (the tiny config's step took 50 s to
    compile on JAX); `--config kmax_r50_tiny` builds and compiles the same
    recipe in test_train_compiles_each_familys_deeplab2_recipe."""
    import json

    from keras_maxdeeplab import KMaXDeepLab
    from keras_maxdeeplab.data import SYNTHETIC_CATEGORIES
    from keras_maxdeeplab.data import write_synthetic_panoptic_dataset
    from keras_maxdeeplab.hub import task_class
    from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model

    data = os.path.join(tmp_path, "data")
    write_synthetic_panoptic_dataset(data, 2, seed=0)
    pretrained = os.path.join(tmp_path, "kmax_one_block")
    build_kmax_model("kmax_r50_tiny", 65, overrides=KMAX_ONE_BLOCK_PER_STAGE).save_to_preset(
        pretrained
    )
    output = os.path.join(tmp_path, "run")
    command = ["train", data, "--output", output, "--preset", pretrained]
    command += ["--batch-size", "2", "--quiet", "--steps", "1", "--steps-per-epoch", "1"]
    # deeplab2's 4096 sampled pixels do not fit in a 65 crop's 17 x 17 at stride 4.
    assert main(command) == 1
    assert "instance_discrimination_sample_k=4096 must be in 1..289" in capsys.readouterr().err
    assert main(command + ["--instance-discrimination-sample-k", "64"]) == 0
    with open(os.path.join(output, "training.json")) as f:
        assert json.load(f)["steps_done"] == 1
    preset = os.path.join(output, "preset")
    assert task_class(preset) is KMaXDeepLab
    model = KMaXDeepLab.from_preset(preset)
    assert [c["id"] for c in model.categories] == [c["id"] for c in SYNTHETIC_CATEGORIES]
    assert os.listdir(os.path.join(output, "checkpoints"))
    assert main(["train", data, "--output", output, "--config", "max_deeplab_tiny",
                 "--instance-discrimination-sample-k", "64"]) == 1  # fmt: skip
    assert "--instance-discrimination-sample-k is a kMaX-DeepLab option" in capsys.readouterr().err


@pytest.mark.parametrize(
    "config, extra, recipe",
    [
        ("kmax_r50_tiny", ["--instance-discrimination-sample-k", "64"], (5e-4, 0.05, 1.0)),
        ("kmax_r50_tiny", ["--learning-rate", "1e-4", "--instance-discrimination-sample-k", "8"], (1e-4, 0.05, 1.0)),
        ("max_deeplab_tiny", [], (1e-3, 0.0, 1.0)),
    ],
)  # fmt: skip
def test_train_compiles_each_familys_deeplab2_recipe(config, extra, recipe):
    from keras_maxdeeplab.cli import build_parser
    from keras_maxdeeplab.cli.train import _compile
    from keras_maxdeeplab.cli.train import build_model
    from keras_maxdeeplab.data import SYNTHETIC_CATEGORIES

    command = ["train", "data", "--output", "out", "--config", config, "--crop-size", "65"]
    args = build_parser().parse_args(command + ["--steps", "300", "--warmup-steps", "30"] + extra)
    model = build_model(args, SYNTHETIC_CATEGORIES)
    _compile(model, args)
    optimizer = model.optimizer
    schedule = optimizer.get_config()["learning_rate"]["config"]
    learning_rate, weight_decay, multiplier = recipe
    assert (schedule["initial_learning_rate"], schedule["decay_steps"]) == (learning_rate, 300)
    assert schedule["warmup_steps"] == 30
    assert optimizer.weight_decay_rate == weight_decay
    assert optimizer.learning_rate_multiplier == multiplier  # from scratch: no pretrained part
    if config.startswith("kmax"):
        assert model.max_deeplab_loss.instance_discrimination_sample_k == int(extra[-1])
