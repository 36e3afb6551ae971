"""Training-step time of MaX-DeepLab and the share spent in matching + loss.

Prints a table per backend (run once per backend):

    KERAS_BACKEND=jax python benchmarks/training_step.py [--size 129] [--batch 4]
        [--config max_deeplab_s]

`--config max_deeplab_tiny` (the default) is the tiny reference architecture
with MaX-DeepLab-S's 128 slots; `max_deeplab_s` is the full model. Rows: the
full `train_on_batch` step; the loss alone, run eagerly (targets + matching
+ terms, forward only) and its share of the step; the Hungarian matcher alone
on 181x128 cost matrices (scipy through the backend seam, and the pure
keras.ops solver).
"""

import argparse
import time

import numpy as np

import keras

from keras_maxdeeplab import build_model
from keras_maxdeeplab.losses import MaXDeepLabLoss
from keras_maxdeeplab.losses import hungarian_matching
from keras_maxdeeplab.losses import hungarian_matching_ops


def _timed(fn, repeats):
    fn()  # warm-up / compilation
    start = time.perf_counter()
    for _ in range(repeats):
        keras.tree.map_structure(keras.ops.convert_to_numpy, fn())
    return (time.perf_counter() - start) / repeats


def _targets(batch, size, rng):
    semantic = rng.choice([119, 125], size=(batch, size, size)).astype(np.int32)
    thing_mask = np.full((batch, size, size), -1, np.int32)
    thing_class = np.full((batch, 128), -1, np.float32)
    for b in range(batch):
        for t in range(8):
            y, x = rng.randint(0, size - 12, 2)
            semantic[b, y : y + 12, x : x + 12] = 1 + t
            thing_mask[b, y : y + 12, x : x + 12] = t
        visible = np.unique(thing_mask[b][thing_mask[b] >= 0])
        thing_class[b, visible] = 1 + visible
    return {
        "semantic_gt": semantic,
        "thing_id_mask_gt": thing_mask,
        "thing_id_class_gt": thing_class,
        "semantic_loss_weight": np.ones((batch, size, size), np.float32),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=129)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    # Every choice has 128 slots (the tiny one by override), as the table's title says.
    parser.add_argument(
        "--config",
        default="max_deeplab_tiny",
        choices=("max_deeplab_tiny", "max_deeplab_s", "max_deeplab_l"),
        help="max_deeplab_tiny (with MaX-DeepLab-S's 128 slots) or a full model",
    )
    args = parser.parse_args()
    rng = np.random.RandomState(0)

    # The tiny reference architecture gets MaX-DeepLab-S's 128 slots.
    overrides = {"num_mask_slots": 128} if args.config == "max_deeplab_tiny" else None
    model = build_model(args.config, args.size, overrides)
    model.compile(warmup_steps=0)
    # 0..255: the model's preprocessor normalises them.
    images = rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    y_true = _targets(args.batch, args.size, rng)

    step = _timed(lambda: model.train_on_batch(images, y_true), args.repeats)
    outputs = model.predict(images, verbose=0)
    loss = MaXDeepLabLoss()
    loss_time = _timed(lambda: loss.compute_terms(y_true, outputs)["total_loss"], args.repeats)
    costs = rng.uniform(-1, 0, (args.batch, 181, 181)).astype("float32")
    costs[:, :, 128:] = -999.0
    scipy_time = _timed(lambda: hungarian_matching(costs), args.repeats)
    ops_time = _timed(lambda: hungarian_matching_ops(costs), max(1, args.repeats // 5))

    print(
        f"backend {keras.backend.backend()}, {args.config}, input {args.size}x{args.size}, "
        f"batch {args.batch}, 128 slots, 181 GT rows"
    )
    print(f"| {'what':<48} | {'ms':>9} |")
    print(f"|{'-' * 50}|{'-' * 11}|")
    rows = [
        ("train step (train_on_batch)", step),
        ("loss alone, eager (targets + matching + terms)", loss_time),
        ("  share of the step", None),
        ("matching, scipy via host call (batch)", scipy_time),
        ("matching, keras.ops Hungarian (batch)", ops_time),
    ]
    for name, value in rows:
        if value is None:
            print(f"| {name:<48} | {100 * loss_time / step:>8.1f}% |")
        else:
            print(f"| {name:<48} | {1000 * value:>9.1f} |")


if __name__ == "__main__":
    main()
