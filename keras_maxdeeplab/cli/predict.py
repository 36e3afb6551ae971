"""`maxdeeplab predict`: images -> panoptic PNGs + COCO JSON + colour overlays."""

import json
import os


def named_files(files):
    """`(name, path)` per file, names relative to the files' common folder
    (so `x/a.jpg` and `y/a.jpg` stay apart)."""
    root = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    return [(os.path.relpath(os.path.abspath(f), root), f) for f in files]


def image_ids_from(annotation_file, names):
    """The image id of each name in a COCO JSON's `images` (matched by file name)."""
    with open(annotation_file) as f:
        listed = {os.path.basename(i["file_name"]): i["id"] for i in json.load(f)["images"]}
    missing = [name for name in names if os.path.basename(name) not in listed]
    if missing:
        raise ValueError(f"{annotation_file} lists no image named {', '.join(missing[:5])}.")
    return [listed[os.path.basename(name)] for name in names]


def print_skipped(report):
    for name, error in report["skipped"]:
        print(f"Skipped {name}: {error}")


def run(args):
    from keras_maxdeeplab.hub import task_class
    from keras_maxdeeplab.image_files import list_images
    from keras_maxdeeplab.prediction_writer import prepare_output
    from keras_maxdeeplab.prediction_writer import write_predictions

    images = named_files(list_images(args.images))
    image_ids = None
    if args.annotations:
        image_ids = image_ids_from(args.annotations, [name for name, _ in images])
    prepare_output(args.output, args.overwrite)  # Before the model loads: a refusal is quick.
    model = task_class(args.preset).from_preset(args.preset)
    report = write_predictions(
        model,
        images,
        args.output,
        overlays=not args.no_overlays,
        image_ids=image_ids,
        skip_errors=args.skip_errors,
    )
    print_skipped(report)
    print(f"Wrote {report['written']} predictions: {report['path']}")


def add_parser(commands):
    parser = commands.add_parser(
        "predict", help="segment images: panoptic PNGs, COCO panoptic JSON and colour overlays"
    )
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument(
        "--preset",
        default="max_deeplab_s_coco",
        help="preset name (MaX-DeepLab or kMaX-DeepLab), hf:// handle or folder",
    )
    parser.add_argument("--output", default="predictions", help="output folder")
    parser.add_argument("--no-overlays", action="store_true", help="skip the colour overlays")
    parser.add_argument(
        "--annotations",
        help="a COCO JSON listing these images: predictions carry its image ids (for evaluate)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run's predictions in --output"
    )
    parser.add_argument(
        "--skip-errors",
        action="store_true",
        help="leave out images that cannot be read and list them at the end (default: stop there)",
    )
    parser.set_defaults(run=run)
