"""Peak memory of `maxdeeplab predict` against the number of images: it should stay flat.

    python benchmarks/predict_memory.py [--counts 8 32 64] [--preset max_deeplab_tiny_synthetic]

Writes 1280x960 JPEG photos-like images (smooth random colour fields), then
runs `maxdeeplab predict` over the first N of them in a fresh process for
each N and prints that process's peak resident memory (`VmHWM`) and time.
Predictions are streamed to disk one image at a time, so the peak should not
grow with N (before, every full-size result was kept until the end: about
19 MB per 1280x960 image).
"""

import argparse
import os
import tempfile
import time

import numpy as np
from measured_child import run_measured
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = """
import sys, time
from keras_maxdeeplab.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
result = {"code": code, "seconds": time.perf_counter() - start}
"""


def write_images(folder, count, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        coarse = rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)
        image = Image.fromarray(coarse).resize((1280, 960), Image.BILINEAR)
        image.save(os.path.join(folder, f"{index:03d}.jpg"), quality=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--preset", default="max_deeplab_tiny_synthetic")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="predict_memory_")
    images = os.path.join(work, "all")
    write_images(images, max(args.counts))
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(f"preset {args.preset}, 1280x960 images, backend {os.environ.get('KERAS_BACKEND', 'default')}")
    print("| images | peak RSS | time | images/s |")
    print("|---|---|---|---|")
    for count in args.counts:
        subset = os.path.join(work, f"first_{count}")
        os.makedirs(subset)
        for name in sorted(os.listdir(images))[:count]:
            os.symlink(os.path.join(images, name), os.path.join(subset, name))
        command = ["predict", subset, "--preset", args.preset, "--output", subset + "_out"]
        start = time.perf_counter()
        result = run_measured(CHILD, command, REPO, env)
        assert result["code"] == 0, result
        seconds = time.perf_counter() - start
        print(
            f"| {count} | {result['peak_rss'] / 1e6:,.0f} MB | {seconds:.0f} s "
            f"| {count / result['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
