"""Throughput of the COCO-panoptic input pipeline against the model's training step.

    KERAS_BACKEND=jax python benchmarks/data_pipeline.py [--workers 2] [--crop 641]
        [--data IMAGE_DIR PANOPTIC_DIR JSON] [--model max_deeplab_s | none]

Times `COCOPanopticDataset.as_dataset` (decode, deeplab2's augmentation,
targets, batching) in training and evaluation mode with `--workers` parallel
calls, on `--data` or on 64 synthetic 640x480 scenes written to a temporary
folder, then one training step of the model at the same crop and batch size,
so the table shows whether the pipeline keeps up.
"""

import argparse
import os
import tempfile
import time

import numpy as np

import keras

from keras_maxdeeplab import build_model
from keras_maxdeeplab.data import COCOPanopticDataset
from keras_maxdeeplab.data.synthetic import write_synthetic_panoptic_dataset


def pipeline_rate(data, crop, batch_size, workers, training, batches):
    dataset = data.as_dataset(
        crop_size=crop,
        training=training,
        batch_size=batch_size,
        seed=0,
        num_parallel_calls=workers,
        drop_remainder=True,
        repeat=True,
    )
    iterator = iter(dataset)
    next(iterator)  # warm-up: graph tracing
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def model_rate(config, crop, batch_size, batch):
    model = build_model(config, crop)
    images, y_true = batch
    images = np.asarray(images)  # 0..255: the model's preprocessor normalises them
    y_true = {k: np.asarray(v) for k, v in y_true.items()}
    model.train_on_batch(images, y_true)  # compile
    start = time.perf_counter()
    model.train_on_batch(images, y_true)
    return batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--crop", type=int, default=641)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--data", nargs=3, metavar=("IMAGE_DIR", "PANOPTIC_DIR", "JSON"))
    parser.add_argument("--model", default="max_deeplab_s", help="config to time, or 'none'")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as root:
        paths = args.data or write_synthetic_panoptic_dataset(
            root, 64, image_size=(480, 640), seed=0
        )
        data = COCOPanopticDataset(*paths)
        rows = []
        for training in (True, False):
            rate = pipeline_rate(
                data, args.crop, args.batch_size, args.workers, training, args.batches
            )
            rows.append((f"pipeline, {'training' if training else 'evaluation'}", rate))
        if args.model != "none":
            batch = next(iter(data.as_dataset(crop_size=args.crop, batch_size=args.batch_size)))
            rate = model_rate(args.model, args.crop, args.batch_size, batch)
            rows.append((f"{args.model} train step ({keras.backend.backend()})", rate))
    print(
        f"\n{len(data)} images, crop {args.crop}, batch {args.batch_size}, "
        f"{args.workers} workers, {os.cpu_count()} CPU cores"
    )
    print(f"| {'stage':40s} | images/s |\n|{'-' * 42}|----------|")
    for name, rate in rows:
        print(f"| {name:40s} | {rate:8.2f} |")


if __name__ == "__main__":
    main()
