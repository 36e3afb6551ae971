"""From deeplab2's crop-sized maps to per-image results at the original size:
HF-transformers-style `segmentation` + `segments_info`, and COCO panoptic export."""

import json
import os

import numpy as np
from keras import ops
from PIL import Image

from keras_maxdeeplab.data.categories import contiguous_categories
from keras_maxdeeplab.evaluation.panoptic_quality import coco_bbox
from keras_maxdeeplab.evaluation.panoptic_quality import id2rgb
from keras_maxdeeplab.layers.resize import nearest_indices
from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import resized_size
from keras_maxdeeplab.postprocessing.panoptic import postprocess_panoptic


def restore_original_size(maps, image_size, crop_size):
    """Undoes the image converter on `[crop, crop]` maps: crop the unpadded
    top-left region, then nearest-resize (aligned corners) to `image_size`,
    as deeplab2's evaluator does."""
    height, width = resized_size(image_size[0], image_size[1], crop_size[0], crop_size[1])
    rows = nearest_indices(height, image_size[0])
    cols = nearest_indices(width, image_size[1])
    return np.asarray(maps)[:height, :width][rows][:, cols]


def segments_from_panoptic(panoptic, semantic_scores, categories, label_divisor=256):
    """Renumbers a `semantic * label_divisor + instance` map into segments.

    Args:
        panoptic: `[H, W]` deeplab2 panoptic map (0 = void).
        semantic_scores: `[H, W]` class confidence of each pixel's slot.
        categories: `{contiguous_id: {"id", "name", "isthing"}}`.

    Returns:
        `segmentation` `[H, W]` int32 (0 = void, segments 1..K in order of
        their panoptic id) and `segments_info`: per segment `id`, `label_id`
        (contiguous class), `category_id` (dataset id), `label` (name),
        `isthing`, `score` (mean class confidence), `area`, `panoptic_id`.
    """
    panoptic = np.asarray(panoptic)
    ids, inverse, areas = np.unique(panoptic, return_inverse=True, return_counts=True)
    score_sums = np.bincount(
        inverse.ravel(), weights=np.asarray(semantic_scores, np.float64).ravel()
    )
    new_ids = np.zeros(len(ids), np.int32)  # 0 for void
    segments_info = []
    next_id = 1
    for index, panoptic_id in enumerate(ids.tolist()):
        if panoptic_id == 0:
            continue
        label_id = panoptic_id // label_divisor
        if label_id not in categories:
            raise ValueError(
                f"Predicted class {label_id} is not among the {len(categories)} categories."
            )
        category = categories[label_id]
        new_ids[index] = next_id
        segments_info.append(
            {
                "id": next_id,
                "label_id": label_id,
                "category_id": category["id"],
                "label": category["name"],
                "isthing": bool(category["isthing"]),
                "score": float(score_sums[index] / areas[index]),
                "area": int(areas[index]),
                "panoptic_id": int(panoptic_id),
            }
        )
        next_id += 1
    segmentation = new_ids[inverse].reshape(panoptic.shape)
    return segmentation, segments_info


def post_process_panoptic_segmentation(
    outputs,
    image_sizes,
    categories,
    crop_size,
    label_divisor=256,
    transformer_class_confidence_threshold=0.7,
    pixel_confidence_threshold=0.4,
    thing_area_limit=100,
    stuff_area_limit=1600,
):
    """MaXDeepLab outputs -> per-image panoptic results at the original sizes.

    The post-processing is deeplab2's (`postprocess_panoptic`, at the crop
    size); each map is then cropped to the unpadded region and resized back,
    and segments are listed HF-transformers style.

    Args:
        outputs: the model's output dict for a batch.
        image_sizes: `(height, width)` of each original image.
        categories: COCO-style category dicts (`id`, `name`, `isthing`).
        crop_size: `(H, W)` of the model input.

    Returns:
        a list, per image, of `{"segmentation", "segments_info",
        "panoptic_pred", "semantic_pred", "instance_pred"}` at the original
        size (the last three are deeplab2's raw maps).

    Example:
    >>> results = post_process_panoptic_segmentation(
    ...     model.predict(converter(image)[None]), [image.shape[:2]], coco_categories, (641, 641))
    >>> results[0]["segments_info"][0]["label"]
    """
    by_contiguous = contiguous_categories(categories)
    thing_ids = [k for k, c in by_contiguous.items() if c["isthing"]]
    maps = postprocess_panoptic(
        outputs["pixel_space_mask_logits"],
        outputs["transformer_class_logits"],
        crop_size,
        thing_class_ids=thing_ids,
        label_divisor=label_divisor,
        transformer_class_confidence_threshold=transformer_class_confidence_threshold,
        pixel_confidence_threshold=pixel_confidence_threshold,
        thing_area_limit=thing_area_limit,
        stuff_area_limit=stuff_area_limit,
    )
    maps = {key: ops.convert_to_numpy(value) for key, value in maps.items()}
    if len(image_sizes) != maps["panoptic_pred"].shape[0]:
        raise ValueError(
            f"Got {len(image_sizes)} image sizes for a batch of {maps['panoptic_pred'].shape[0]}."
        )
    results = []
    for index, size in enumerate(image_sizes):
        restored = {
            key: restore_original_size(maps[key][index], size, crop_size)
            for key in ("panoptic_pred", "semantic_pred", "instance_pred", "semantic_scores")
        }
        segmentation, segments_info = segments_from_panoptic(
            restored["panoptic_pred"], restored.pop("semantic_scores"), by_contiguous, label_divisor
        )
        results.append({"segmentation": segmentation, "segments_info": segments_info, **restored})
    return results


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
    png_folder = os.path.join(folder, "panoptic")
    os.makedirs(png_folder, exist_ok=True)
    images, annotations = [], []
    for result, name, image_id in zip(results, file_names, image_ids):
        png_name = os.path.splitext(os.path.basename(name))[0] + ".png"
        rgb, annotation = to_coco_panoptic(
            result["segmentation"], result["segments_info"], image_id, png_name
        )
        Image.fromarray(rgb).save(os.path.join(png_folder, png_name))
        height, width = rgb.shape[:2]
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        annotations.append(annotation)
    path = os.path.join(folder, "panoptic.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path
