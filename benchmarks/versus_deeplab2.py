"""MaX-DeepLab-S inference and training on every backend against deeplab2 itself, in one run.

    python benchmarks/versus_deeplab2.py --deeplab2 WORKDIR [--crops 129 641 1025] [--repeats 5]
        [--batch 4] [--train] [--keep-freed-memory]

WORKDIR is what `../shared/tools/deeplab2/setup.sh SRC WORKDIR` built (a venv
running unmodified deeplab2 and its timing harness). The run times, one after
the other on the same machine:
* deeplab2: its `timing.py` (MaX-DeepLab-S with random weights, the model and
  its post-processor in one `tf.function`, on its evaluation pipeline's
  sample), run in its own venv;
* each Keras backend, in a fresh process: `predict_panoptic` on the same
  photo (converter, compiled network and post-processor, maps resized back)
  and the compiled forward pass alone (`predict_on_batch`: eager on PyTorch),
  full MaX-DeepLab-S with random weights; images/s of `predict_panoptic` on
  `--batch` copies of the photo per call. PyTorch's `predict_panoptic` traces
  its pipeline (`backend_seam.BatchPredictor`) from the first call here.

With `--train`, the training step too: deeplab2's trainer step (`timing.py
--train`, in a `tf.function`) on its evaluation sample of the photo, and
`train_on_batch` (compiled as `compile()` sets it) on our evaluation crop of
the same photo (batch 1), then of both COCO sample photos (batch 2; deeplab2's
harness trains on one). Expect minutes of compiling per system and crop.

Batch 1, float32, medians of `--repeats` calls after warm-up calls
(`--repeats // 2` training steps); the first call (compilation included) is
printed too. Ratios are ours / deeplab2's: below 1 is faster. A loaded machine
moves the seconds; compare ratios of one run.

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
from keras_maxdeeplab import backend_seam
from keras_maxdeeplab import build_model

# PyTorch: predict_panoptic traces its pipeline on the first call (by default
# only after eager calls at a shape have taken TORCH_EXPORT_AFTER_SECONDS), so
# that its medians are the traced program's, as JAX's and TensorFlow's are
# their compiled functions'.
backend_seam.TORCH_EXPORT_AFTER_SECONDS = 0.0
crop, repeats, path, batch, train = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                     int(sys.argv[4]), sys.argv[5] == "1")
keras.utils.set_random_seed(0)
model = build_model("max_deeplab_s", crop)
image = np.asarray(Image.open(path).convert("RGB"))
pixels = model.image_converter(image[None])


def timed(fn, repeats=repeats):
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
if batch > 1:
    result["batched_predict"] = timed(
        lambda: model.predict_panoptic([image] * batch, batch_size=batch))
if train:
    import os
    from keras_maxdeeplab.data import COCOPanopticDataset

    # The evaluation crop of the COCO sample's photos (deeplab2's timing trains
    # on its evaluation sample of the same photo): 142238 then 439180.
    sample = os.path.dirname(os.path.dirname(path))
    data = COCOPanopticDataset(os.path.join(sample, "input_images"),
                               os.path.join(sample, "panoptic_examples"),
                               os.path.join(sample, "panoptic_examples.json"))
    both = next(iter(data.as_dataset(model=model, training=False, batch_size=2)))
    model.compile()
    for size, name in ((1, "train_step"), (2, "train_step_batch2")):
        x, y = keras.tree.map_structure(lambda t: np.asarray(t)[2 - size:], both)
        result[name] = timed(lambda: model.train_on_batch(x, y), max(1, repeats // 2))
"""


def deeplab2_timing(workdir, crop, repeats, train, env):
    """deeplab2's `timing.py` at `crop` in its venv (its random checkpoint
    made first by `run_reference.py` when missing), its trainer's step too
    when `train`, run with `env`; its JSON result."""
    harness = os.path.join(workdir, "harness")
    steps = []
    if not os.path.exists(os.path.join(harness, "ckpt_s_random", "ckpt-0.index")):
        steps.append("python run_reference.py --crop 129 > /dev/null")
    train_flags = f" --train --train_repeats {max(1, repeats // 2)}" if train else ""
    steps.append(
        f"python timing.py --crop {crop} --repeats {repeats} --no_eager{train_flags} > /dev/null"
    )
    script = f". {os.path.join(workdir, 'env.sh')} && cd {harness} && " + " && ".join(steps)
    subprocess.run(["bash", "-c", script], check=True, env=env)
    with open(os.path.join(harness, f"timing_s{crop}.json")) as f:
        return json.load(f)


def ours(backend, crop, repeats, batch, train, env):
    env = {
        **env,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    args = [str(crop), str(repeats), SAMPLE, str(batch), "1" if train else "0"]
    return run_measured(CHILD, args, REPO, env)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deeplab2", required=True, help="setup.sh's WORKDIR")
    parser.add_argument("--crops", type=int, nargs="+", default=[129, 641, 1025])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument(
        "--batch", type=int, default=4, help="images per call for the images/s column"
    )
    parser.add_argument(
        "--train", action="store_true", help="also time training steps (minutes of compiling)"
    )
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="run every system with glibc keeping freed memory for reuse (see above)",
    )
    args = parser.parse_args()
    env = {**os.environ, **(KEEP_FREED_MEMORY if args.keep_freed_memory else {})}
    if args.keep_freed_memory:
        print("every system runs with " + " ".join(f"{k}={v}" for k, v in KEEP_FREED_MEMORY.items()))
    print(f"| crop | system | predict (model + post-processor) | vs deeplab2 | forward alone | "
          f"first call | images/s, batch {args.batch} | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    train_rows = []
    for crop in args.crops:
        reference = deeplab2_timing(args.deeplab2, crop, args.repeats, args.train, env)
        inference = reference["inference_tf_function"]
        print(f"| {crop} | deeplab2 (tf.function) | {inference['median_s']:.3f} s | 1.00 | - | "
              f"{inference['warmup_s'][0]:.1f} s | {1 / inference['median_s']:.2f} (batch 1) | - |",
              flush=True)
        if args.train:
            step = reference["train_step_tf_function"]
            train_rows.append((crop, "deeplab2 (its trainer, tf.function)", step, step, None))
        for backend in args.backends:
            result = ours(backend, crop, args.repeats, args.batch, args.train, env)
            predict, forward = result["predict_panoptic"], result["forward"]
            ratio = predict["median_s"] / inference["median_s"]
            batched = result.get("batched_predict", predict)
            print(f"| {crop} | {backend} | {predict['median_s']:.3f} s | {ratio:.2f} | "
                  f"{forward['median_s']:.3f} s | {predict['first_s']:.1f} s | "
                  f"{args.batch / batched['median_s']:.2f} | "
                  f"{result['peak_rss'] / 1e9:.1f} GB |", flush=True)
            if args.train:
                train_rows.append(
                    (crop, backend, step, result["train_step"], result["train_step_batch2"])
                )
    if train_rows:
        print("\n| crop | system | training step, batch 1 | vs deeplab2 | first step (compiling) | "
              "training step, batch 2 | its first step |")
        print("|---|---|---|---|---|---|---|")
        for crop, system, reference, one, two in train_rows:
            first = one["warmup_s"][0] if "warmup_s" in one else one["first_s"]
            second = (f"{two['median_s']:.3f} s | {two['first_s']:.1f} s" if two else "- | -")
            print(f"| {crop} | {system} | {one['median_s']:.3f} s | "
                  f"{one['median_s'] / reference['median_s']:.2f} | {first:.1f} s | {second} |")


if __name__ == "__main__":
    main()
