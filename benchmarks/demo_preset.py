"""PQ of the embedded demo preset on held-out synthetic scenes, on this backend.

    KERAS_BACKEND=torch python benchmarks/demo_preset.py [--scenes 100]

Scores `max_deeplab_tiny_synthetic` (trained by `tools/train_demo_preset.py`)
on the held-out scenes of its recipe (`write_synthetic_panoptic_dataset`, seed
1, never trained on) with the official COCO rules, and prints the table with
the inference time and the training time recorded in the preset.
"""

import argparse
import json
import os
import tempfile
import time

import keras

from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab.data import COCOPanopticDataset
from keras_maxdeeplab.data import write_synthetic_panoptic_dataset
from keras_maxdeeplab.demo import DEMO_PRESET
from keras_maxdeeplab.evaluation import evaluate_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=100)
    args = parser.parse_args()
    model = MaXDeepLab.from_preset(DEMO_PRESET)
    with open(os.path.join(DEMO_PRESET, "training.json")) as f:
        training = json.load(f)
    with tempfile.TemporaryDirectory() as root:
        data = COCOPanopticDataset(*write_synthetic_panoptic_dataset(root, args.scenes, seed=1))
        start = time.perf_counter()
        results, _ = evaluate_dataset(model, data)
        seconds = time.perf_counter() - start
    recipe = training["recipe"]
    print(
        f"\n{args.scenes} held-out scenes, {keras.backend.backend()}; trained "
        f"{recipe['steps']} steps (batch {recipe['batch_size']}) in "
        f"{training['train_minutes']} min on {recipe['backend']}, {os.cpu_count()} CPU cores"
    )
    print(
        "| group  |    PQ |    SQ |    RQ | classes |\n|--------|-------|-------|-------|---------|"
    )
    for group in ("All", "Things", "Stuff"):
        r = results[group]
        print(
            f"| {group:6s} | {100 * r['pq']:5.1f} | {100 * r['sq']:5.1f} | {100 * r['rq']:5.1f} "
            f"| {r['n']:7d} |"
        )
    print(f"inference + scoring: {args.scenes / seconds:.1f} images/s")


if __name__ == "__main__":
    main()
