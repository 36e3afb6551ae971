"""MaX-DeepLab-S inference on every backend against deeplab2 itself, in one run.

    python benchmarks/versus_deeplab2.py --deeplab2 WORKDIR [--crops 129 641] [--repeats 5]

WORKDIR is what `../shared/tools/deeplab2/setup.sh SRC WORKDIR` built (a venv
running unmodified deeplab2 and its timing harness). The run times, one after
the other on the same machine:
* deeplab2: its `timing.py` (MaX-DeepLab-S with random weights, the model and
  its post-processor in one `tf.function`, on its evaluation pipeline's
  sample), run in its own venv;
* each Keras backend, in a fresh process: `predict_panoptic` on the same
  photo (converter, compiled network and post-processor, maps resized back)
  and the compiled forward pass alone, full MaX-DeepLab-S with random weights.

Batch 1, float32, medians of `--repeats` calls after warm-up calls; the first
call (compilation included) is printed too. Ratios are ours / deeplab2's:
below 1 is faster. A loaded machine moves the seconds; compare ratios of one run.

`--keep-freed-memory` runs every system (deeplab2 included) with glibc told to
keep freed memory for reuse (`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`)
instead of returning each large block to the system, so that the next one of
the same size is not faulted in page by page again. PyTorch runs its
operations one by one and allocates every intermediate map anew, so it gains
the most; XLA plans its buffers once per compiled function.
"""

import argparse
import json
import os
import subprocess

from measured_child import run_measured

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(
    os.path.dirname(REPO), "shared", "data", "coco_panoptic_sample", "input_images", "000000439180.jpg"
)
BACKENDS = ("jax", "tensorflow", "torch")
KEEP_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
CHILD = """
import statistics, sys, time
import numpy as np
from PIL import Image
import keras
from keras_maxdeeplab import build_model

crop, repeats, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
keras.utils.set_random_seed(0)
model = build_model("max_deeplab_s", crop)
image = np.asarray(Image.open(path).convert("RGB"))
pixels = model.image_converter(image[None])


def timed(fn):
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return {"first_s": first, "median_s": statistics.median(runs)}


result = {
    "predict_panoptic": timed(lambda: model.predict_panoptic(image)),
    "forward": timed(lambda: keras.tree.map_structure(
        keras.ops.convert_to_numpy, model.predict_on_batch(pixels))),
}
"""


def deeplab2_timing(workdir, crop, repeats, env):
    """deeplab2's `timing.py` at `crop` in its venv (its random checkpoint
    made first by `run_reference.py` when missing), run with `env`; its JSON result."""
    harness = os.path.join(workdir, "harness")
    steps = []
    if not os.path.exists(os.path.join(harness, "ckpt_s_random", "ckpt-0.index")):
        steps.append("python run_reference.py --crop 129 > /dev/null")
    steps.append(f"python timing.py --crop {crop} --repeats {repeats} --no_eager > /dev/null")
    script = f". {os.path.join(workdir, 'env.sh')} && cd {harness} && " + " && ".join(steps)
    subprocess.run(["bash", "-c", script], check=True, env=env)
    with open(os.path.join(harness, f"timing_s{crop}.json")) as f:
        return json.load(f)


def ours(backend, crop, repeats, env):
    env = {
        **env,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return run_measured(CHILD, [str(crop), str(repeats), SAMPLE], REPO, env)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deeplab2", required=True, help="setup.sh's WORKDIR")
    parser.add_argument("--crops", type=int, nargs="+", default=[129, 641])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="run every system with glibc keeping freed memory for reuse (see above)",
    )
    args = parser.parse_args()
    env = {**os.environ, **(KEEP_FREED_MEMORY if args.keep_freed_memory else {})}
    if args.keep_freed_memory:
        print("every system runs with " + " ".join(f"{k}={v}" for k, v in KEEP_FREED_MEMORY.items()))
    print("| crop | system | predict (model + post-processor) | vs deeplab2 | forward alone | "
          "first call | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for crop in args.crops:
        reference = deeplab2_timing(args.deeplab2, crop, args.repeats, env)["inference_tf_function"]
        first = reference["warmup_s"][0]
        print(f"| {crop} | deeplab2 (tf.function) | {reference['median_s']:.3f} s | 1.00 | - | "
              f"{first:.1f} s | - |", flush=True)
        for backend in args.backends:
            result = ours(backend, crop, args.repeats, env)
            predict, forward = result["predict_panoptic"], result["forward"]
            ratio = predict["median_s"] / reference["median_s"]
            print(f"| {crop} | {backend} | {predict['median_s']:.3f} s | {ratio:.2f} | "
                  f"{forward['median_s']:.3f} s | {predict['first_s']:.1f} s | "
                  f"{result['peak_rss'] / 1e9:.1f} GB |", flush=True)


if __name__ == "__main__":
    main()
