"""Trains the embedded demo preset: a tiny MaX-DeepLab on synthetic panoptic scenes.

    KERAS_BACKEND=jax python tools/train_demo_preset.py \
        --output keras_maxdeeplab/presets/max_deeplab_tiny_synthetic

Seeded end to end: the training scenes (`write_synthetic_panoptic_dataset`,
seed 0), the held-out scenes (seed 1), the weights' initialisation and every
augmentation. The model is deeplab2's reduced MaX-DeepLab (`max_deeplab_tiny`)
at 129x129 with the 8 synthetic categories; the recipe is deeplab2's (Adam,
warm-up then poly decay, all MaX-DeepLab losses, scale 0.5-1.5 / crop / flip
augmentation) with a shorter schedule and the whole backbone at the full
learning rate (nothing is pretrained). At the end it scores the held-out scenes
with the official COCO PQ rules and writes the preset folder (keras-hub
layout) with the recipe and scores in `training.json`.
"""

import argparse
import json
import os
import tempfile
import time

import keras

from keras_maxdeeplab import build_model as build_named_model
from keras_maxdeeplab.data import COCOPanopticDataset
from keras_maxdeeplab.data.synthetic import SYNTHETIC_CATEGORIES
from keras_maxdeeplab.data.synthetic import write_synthetic_panoptic_dataset
from keras_maxdeeplab.evaluation import evaluate_dataset
from keras_maxdeeplab.evaluation import format_results

CROP = 129
# deeplab2's area limits (100 / 1600 px at 641) scaled to 129x129 inputs.
POSTPROCESS_OPTIONS = {"thing_area_limit": 4, "stuff_area_limit": 64}


def build_model(seed):
    keras.utils.set_random_seed(seed)
    overrides = {"categories": SYNTHETIC_CATEGORIES, "postprocess_options": POSTPROCESS_OPTIONS}
    return build_named_model("max_deeplab_tiny", CROP, overrides)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--output", required=True, help="preset folder to write")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--held-out-images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as root:
        train = write_synthetic_panoptic_dataset(
            os.path.join(root, "train"), args.train_images, seed=args.seed
        )
        held_out = write_synthetic_panoptic_dataset(
            os.path.join(root, "held_out"), args.held_out_images, seed=args.seed + 1
        )
        data = COCOPanopticDataset(*train)
        model = build_model(args.seed)
        model.compile(
            learning_rate=args.learning_rate,
            training_steps=args.steps,
            warmup_steps=args.warmup_steps,
            backbone_learning_rate_multiplier=1.0,
        )
        dataset = data.as_dataset(crop_size=CROP, batch_size=args.batch_size, seed=args.seed)
        steps_per_epoch = min(100, args.steps)  # a log line every 100 steps
        epochs = args.steps // steps_per_epoch
        start = time.time()
        history = model.fit(dataset, steps_per_epoch=steps_per_epoch, epochs=epochs, verbose=2)
        train_seconds = time.time() - start
        results, _ = evaluate_dataset(model, COCOPanopticDataset(*held_out))
    print(format_results(results))
    print(f"trained {args.steps} steps in {train_seconds / 60:.1f} min ({keras.backend.backend()})")

    model.compile()  # a fresh optimizer: the preset ships weights, not Adam's moments
    model.save_to_preset(args.output)
    summary = {
        "recipe": vars(args) | {"backend": keras.backend.backend()},
        "train_minutes": round(train_seconds / 60, 1),
        "final_loss": float(history.history["loss"][-1]),
        "held_out": {
            k: {m: results[k][m] for m in ("pq", "sq", "rq", "n")}
            for k in ("All", "Things", "Stuff")
        },
    }
    with open(os.path.join(args.output, "training.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
