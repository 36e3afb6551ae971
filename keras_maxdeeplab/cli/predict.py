"""`maxdeeplab predict`: images -> panoptic PNGs + COCO JSON + colour overlays."""

import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(paths):
    """Image files among `paths`, folders expanded (sorted); an error for none."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
            files += [os.path.join(path, name) for name in names]
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise ValueError(f"{path}: no such image file or folder.")
    if not files:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(paths)}.")
    return files


def read_image(path):
    """`[H, W, 3]` uint8 RGB, or a ValueError naming the file."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise ValueError(f"Cannot read image {path}: {error}") from error


def write_predictions(model, named_images, count, output, overlays=True, image_ids=None):
    """Segments `(file name, [H, W, 3] uint8 image)` pairs with
    `model.predict_panoptic`, with a progress bar over `count` images.

    Writes `output/panoptic.json` + `output/panoptic/*.png` (COCO panoptic
    format, the model's category ids) and, with `overlays`, labelled colour
    overlays `output/overlays/*.png`. Returns `(json path, results)`.
    """
    import keras
    from PIL import Image

    from keras_maxdeeplab.postprocessing import save_coco_panoptic
    from keras_maxdeeplab.visualization import overlay_panoptic

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


def read_images(paths):
    """`(file name, image)` pairs, read one at a time."""
    return ((os.path.basename(path), read_image(path)) for path in paths)


def run(args):
    from keras_maxdeeplab import MaXDeepLab

    files = list_images(args.images)
    model = MaXDeepLab.from_preset(args.preset)
    path, _ = write_predictions(
        model, read_images(files), len(files), args.output, overlays=not args.no_overlays
    )
    print(f"Wrote {len(files)} predictions: {path}")


def add_parser(commands):
    parser = commands.add_parser(
        "predict", help="segment images: panoptic PNGs, COCO panoptic JSON and colour overlays"
    )
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument(
        "--preset", default="max_deeplab_s_coco", help="preset name, hf:// handle or folder"
    )
    parser.add_argument("--output", default="predictions", help="output folder")
    parser.add_argument("--no-overlays", action="store_true", help="skip the colour overlays")
    parser.set_defaults(run=run)
