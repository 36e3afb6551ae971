"""Throughput of our PQ evaluator against the official panopticapi.

    python benchmarks/pq_evaluation.py [--images 200] [--workers 2] [--batch 16]

Writes `--images` synthetic 640x480 COCO-panoptic PNG pairs (~20 segments:
rectangles of things on stuff bands; the prediction shifts, drops and
relabels some) to a temporary folder, then times panopticapi's `pq_compute`
(PyPI `panopticapi-lite`) and ours on the same files, and ours on the label
maps already in memory (what a streaming metric sees), one `[H, W]` pair per
call and `--batch` pairs `[B, H, W]` per call (best of 3: the in-memory runs
are short). All must report the same PQ.
"""

import argparse
import contextlib
import io
import json
import os
import tempfile
import time

import numpy as np
from PIL import Image

from keras_maxdeeplab.evaluation import PQStat
from keras_maxdeeplab.evaluation import id2rgb
from keras_maxdeeplab.evaluation import pq_compute

CATEGORIES = [{"id": i, "name": f"thing{i}", "isthing": 1} for i in range(1, 11)] + [
    {"id": i, "name": f"stuff{i}", "isthing": 0} for i in range(101, 106)
]


def _scene(rng):
    """A label map `category * 1000 + instance` and its perturbed prediction."""
    gt = np.zeros((480, 640), np.int64)
    for band, category in enumerate(rng.choice(range(101, 106), 4, replace=False)):
        gt[band * 120 : (band + 1) * 120] = category * 1000
    for instance in range(1, 17):
        y, x, h, w = (
            rng.randint(0, 400),
            rng.randint(0, 560),
            rng.randint(20, 80),
            rng.randint(20, 80),
        )
        gt[y : y + h, x : x + w] = rng.randint(1, 11) * 1000 + instance
    pred = np.roll(gt, rng.randint(-6, 7), axis=1)
    for value in rng.choice(np.unique(pred), 3, replace=False):
        pred[pred == value] = rng.choice([0, (value // 1000 % 10 + 1) * 1000 + value % 1000])
    return gt, pred


def _write(folder, name, image_id, label_map):
    ids = np.zeros(label_map.shape, np.int64)
    segments = []
    for number, value in enumerate(np.unique(label_map).tolist(), start=1):
        if value == 0:
            continue
        ids[label_map == value] = number * 997
        segments.append(
            {
                "id": number * 997,
                "category_id": value // 1000,
                "iscrowd": 0,
                "area": int((label_map == value).sum()),
            }
        )
    Image.fromarray(id2rgb(ids)).save(os.path.join(folder, name))
    return {"image_id": image_id, "file_name": name, "segments_info": segments}


def _time_in_memory(pairs, reference_pq):
    """Best of 3 seconds of `PQStat.add_label_maps` over `(gt, pred)` pairs."""
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        stat = PQStat()
        for gt, pred in pairs:
            stat.add_label_maps(gt, pred, label_divisor=1000)
        seconds.append(time.perf_counter() - start)
        assert abs(stat.pq_average({c["id"]: c for c in CATEGORIES})[0]["pq"] - reference_pq) < 1e-9
    return min(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    rng = np.random.RandomState(0)
    scenes = [_scene(rng) for _ in range(args.images)]
    with tempfile.TemporaryDirectory() as root:
        files = {}
        for side in ("gt", "pred"):
            os.makedirs(os.path.join(root, side))
            annotations = [
                _write(os.path.join(root, side), f"{i:06d}.png", i, scene[side == "pred"])
                for i, scene in enumerate(scenes)
            ]
            files[side] = os.path.join(root, f"{side}.json")
            images = [
                {"id": i, "file_name": f"{i:06d}.jpg", "height": 480, "width": 640}
                for i in range(args.images)
            ]
            json.dump(
                {"images": images, "annotations": annotations, "categories": CATEGORIES},
                open(files[side], "w"),
            )
        folders = (os.path.join(root, "gt"), os.path.join(root, "pred"))

        from panopticapi.evaluation import pq_compute as official

        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            reference = official(files["gt"], files["pred"], *folders)
        official_time = time.perf_counter() - start

        start = time.perf_counter()
        ours = pq_compute(files["gt"], files["pred"], *folders, workers=args.workers)
        ours_time = time.perf_counter() - start

    batches = [
        (np.stack([gt for gt, _ in chunk]), np.stack([pred for _, pred in chunk]))
        for chunk in (scenes[i : i + args.batch] for i in range(0, len(scenes), args.batch))
    ]
    single_time = _time_in_memory(scenes, reference["All"]["pq"])
    batch_time = _time_in_memory(batches, reference["All"]["pq"])

    assert abs(ours["All"]["pq"] - reference["All"]["pq"]) < 1e-9
    print(
        f"{args.images} images 640x480, ~20 segments each, {args.workers} workers; "
        f"PQ {reference['All']['pq']:.6f} (identical)"
    )
    print(f"| {'evaluator':<56} | {'seconds':>8} | {'images/s':>9} | {'vs panopticapi':>14} |")
    print(f"|{'-' * 58}|{'-' * 10}|{'-' * 11}|{'-' * 16}|")
    for name, seconds in (
        ("panopticapi pq_compute (files)", official_time),
        ("keras_maxdeeplab pq_compute (files)", ours_time),
        ("keras_maxdeeplab PQStat, label maps in memory", single_time),
        (f"keras_maxdeeplab PQStat, in memory, [{args.batch}, H, W] per call", batch_time),
    ):
        print(
            f"| {name:<56} | {seconds:>8.2f} | {args.images / seconds:>9.0f} | "
            f"{official_time / seconds:>13.1f}x |"
        )


if __name__ == "__main__":
    main()
