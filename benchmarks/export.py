"""Serving artifacts of the demo preset: export time, size, latency and PQ per format.

    KERAS_BACKEND=tensorflow python benchmarks/export.py [--scenes 100] [--repeats 5]

Exports the embedded preset `max_deeplab_tiny_synthetic` (129x129) in every
format this backend can write with the packages installed, taking the scenes'
uint8 128x128 frames as they are (`input_size=(128, 128)`: resized to the
crop and back inside), then runs each artifact with its own runtime
(tests/models/export_runtimes.py): latency at batch 1 and 8 (median of
`--repeats`, after one warm-up call), and PQ on `--scenes` held-out synthetic
scenes (the demo's seed), next to PQ through `predict_panoptic`. Prints one
table; the PQ columns must all be equal.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

import keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_maxdeeplab import MaXDeepLab  # noqa: E402
from keras_maxdeeplab.backend_seam import export_formats  # noqa: E402
from keras_maxdeeplab.data import COCOPanopticDataset  # noqa: E402
from keras_maxdeeplab.data import write_synthetic_panoptic_dataset  # noqa: E402
from keras_maxdeeplab.demo import DEMO_PRESET  # noqa: E402
from keras_maxdeeplab.demo import DEMO_SEED  # noqa: E402
from keras_maxdeeplab.evaluation import evaluate_dataset  # noqa: E402
from tests.models.export_runtimes import RUNTIMES  # noqa: E402
from tests.models.export_runtimes import artifact_panoptic_quality  # noqa: E402


def _size(path):
    if path.endswith(".xml"):  # OpenVINO: the graph, and its weights beside it.
        return os.path.getsize(path) + os.path.getsize(path[: -len(".xml")] + ".bin")
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
    )


def _latency(run, batch, repeats):
    run(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = MaXDeepLab.from_preset(DEMO_PRESET)
    crop = tuple(model.backbone.image_shape[:2])
    frame = (128, 128)  # write_synthetic_panoptic_dataset's image size
    rng = np.random.RandomState(0)
    batches = {n: rng.randint(0, 256, (n, *frame, 3)).astype("uint8") for n in (1, 8)}
    rows = []
    with tempfile.TemporaryDirectory() as root:
        data = COCOPanopticDataset(
            *write_synthetic_panoptic_dataset(os.path.join(root, "scenes"), args.scenes, seed=DEMO_SEED)
        )
        start = time.perf_counter()
        keras_results, _ = evaluate_dataset(model, data)
        keras_seconds = time.perf_counter() - start
        keras_pq = keras_results["All"]["pq"]

        for format in export_formats():
            if format not in RUNTIMES:
                continue
            start = time.perf_counter()
            path = model.export(os.path.join(root, "demo"), format=format, input_size=frame)
            export_seconds = time.perf_counter() - start
            run = RUNTIMES[format](path)
            latency = {n: _latency(run, batch, args.repeats) for n, batch in batches.items()}
            results, _ = artifact_panoptic_quality(run, data, model.categories)
            rows.append(
                (format, export_seconds, _size(path) / 2**20, latency[1], latency[8], results["All"]["pq"])
            )
    print(
        f"\nmax_deeplab_tiny_synthetic ({crop[0]}x{crop[1]}), exported on {keras.backend.backend()} "
        f"for uint8 {frame[0]}x{frame[1]} frames; "
        f"{args.scenes} held-out scenes; latency = median of {args.repeats} runs by the format's runtime"
    )
    print("| format | export s | size MiB | latency b1 ms | latency b8 ms | PQ artifact | PQ Keras |")
    print("|---|---|---|---|---|---|---|")
    for format, seconds, size, b1, b8, pq in rows:
        print(
            f"| {format} | {seconds:.1f} | {size:.2f} | {b1 * 1000:.1f} | {b8 * 1000:.1f} | "
            f"{100 * pq:.3f} | {100 * keras_pq:.3f} |"
        )
    print(f"(predict_panoptic on the {args.scenes} scenes, one image per call: {keras_seconds:.1f} s)")
    if any(abs(row[-1] - keras_pq) > 0 for row in rows):
        raise SystemExit("PQ through an artifact differs from PQ through the Keras model")


if __name__ == "__main__":
    main()
