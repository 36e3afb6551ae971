"""`maxdeeplab evaluate`: PQ of COCO-format predictions, or of a preset on a dataset."""

import json
import os


def run(args):
    import tempfile

    from keras_maxdeeplab.evaluation import format_results
    from keras_maxdeeplab.evaluation import pq_compute

    gt_folder = args.panoptic or args.annotations.replace(".json", "")
    if args.predictions:
        results = pq_compute(
            args.annotations, args.predictions, gt_folder, workers=args.workers, strict=args.strict
        )
    else:
        if not (args.preset and args.images):
            raise ValueError("evaluate needs --predictions, or --preset and --images to predict.")
        with tempfile.TemporaryDirectory() as folder:
            annotations, predictions = _predict_dataset(args, folder)
            results = pq_compute(
                annotations,
                predictions,
                gt_folder,
                os.path.join(os.path.dirname(predictions), "panoptic"),
                workers=args.workers,
                strict=args.strict,
            )
    print(format_results(results))


def _predict_dataset(args, folder):
    """Segments every annotated image into `folder`; returns the paths of the
    ground-truth JSON to score against (the images left out by --skip-errors
    removed, and said) and of the predictions."""
    from keras_maxdeeplab.cli.predict import print_skipped
    from keras_maxdeeplab.hub import task_class
    from keras_maxdeeplab.prediction_writer import write_predictions

    with open(args.annotations) as f:
        dataset = json.load(f)
    names = {image["id"]: image["file_name"] for image in dataset["images"]}
    image_ids = [annotation["image_id"] for annotation in dataset["annotations"]]
    images = [(names[i], os.path.join(args.images, names[i])) for i in image_ids]
    model = task_class(args.preset).from_preset(args.preset)
    predictions = os.path.join(folder, "predictions")
    report = write_predictions(
        model, images, predictions, overlays=False, image_ids=image_ids, skip_errors=args.skip_errors
    )
    if not report["skipped"]:
        return args.annotations, report["path"]
    print_skipped(report)
    print(f"Scoring the {report['written']} of {len(images)} images that were predicted.")
    skipped = {name for name, _ in report["skipped"]}
    kept = [a for a in dataset["annotations"] if names[a["image_id"]] not in skipped]
    annotations = os.path.join(folder, "ground_truth.json")
    with open(annotations, "w") as f:
        json.dump(dict(dataset, annotations=kept), f)
    return annotations, report["path"]


def add_parser(commands):
    parser = commands.add_parser(
        "evaluate", help="PQ of COCO-format predictions, or of a preset's predictions on a dataset"
    )
    parser.add_argument("--annotations", required=True, help="ground-truth COCO panoptic JSON")
    parser.add_argument(
        "--panoptic", help="ground-truth PNG folder (default: JSON path minus .json)"
    )
    parser.add_argument("--predictions", help="predicted COCO panoptic JSON (PNGs beside it)")
    parser.add_argument(
        "--preset",
        help="preset name (MaX-DeepLab or kMaX-DeepLab), handle or folder to predict with",
    )
    parser.add_argument("--images", help="image folder, with --preset")
    parser.add_argument("--workers", type=int, help="threads scoring images (default: CPU cores)")
    parser.add_argument(
        "--skip-errors",
        action="store_true",
        help="with --images: leave out images that cannot be read, list them, score the rest",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse ground truth whose PNGs and JSON disagree (default: score it as panopticapi "
        "does, with a warning naming each disagreement)",
    )
    parser.set_defaults(run=run)
