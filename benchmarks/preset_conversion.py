"""Peak memory of converting full MaX-DeepLab-S on first use, against the archive's size.

    python benchmarks/preset_conversion.py [--crop-size 641] [--work-dir DIR]

Writes a checkpoint in deeplab2's training layout (every MaX-DeepLab-S
variable, keyed as `../shared/reference/max_deeplab_s/variables.txt` lists
them, random values, plus Adam's two slots per trainable weight and the step
counters, as deeplab2's trainer saves them), packs it as deeplab2 publishes
checkpoints (`.tar.gz`), serves it on 127.0.0.1 and runs
`MaXDeepLab.from_preset(NAME)` in a fresh process (download, extraction,
conversion, atomic write into the cache, load). Each measured process reports
its peak resident memory (`VmHWM`, Linux); the table puts beside it a process
that only builds the model and loads the converted preset, and one that reads
every model variable of the checkpoint into memory first (the conversion
before it streamed variables one at a time).
"""

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from measured_child import run_measured  # noqa: E402  (beside this script)
from tests.hub_helpers import write_checkpoint  # noqa: E402  (the test suite's writer)

VARIABLES = os.path.join(
    os.path.dirname(REPO), "shared", "reference", "max_deeplab_s", "variables.txt"
)
NAME = "max_deeplab_s_benchmark"
ARCHIVE = "max_deeplab_s_benchmark_coco_train.tar.gz"

# Run in a child process: register the benchmark preset, then one of the steps.
CHILD = """
import sys, time
from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESETS
step, crop, archive, arg = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
MAX_DEEPLAB_PRESETS[{name!r}] = dict(
    MAX_DEEPLAB_PRESETS["max_deeplab_s_coco_641_400k"], crop_size=crop, archive=archive)
start = time.perf_counter()
if step == "first_use":
    MaXDeepLab.from_preset({name!r}, checkpoint_base_url=arg)
elif step == "cached":
    MaXDeepLab.from_preset({name!r})
elif step == "read_all":
    from keras_maxdeeplab.conversion import build_model, read_checkpoint
    model = build_model("max_deeplab_s", crop)
    arrays = read_checkpoint(arg)
elif step == "build":
    MaXDeepLab.from_preset({name!r}, load_weights=False)
result = {{"seconds": time.perf_counter() - start}}
""".format(name=NAME)


def _variables():
    """(checkpoint key, shape, trainable) of every MaX-DeepLab-S variable."""
    rows = []
    with open(VARIABLES) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            _, shape, _, trainable, key = line.rstrip("\n").split("\t")
            shape = tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())
            rows.append((key, shape, trainable == "True"))
    return rows


def write_training_checkpoint(prefix):
    """deeplab2's trainer layout: weights, Adam m/v slots, counters.

    Returns (bytes of the model's weights, bytes of every value written)."""
    rng = np.random.default_rng(0)
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    arrays = {}
    for key, shape, trainable in _variables():
        arrays[key] = rng.standard_normal(shape, dtype=np.float32) * 0.01
        if trainable:
            base = key[: -len(suffix)]
            # Adam's moments: as incompressible as a trained model's (a zero slot would gzip away).
            for slot in ("m", "v"):
                moment = np.abs(rng.standard_normal(shape, dtype=np.float32)) * 1e-4
                arrays[f"{base}/.OPTIMIZER_SLOT/optimizer/{slot}{suffix}"] = moment
    arrays["optimizer/iter" + suffix] = np.array(400_000, np.int64)
    arrays["global_step" + suffix] = np.array(400_000, np.int64)
    write_checkpoint(prefix, arrays)
    model_bytes = sum(arrays[key].nbytes for key, _, _ in _variables())
    return model_bytes, sum(a.nbytes for a in arrays.values())


def _child(step, crop, arg, env):
    return run_measured(CHILD, [step, str(crop), ARCHIVE, arg], REPO, env)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crop-size", type=int, default=641)
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder")
    args = parser.parse_args()
    if not os.path.exists(VARIABLES):
        sys.exit(f"{VARIABLES} is absent: this benchmark needs ../shared beside the repository.")
    work = args.work_dir or tempfile.mkdtemp(prefix="preset_conversion_")
    served = os.path.join(work, "served")
    checkpoint = os.path.join(work, "max_deeplab_s_benchmark")
    os.makedirs(served, exist_ok=True)
    os.makedirs(checkpoint, exist_ok=True)

    start = time.perf_counter()
    model_bytes, checkpoint_values = write_training_checkpoint(os.path.join(checkpoint, "ckpt-400000"))
    archive = os.path.join(served, ARCHIVE)
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(checkpoint, arcname="max_deeplab_s_benchmark")
    print(f"wrote and packed the checkpoint in {time.perf_counter() - start:.0f} s")

    env = {**os.environ, "KERAS_HOME": os.path.join(work, "keras_home"), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", served],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = int(server.stdout.readline().split("port ")[1].split()[0])
        rows = [
            ("build the model only", _child("build", args.crop_size, "", env)),
            (
                "first use: download, extract, convert, cache, load",
                _child("first_use", args.crop_size, f"http://127.0.0.1:{port}", env),
            ),
        ]
    finally:
        server.terminate()
    rows.append(("second use: load the cached preset", _child("cached", args.crop_size, "", env)))
    rows.append(
        (
            "for scale: build + read every model variable at once",
            _child("read_all", args.crop_size, checkpoint, env),
        )
    )

    mb = 1e6
    print()
    print(f"MaX-DeepLab-S at {args.crop_size}, backend {os.environ.get('KERAS_BACKEND', 'default')}")
    print(f"| archive (.tar.gz) | {os.path.getsize(archive) / mb:,.0f} MB |")
    print(f"| checkpoint values (weights + Adam slots) | {checkpoint_values / mb:,.0f} MB |")
    print(f"| model weights (float32) | {model_bytes / mb:,.0f} MB |")
    print()
    print("| process | peak RSS | time |")
    print("|---|---|---|")
    for label, result in rows:
        print(f"| {label} | {result['peak_rss'] / mb:,.0f} MB | {result['seconds']:.0f} s |")


if __name__ == "__main__":
    main()
