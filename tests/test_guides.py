"""Runs every guide end to end at small scale (`GUIDES_SMALL=1`), as a user would.

Each guide runs as `python guides/NAME.py` in a temporary folder (where it writes
its files) on the current backend. Guides 1, 3 and 4 only run on PyTorch (their
code is backend-agnostic and the other backends are covered by the fine-tuning
guide), to keep the suite's time in check: at small scale the three take 47 s
on PyTorch, eagerly, against 139 s on JAX, mostly compiling, and JAX's suite is
the longest.
"""

import json
import os
import re
import subprocess
import sys

import keras
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TINY = os.path.join(REPO, "..", "shared", "reference", "max_deeplab_tiny")
BACKEND = keras.backend.backend()
torch_only = pytest.mark.skipif(
    BACKEND != "torch",
    reason="runs on PyTorch only; the fine-tuning guide runs on every backend",
)


def run_guide(name, workdir):
    env = {
        **os.environ,
        "GUIDES_SMALL": "1",
        "KERAS_BACKEND": BACKEND,
        "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
        "MPLBACKEND": "Agg",
    }
    completed = subprocess.run(
        [sys.executable, os.path.join(REPO, "guides", f"{name}.py")],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


def printed_pq(output, row="All"):
    """The PQ column of every `format_results` table row `row` printed, in order."""
    return [float(pq) for pq in re.findall(rf"^{row}\s+\|\s+([\d.]+)", output, re.MULTILINE)]


def printed_list(output, prefix):
    line = next(line for line in output.splitlines() if line.startswith(prefix))
    return json.loads(line[len(prefix) :])


def test_fine_tuning_guide(tmp_path):
    output = run_guide("fine_tuning_max_deeplab", tmp_path)
    assert f"backend: {BACKEND}, scale: small" in output
    assert "preset: max_deeplab_tiny_synthetic" in output
    # Fresh class heads recognise nothing; 40 steps make them good on held-out scenes.
    before, after = printed_pq(output)
    assert before == 0.0
    assert after >= 50.0, output
    assert f"PQ before: 0.0, after: {after:.1f}" in output
    losses = printed_list(output, "loss per epoch: ")
    assert len(losses) == 2 and losses[1] < losses[0]
    assert printed_list(output, "validation PQ per epoch: ")[-1] > 0.3
    assert "reloaded model segments identically: True" in output
    assert "reloaded categories: ['ball', 'block', 'sky', 'grass', 'water', 'sand']" in output
    # The callbacks and the preset wrote their files.
    with open(tmp_path / "training_log.csv") as f:
        assert len(f.read().strip().splitlines()) == 3  # header + 2 epochs
    for path in ("checkpoints/best.weights.h5", "my_preset/task.weights.h5",
                 "held_out_after_fine_tuning.png"):
        assert (tmp_path / path).stat().st_size > 0, path


@torch_only
def test_panoptic_segmentation_guide(tmp_path):
    from keras_maxdeeplab.evaluation import pq_compute

    output = run_guide("panoptic_segmentation_with_max_deeplab", tmp_path)
    assert "preset: max_deeplab_tiny_synthetic" in output
    assert "20 annotated images" in output
    # The printed PQ is the official rules' on the files the guide exported.
    scores = pq_compute(
        str(tmp_path / "annotated" / "panoptic.json"),
        str(tmp_path / "annotated_predictions" / "panoptic.json"),
    )
    assert printed_pq(output) == [float(f"{100 * scores['All']['pq']:.1f}")]
    assert scores["All"]["pq"] > 0.7
    with open(tmp_path / "predictions" / "panoptic.json") as f:
        exported = json.load(f)
    assert len(exported["annotations"]) == 3
    assert all(a["segments_info"] for a in exported["annotations"])
    assert (tmp_path / "prediction.png").stat().st_size > 0


@torch_only
def test_inside_the_mask_transformer_guide(tmp_path):
    output = run_guide("inside_the_mask_transformer", tmp_path)
    assert "preset: max_deeplab_tiny_synthetic" in output
    assert "pixel_space_mask_logits          (1, 33, 33, 32)" in output
    # Every ground-truth mask of the scene is matched to a distinct confident slot.
    matched = printed_list(output, "matched slots: ")
    confident = printed_list(output, "confident slots: ")
    assert len(matched) == len(set(matched)) >= 3
    assert set(matched) <= set(confident)
    dices = [float(d) for d in re.findall(r"-> slot\s+\d+: dice ([\d.]+)", output)]
    assert len(dices) == len(matched) and min(dices) > 0.5
    terms = dict(re.findall(r"^(\w+_loss\w*|total_loss)\s+([\d.]+)$", output, re.MULTILINE))
    assert float(terms["total_loss"]) == pytest.approx(
        sum(float(v) for k, v in terms.items() if k != "total_loss"), abs=5e-4
    )
    # The short training run from scratch lowers the total loss.
    first, last = re.search(r"^loss\s+first epoch ([\d.]+) -> last epoch ([\d.]+)", output,
                            re.MULTILINE).groups()
    assert float(last) < float(first)
    # The attention of both transformer blocks, at stride 16 of the 129 crop.
    assert ("stage5_extra/block1_transformer {'memory_to_pixel': (1, 8, 32, 9, 9), "
            "'memory_to_memory': (1, 8, 32, 32), 'pixel_to_memory': (1, 8, 9, 9, 32)}") in output
    shares = [int(p) for p in re.findall(r"^slot\s+\d+: (\d+)% of its attention on pixels", output,
                                         re.MULTILINE)]
    assert len(shares) == len(confident) and all(0 < p <= 100 for p in shares)


@torch_only
@pytest.mark.skipif(
    not os.path.isdir(os.path.join(SHARED_TINY, "ckpt")),
    reason="needs deeplab2's tiny checkpoint in ../shared/reference/max_deeplab_tiny",
)
def test_converting_deeplab2_checkpoints_guide(tmp_path):
    output = run_guide("converting_deeplab2_checkpoints", tmp_path)
    assert "exit code: 0" in output
    errors = [float(e) for e in re.findall(r"max relative error ([\d.e+-]+)", output)]
    assert len(errors) == 4 and max(errors) < 1e-4
    assert float(re.search(r"max \|ours - deeplab2\| = ([\d.e+-]+)", output).group(1)) < 1e-4
    assert "differing pixels: 0 of 16641" in output
    assert "identical outputs: True" in output
    assert "wrong_preset written: False" in output
    card = (tmp_path / "tiny_preset" / "README.md").read_text()
    assert "hf://my-org/max_deeplab_tiny_deeplab2" in card and card in output
    for preset in ("tiny_preset", "tiny_preset_cli"):
        assert (tmp_path / preset / "model.weights.h5").stat().st_size > 0
