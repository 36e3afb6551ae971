"""The `maxdeeplab` command line."""

import argparse
import json
import os
import sys

from keras_maxdeeplab.models.max_deeplab.max_deeplab_configs import MAX_DEEPLAB_CONFIGS


def _parse_override(text):
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _convert(args):
    from keras_maxdeeplab.conversion import convert_checkpoint

    convert_checkpoint(
        args.checkpoint,
        args.output,
        config=args.config,
        crop_size=args.crop_size,
        overrides=dict(args.override),
        source_url=args.source_url,
        overwrite=args.overwrite,
    )
    print(f"Wrote preset {os.path.abspath(args.output)}")


def _evaluate(args):
    import tempfile

    from keras_maxdeeplab.evaluation import format_results
    from keras_maxdeeplab.evaluation import pq_compute

    gt_folder = args.panoptic or args.annotations.replace(".json", "")
    if args.predictions:
        results = pq_compute(args.annotations, args.predictions, gt_folder, workers=args.workers)
    else:
        if not (args.preset and args.images):
            raise ValueError("evaluate needs --predictions, or --preset and --images to predict.")
        with tempfile.TemporaryDirectory() as folder:
            predictions = _predict_coco(args, folder)
            results = pq_compute(args.annotations, predictions, gt_folder, workers=args.workers)
    print(format_results(results))


def _predict_coco(args, folder):
    """Segments every image of the annotation file; writes COCO panoptic predictions."""
    import numpy as np
    from PIL import Image

    import keras

    from keras_maxdeeplab import MaXDeepLab
    from keras_maxdeeplab.postprocessing import post_process_panoptic_segmentation
    from keras_maxdeeplab.postprocessing import to_coco_panoptic

    with open(args.annotations) as f:
        dataset = json.load(f)
    model = MaXDeepLab.from_preset(args.preset)
    crop = tuple(model.backbone.image_shape[:2])
    names = {image["id"]: image["file_name"] for image in dataset["images"]}
    os.makedirs(os.path.join(folder, "predictions"))
    annotations = []
    progress = keras.utils.Progbar(len(dataset["annotations"]), unit_name="image")
    for annotation in dataset["annotations"]:
        path = os.path.join(args.images, names[annotation["image_id"]])
        try:
            image = np.asarray(Image.open(path).convert("RGB"))
        except OSError as error:
            raise ValueError(f"Cannot read image {path}: {error}") from error
        outputs = model.predict(image[None], verbose=0)  # the preset's preprocessor runs here
        (result,) = post_process_panoptic_segmentation(
            outputs, [image.shape[:2]], dataset["categories"], crop
        )
        rgb, record = to_coco_panoptic(
            result["segmentation"],
            result["segments_info"],
            annotation["image_id"],
            annotation["file_name"],
        )
        Image.fromarray(rgb).save(os.path.join(folder, "predictions", annotation["file_name"]))
        annotations.append(record)
        progress.add(1)
    path = os.path.join(folder, "predictions.json")
    with open(path, "w") as f:
        json.dump({**dataset, "annotations": annotations}, f)
    return path


def _presets(args):
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import HF_ORG
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESET_ALIASES
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESETS

    header = ("name", "kind", "params", "crop", "steps", "PQ", "PQ Th", "PQ St", "PQ deeplab2")
    rows = []
    for name, entry in MAX_DEEPLAB_PRESETS.items():
        pq = entry["pq"] or {}
        steps = entry["training_steps"]
        rows.append(
            (
                name,
                entry["kind"],
                f"{entry['metadata']['params'] / 1e6:.1f}M",
                str(entry["crop_size"]),
                f"{steps // 1000}k" if steps else "-",
                *(str(pq.get(key, "-")) for key in ("pq", "pq_thing", "pq_stuff", "pq_deeplab2")),
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print()
    for alias, target in MAX_DEEPLAB_PRESET_ALIASES.items():
        print(f"{alias} -> {target}")
    print(
        f"COCO val2017 PQ as deeplab2 reports it (official script; its own evaluator last). "
        f"Weights: hf://{HF_ORG}/<name>; the architecture of a name builds offline."
    )


def _add_presets_command(commands):
    presets = commands.add_parser(
        "presets", help="list the MaX-DeepLab presets (name, params, crop, PQ)"
    )
    presets.set_defaults(run=_presets)


def _upload(args):
    from keras_maxdeeplab.hub import upload_preset

    repo_id = upload_preset(args.preset_dir, args.uri)
    print(f"Uploaded {os.path.abspath(args.preset_dir)} to https://huggingface.co/{repo_id}")


def _add_upload_command(commands):
    upload = commands.add_parser(
        "upload",
        help="upload a preset folder to the Hugging Face Hub with its model card (README.md)",
    )
    upload.add_argument("preset_dir", help="preset folder (maxdeeplab convert / save_to_preset)")
    upload.add_argument("uri", help="hf://org/name")
    upload.set_defaults(run=_upload)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="maxdeeplab", description="MaX-DeepLab panoptic segmentation for Keras 3."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser(
        "convert", help="convert a deeplab2 MaX-DeepLab checkpoint into a preset folder"
    )
    convert.add_argument("checkpoint", help="checkpoint folder or prefix (.../ckpt-400000)")
    convert.add_argument(
        "--config",
        default="max_deeplab_s",
        choices=sorted(MAX_DEEPLAB_CONFIGS),
        help="architecture",
    )
    convert.add_argument("--crop-size", type=int, default=641, help="16k+1; 641 or 1025")
    convert.add_argument("--output", required=True, help="preset folder to write")
    convert.add_argument("--source-url", help="where the checkpoint was downloaded from")
    convert.add_argument(
        "--override",
        type=_parse_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="replace an architecture knob (e.g. num_mask_slots=32); repeatable",
    )
    convert.add_argument("--overwrite", action="store_true", help="replace an existing preset")
    convert.set_defaults(run=_convert)

    evaluate = commands.add_parser(
        "evaluate", help="PQ of COCO-format predictions, or of a preset's predictions on a dataset"
    )
    evaluate.add_argument("--annotations", required=True, help="ground-truth COCO panoptic JSON")
    evaluate.add_argument(
        "--panoptic", help="ground-truth PNG folder (default: JSON path minus .json)"
    )
    evaluate.add_argument("--predictions", help="predicted COCO panoptic JSON (PNGs beside it)")
    evaluate.add_argument("--preset", help="preset folder or handle to predict with")
    evaluate.add_argument("--images", help="image folder, with --preset")
    evaluate.add_argument("--workers", type=int, help="threads scoring images (default: CPU cores)")
    evaluate.set_defaults(run=_evaluate)
    _add_presets_command(commands)
    _add_upload_command(commands)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError) as error:
        if args.debug:
            raise
        print(f"maxdeeplab {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
