"""Segmenting a stream of images into files: COCO panoptic predictions and overlays."""

import os

import keras
from PIL import Image

from keras_maxdeeplab.coco.panoptic_format import save_coco_panoptic
from keras_maxdeeplab.visualization.overlay import overlay_panoptic


def write_predictions(model, named_images, count, output, overlays=True, image_ids=None):
    """Segments `(file name, [H, W, 3] uint8 image)` pairs with
    `model.predict_panoptic`, with a progress bar over `count` images.

    Writes `output/panoptic.json` + `output/panoptic/*.png` (COCO panoptic
    format, the model's category ids) and, with `overlays`, labelled colour
    overlays `output/overlays/*.png`.

    Returns:
        `(path of panoptic.json, results)`, one `predict_panoptic` result per image.

    Example:
    >>> files = list_images(["photos/"])
    >>> path, results = write_predictions(model, read_images(files), len(files), "out")
    """
    if overlays:
        os.makedirs(os.path.join(output, "overlays"), exist_ok=True)
    names, results = [], []
    progress = keras.utils.Progbar(count, unit_name="image")
    for name, image in named_images:
        (result,) = model.predict_panoptic(image)
        if overlays:
            overlay = overlay_panoptic(
                image,
                result["segmentation"],
                result["segments_info"],
                categories=model.categories,
                draw_labels=True,
            )
            stem = os.path.splitext(name)[0]
            Image.fromarray(overlay).save(os.path.join(output, "overlays", f"{stem}.png"))
        names.append(name)
        results.append(result)
        progress.add(1)
    return save_coco_panoptic(results, names, output, model.categories, image_ids), results
