"""Segmenting images into files: COCO panoptic predictions and overlays, one image at a time."""

import os
import shutil

import keras
from PIL import Image

from keras_maxdeeplab.atomic_files import write_atomically
from keras_maxdeeplab.coco.panoptic_format import CocoPanopticWriter
from keras_maxdeeplab.image_files import read_image
from keras_maxdeeplab.visualization.overlay import overlay_panoptic

# What a run writes into its output folder (and --overwrite removes).
OUTPUTS = ("panoptic.json", "panoptic", "overlays")


def prepare_output(output, overwrite=False):
    """Makes `output` ready for a new prediction set.

    An earlier run's `panoptic.json`, `panoptic/` or `overlays/` there is
    refused (stale PNGs would mix with the new ones) unless `overwrite`,
    which removes exactly those; other files are left alone.
    """
    stale = [name for name in OUTPUTS if os.path.exists(os.path.join(output, name))]
    if stale and not overwrite:
        raise ValueError(
            f"{output} already holds predictions ({', '.join(stale)}); pass --overwrite "
            "(overwrite=True) to replace them, or choose another folder."
        )
    for name in stale:
        path = os.path.join(output, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.makedirs(output, exist_ok=True)


def png_names(names):
    """A distinct `.png` file name per image name, in order.

    The name's stem where that is unique (`photos/a.jpg` -> `a.png`); for
    names that share a stem (`a.jpg` and `a.png`, `x/a.jpg` and `y/a.jpg`),
    the whole name with separators and dots replaced (`x__a_jpg.png`).

    Example:
    >>> png_names(["x/a.jpg", "y/a.jpg", "b.jpg"])
    ['x__a_jpg.png', 'y__a_jpg.png', 'b.png']
    """
    stems = [os.path.splitext(os.path.basename(name))[0] for name in names]
    shared = {stem for stem in stems if stems.count(stem) > 1}
    result = [
        (name.replace("\\", "/").replace("/", "__").replace(".", "_") if stem in shared else stem)
        + ".png"
        for name, stem in zip(names, stems)
    ]
    if len(set(result)) != len(result):
        raise ValueError(f"Cannot give the images distinct output names: {sorted(names)}.")
    return result


def write_predictions(
    model,
    images,
    output,
    overlays=True,
    image_ids=None,
    skip_errors=False,
    overwrite=False,
    json_every=100,
):
    """Segments images one at a time with `model.predict_panoptic` and writes
    COCO panoptic predictions (`output/panoptic.json` + `output/panoptic/*.png`,
    the model's category ids) and, with `overlays`, labelled colour overlays
    (`output/overlays/*.png`), with a progress bar.

    Memory stays flat in the number of images: each image's maps are written
    and dropped. PNGs and `panoptic.json` are written atomically; the JSON is
    rewritten every `json_every` images and when the run ends or stops, so an
    interrupted run keeps what it had done.

    Args:
        model: a `MaXDeepLab` or `KMaXDeepLab`.
        images: a list of `(name, path or [H, W, 3] uint8 image)`; names go to
            the JSON's `images[].file_name` and must be distinct.
        output: a folder (see `prepare_output`).
        image_ids: the JSON's image ids, one per image (default 0, 1, ...).
        skip_errors: an image that cannot be read or segmented is left out
            and listed in the result (default: the run stops there, after
            writing the JSON of the images done, and raises).
        overwrite: replace an earlier run's predictions in `output` (see
            `prepare_output`).

    Returns:
        `{"path": panoptic.json, "written": count, "skipped": [(name, error)],
        "segments": [(name, [label, ...])]}`.

    Example:
    >>> files = list_images(["photos/"])
    >>> report = write_predictions(model, [(os.path.basename(f), f) for f in files], "out")
    """
    names = [name for name, _ in images]
    if len(set(names)) != len(names):
        raise ValueError("write_predictions needs distinct image names.")
    image_ids = list(range(len(images))) if image_ids is None else list(image_ids)
    prepare_output(output, overwrite)
    if overlays:
        os.makedirs(os.path.join(output, "overlays"), exist_ok=True)
    writer = CocoPanopticWriter(output, model.categories)
    report = {"path": writer.path, "written": 0, "skipped": [], "segments": []}
    progress = keras.utils.Progbar(len(images), unit_name="image")
    try:
        for (name, source), png_name, image_id in zip(images, png_names(names), image_ids):
            try:
                image = read_image(source) if isinstance(source, str) else source
                (result,) = model.predict_panoptic(image)
            except ValueError as error:
                if not skip_errors:
                    raise ValueError(
                        f"Stopped at {name} after {report['written']} images (their predictions "
                        f"are in {writer.path}; --skip-errors goes on past bad images): {error}"
                    ) from error
                report["skipped"].append((name, str(error)))
                progress.add(1)
                continue
            writer.add(result, name, image_id, png_name)
            if overlays:
                _write_overlay(image, result, model.categories, os.path.join(output, "overlays", png_name))
            report["written"] += 1
            report["segments"].append((name, [s["label"] for s in result["segments_info"]]))
            if report["written"] % json_every == 0:
                writer.write_json()
            progress.add(1)
    finally:
        writer.write_json()
    return report


def _write_overlay(image, result, categories, path):
    overlay = overlay_panoptic(
        image, result["segmentation"], result["segments_info"], categories=categories, draw_labels=True
    )
    write_atomically(path, lambda f: Image.fromarray(overlay).save(f, format="PNG"), mode="wb")
