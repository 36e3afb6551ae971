"""The COCO panoptic format: PNG colours <-> segment ids, annotation JSON and
PNG files, and conversions between deeplab2's labels, the model's segments and
COCO segments.

A COCO panoptic set is a folder of PNGs whose colour encodes a segment id
(`R + 256 G + 256^2 B`, 0 = unlabelled) and a JSON with `images`,
`annotations` (`image_id`, `file_name`, `segments_info` with `id`,
`category_id`, `iscrowd`, `area`, `bbox`) and `categories`.
"""

import json
import os

import numpy as np
from PIL import Image

from keras_maxdeeplab.atomic_files import write_atomically
from keras_maxdeeplab.coco.categories import LABEL_DIVISOR
from keras_maxdeeplab.coco.categories import contiguous_categories


def rgb2id(color):
    """COCO panoptic PNG colours `[H, W, 3]` -> ids `R + 256 G + 256^2 B`."""
    color = np.asarray(color)
    if color.ndim == 3:
        color = color.astype(np.int64)
        return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]
    return color.astype(np.int64)


def id2rgb(ids):
    """Ids `[H, W]` -> COCO panoptic PNG colours `[H, W, 3]` uint8."""
    ids = np.asarray(ids, np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // (256 * 256) % 256], -1).astype(np.uint8)


def coco_bbox(rows, cols):
    """COCO's `[x, y, width, height]` of a segment given its pixels' rows and columns."""
    return [
        int(cols.min()),
        int(rows.min()),
        int(cols.max() - cols.min() + 1),
        int(rows.max() - rows.min() + 1),
    ]


def read_panoptic_png(path):
    """Segment ids `[H, W]` int64 of the COCO panoptic PNG at `path`.

    Raises `ValueError` naming the file when it cannot be read.

    Example:
    >>> ids = read_panoptic_png("panoptic_val2017/000000000139.png")
    """
    try:
        with Image.open(path) as image:
            return rgb2id(np.asarray(image.convert("RGB")))
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read panoptic PNG {path}: {error}") from error


def read_coco_panoptic(json_file, folder=None):
    """Reads a COCO panoptic annotation set: yields `(annotation, ids [H, W])`.

    `folder` defaults to the JSON path without `.json` (panopticapi's layout).

    Example:
    >>> for annotation, ids in read_coco_panoptic("predictions.json"):
    ...     print(annotation["image_id"], ids.max())
    """
    with open(json_file) as f:
        data = json.load(f)
    folder = folder or json_file.replace(".json", "")
    for annotation in data["annotations"]:
        yield annotation, read_panoptic_png(os.path.join(folder, annotation["file_name"]))


def to_coco_panoptic(segmentation, segments_info, image_id, file_name):
    """One image's result in COCO panoptic format: the PNG colours and its annotation.

    Returns `(rgb [H, W, 3] uint8, {"image_id", "file_name", "segments_info"})`
    with COCO `category_id`, `iscrowd` 0, `area` and `bbox` per segment.
    """
    segmentation = np.asarray(segmentation)
    annotations = []
    for segment in segments_info:
        rows, cols = np.nonzero(segmentation == segment["id"])
        annotations.append(
            {
                "id": int(segment["id"]),
                "category_id": int(segment["category_id"]),
                "iscrowd": 0,
                "area": int(rows.size),
                "bbox": coco_bbox(rows, cols),
            }
        )
    annotation = {"image_id": image_id, "file_name": file_name, "segments_info": annotations}
    return id2rgb(segmentation), annotation


class CocoPanopticWriter:
    """Writes a COCO panoptic prediction set one image at a time.

    Each image's PNG is written as it is added (atomically); `panoptic.json`
    is rewritten atomically by `write_json`: a reader never sees a truncated
    file, and an interrupted run keeps every image up to its last
    `write_json`. Memory holds only the (small) annotations, never the maps.

    Args:
        folder: output folder; gets `panoptic/*.png` and `panoptic.json`.
        categories: the dataset's categories, written to the JSON.

    Example:
    >>> writer = CocoPanopticWriter("out", model.categories)
    >>> for name, image in images:
    ...     writer.add(model.predict_panoptic(image)[0], name)
    >>> writer.write_json()
    """

    def __init__(self, folder, categories):
        self.folder = folder
        self.categories = categories
        self.png_folder = os.path.join(folder, "panoptic")
        self.path = os.path.join(folder, "panoptic.json")
        self.images, self.annotations = [], []
        os.makedirs(self.png_folder, exist_ok=True)

    def add(self, result, file_name, image_id=None, png_name=None):
        """Writes one result's PNG and keeps its annotation.

        Args:
            result: a `predict_panoptic` result (`segmentation`, `segments_info`).
            file_name: the image's file name in the JSON's `images`.
            image_id: default: the number of images added before (0, 1, ...).
            png_name: default: `file_name`'s base name with `.png`.
        """
        image_id = len(self.images) if image_id is None else image_id
        png_name = png_name or os.path.splitext(os.path.basename(file_name))[0] + ".png"
        rgb, annotation = to_coco_panoptic(
            result["segmentation"], result["segments_info"], image_id, png_name
        )
        write_atomically(
            os.path.join(self.png_folder, png_name),
            lambda f: Image.fromarray(rgb).save(f, format="PNG"),
            mode="wb",
        )
        height, width = rgb.shape[:2]
        self.images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        self.annotations.append(annotation)

    def write_json(self):
        """(Re)writes `panoptic.json` with every image added so far; returns its path."""
        data = {"images": self.images, "annotations": self.annotations, "categories": self.categories}
        write_atomically(self.path, lambda f: json.dump(data, f))
        return self.path


def save_coco_panoptic(results, file_names, folder, categories, image_ids=None):
    """Writes per-image results as a COCO panoptic prediction set.

    Args:
        results: `post_process_panoptic_segmentation` / `predict_panoptic`
            results (`segmentation`, `segments_info`).
        file_names: the image file name of each result; its PNG is named
            after it (`.png`).
        folder: output folder; gets `panoptic/*.png` and `panoptic.json`.
        categories: the dataset's categories, written to the JSON.
        image_ids: the JSON's image ids (default: 0, 1, ...).

    Returns:
        the path of `panoptic.json` (its PNGs are in `panoptic/` beside it).

    Example:
    >>> save_coco_panoptic(model.predict_panoptic(images), names, "out", model.categories)
    """
    if len(file_names) != len(results):
        raise ValueError(f"Got {len(file_names)} file names for {len(results)} results.")
    image_ids = list(range(len(results))) if image_ids is None else list(image_ids)
    writer = CocoPanopticWriter(folder, categories)
    for result, name, image_id in zip(results, file_names, image_ids):
        writer.add(result, name, image_id)
    return writer.write_json()


def panoptic_label_to_coco(label, categories, label_divisor=LABEL_DIVISOR):
    """A deeplab2 panoptic label back to COCO panoptic form.

    Args:
        label: `[H, W]` `class * label_divisor + instance` (0 = void; a thing
            class with instance 0 is crowd).
        categories: the dataset's categories (contiguous class k is the k-th by id).

    Returns:
        `(ids [H, W] int32, segments_info)`: segments numbered 1..K in label
        order, each with `id`, `category_id`, `iscrowd`, `area`, `bbox`.

    Example:
    >>> ids, segments = panoptic_label_to_coco(y_true["panoptic_gt"][0], data.categories)
    """
    by_class = contiguous_categories(categories)
    label = np.asarray(label)
    values, inverse = np.unique(label, return_inverse=True)
    inverse = inverse.reshape(label.shape)
    new_ids = np.zeros(len(values), np.int32)
    segments = []
    for index, value in enumerate(values.tolist()):
        if value == 0:
            continue
        semantic, instance = divmod(value, label_divisor)
        if semantic not in by_class:
            raise ValueError(f"Label value {value}: class {semantic} is not among the categories.")
        category = by_class[semantic]
        rows, cols = np.nonzero(inverse == index)
        new_ids[index] = len(segments) + 1
        segments.append(
            {
                "id": len(segments) + 1,
                "category_id": category["id"],
                "iscrowd": int(bool(category["isthing"]) and instance == 0),
                "area": int(rows.size),
                "bbox": coco_bbox(rows, cols),
            }
        )
    return new_ids[inverse], segments


def coco_panoptic_to_segments(panoptic, segments_info, categories):
    """COCO panoptic ground truth -> `(segmentation, segments_info)` like a
    prediction's, so it can be drawn by `overlay_panoptic` / `plot_panoptic`.

    Segments are renumbered 1..K in order of their COCO id. Crowd segments
    are kept (and drawn): their `isthing` is their category's, and they
    carry `iscrowd` True. Ground truth has no `score`.

    Args:
        panoptic: the annotation PNG, `[H, W, 3]` colours (id
            `R + 256 G + 256^2 B`) or `[H, W]` ids.
        segments_info: the annotation's JSON segments
            `{"id", "category_id", "iscrowd"?, ...}`.
        categories: COCO-style category dicts `{"id", "name", "isthing"}`.

    Returns:
        `segmentation` `[H, W]` int32 (0 = void) and `segments_info`: per
        segment `id`, `label_id` (contiguous class), `category_id`, `label`,
        `isthing`, `iscrowd`, `area` (pixels).

    Example:
    >>> annotation = coco_json["annotations"][0]
    >>> png = np.asarray(PIL.Image.open("panoptic/" + annotation["file_name"]))
    >>> segmentation, segments = coco_panoptic_to_segments(
    ...     png, annotation["segments_info"], coco_json["categories"])
    """
    coco_ids = rgb2id(panoptic)
    if coco_ids.ndim != 2:
        raise ValueError(f"panoptic must be [H, W, 3] colours or [H, W] ids, got {coco_ids.shape}.")
    label_ids = {c["id"]: label_id for label_id, c in contiguous_categories(categories).items()}
    by_id = {c["id"]: c for c in categories}
    json_segments = sorted(segments_info, key=lambda s: s["id"])
    coco_segment_ids = [s["id"] for s in json_segments]
    if len(set(coco_segment_ids)) != len(coco_segment_ids):
        raise ValueError("segments_info lists a segment id more than once.")
    unique_ids, inverse, areas = np.unique(coco_ids, return_inverse=True, return_counts=True)
    missing = sorted(set(unique_ids.tolist()) - set(coco_segment_ids) - {0})
    if missing:
        raise ValueError(f"Panoptic ids {missing} are in the PNG but not in segments_info.")
    new_ids = np.zeros(len(unique_ids), np.int32)  # unlisted ids are only 0: void
    area_by_coco_id = dict(zip(unique_ids.tolist(), areas.tolist()))
    segments = []
    for new_id, segment in enumerate(json_segments, start=1):
        category_id = segment["category_id"]
        if category_id not in by_id:
            raise ValueError(f"Segment {segment['id']} has unknown category_id {category_id}.")
        category = by_id[category_id]
        new_ids[unique_ids == segment["id"]] = new_id
        segments.append(
            {
                "id": new_id,
                "label_id": label_ids[category_id],
                "category_id": category_id,
                "label": category["name"],
                "isthing": bool(category["isthing"]),
                "iscrowd": bool(segment.get("iscrowd", 0)),
                "area": int(area_by_coco_id.get(segment["id"], 0)),
            }
        )
    return new_ids[inverse.reshape(coco_ids.shape)], segments
