"""From deeplab2's crop-sized maps to per-image results at the original size:
HF-transformers-style `segmentation` + `segments_info`, and COCO panoptic export."""

import numpy as np
from keras import ops

from keras_maxdeeplab.coco.categories import LABEL_DIVISOR
from keras_maxdeeplab.coco.categories import contiguous_categories
from keras_maxdeeplab.postprocessing.panoptic import postprocess_panoptic


def segments_from_panoptic(panoptic, semantic_scores, categories, label_divisor=LABEL_DIVISOR):
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
    outputs, image_sizes, categories, image_converter, label_divisor=LABEL_DIVISOR, **options
):
    """MaXDeepLab outputs -> per-image panoptic results at the original sizes.

    The post-processing is deeplab2's (`postprocess_panoptic`, at the
    converter's crop size); the image converter then undoes its resize on
    each map (`restore_original_size`), and segments are listed HF-transformers
    style.

    Args:
        outputs: the model's output dict for a batch.
        image_sizes: `(height, width)` of each original image.
        categories: COCO-style category dicts (`id`, `name`, `isthing`).
        image_converter: the `MaXDeepLabImageConverter` that made the model's
            inputs (its `image_size` is the crop size).
        **options: thresholds and area limits of `postprocess_panoptic`
            (default: deeplab2's, `DEFAULT_POSTPROCESS_OPTIONS`).

    Returns:
        a list, per image, of `{"segmentation", "segments_info",
        "panoptic_pred", "semantic_pred", "instance_pred"}` at the original
        size (the last three are deeplab2's raw maps).

    Example:
    >>> converter = MaXDeepLabImageConverter(image_size=(641, 641))
    >>> results = post_process_panoptic_segmentation(
    ...     model.predict(converter(image)[None]), [image.shape[:2]], coco_categories, converter)
    >>> results[0]["segments_info"][0]["label"]
    """
    by_contiguous = contiguous_categories(categories)
    thing_ids = [k for k, c in by_contiguous.items() if c["isthing"]]
    maps = postprocess_panoptic(
        outputs["pixel_space_mask_logits"],
        outputs["transformer_class_logits"],
        tuple(image_converter.image_size),
        thing_class_ids=thing_ids,
        label_divisor=label_divisor,
        **options,
    )
    return panoptic_results(maps, image_sizes, categories, image_converter, label_divisor)


def panoptic_results(maps, image_sizes, categories, image_converter, label_divisor=LABEL_DIVISOR):
    """deeplab2's crop-sized maps -> per-image panoptic results at the original sizes.

    The second half of `post_process_panoptic_segmentation`, for maps
    `postprocess_panoptic` already made (e.g. inside a compiled function).

    Args:
        maps: `postprocess_panoptic`'s dict for a batch: `panoptic_pred`,
            `semantic_pred`, `instance_pred`, `semantic_scores`, each
            `[B, crop_h, crop_w]` (tensors or arrays).
        image_sizes: `(height, width)` of each original image.
        categories: COCO-style category dicts (`id`, `name`, `isthing`).
        image_converter: the `MaXDeepLabImageConverter` that made the inputs.

    Returns:
        as `post_process_panoptic_segmentation`.

    Example:
    >>> results = panoptic_results(postprocess_panoptic(masks, classes, (641, 641)),
    ...                            [image.shape[:2]], coco_categories, converter)
    """
    by_contiguous = contiguous_categories(categories)
    maps = {key: ops.convert_to_numpy(value) for key, value in maps.items()}
    if len(image_sizes) != maps["panoptic_pred"].shape[0]:
        raise ValueError(
            f"Got {len(image_sizes)} image sizes for a batch of {maps['panoptic_pred'].shape[0]}."
        )
    results = []
    for index, size in enumerate(image_sizes):
        restored = {
            key: image_converter.restore_original_size(maps[key][index], size)
            for key in ("panoptic_pred", "semantic_pred", "instance_pred", "semantic_scores")
        }
        segmentation, segments_info = segments_from_panoptic(
            restored["panoptic_pred"], restored.pop("semantic_scores"), by_contiguous, label_divisor
        )
        results.append({"segmentation": segmentation, "segments_info": segments_info, **restored})
    return results
