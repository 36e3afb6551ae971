"""`maxdeeplab predict`: images -> panoptic PNGs + COCO JSON + colour overlays."""

def run(args):
    from keras_maxdeeplab import MaXDeepLab
    from keras_maxdeeplab.image_files import list_images
    from keras_maxdeeplab.image_files import read_images
    from keras_maxdeeplab.prediction_writer import write_predictions

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
