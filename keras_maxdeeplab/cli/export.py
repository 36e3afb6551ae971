"""`maxdeeplab export`: a preset -> one serving artifact with deeplab2's post-processor inside."""

from keras_maxdeeplab.models.max_deeplab.max_deeplab_export import EXPORT_FORMATS


def run(args):
    from keras_maxdeeplab import MaXDeepLab
    from keras_maxdeeplab.backend_seam import check_export_format

    check_export_format(args.format, EXPORT_FORMATS)  # Before the model loads: a refusal is quick.
    model = MaXDeepLab.from_preset(args.preset)
    path = model.export(args.output, format=args.format, input_dtype=args.input_dtype)
    height, width = model.backbone.image_shape[:2]
    print(
        f"Wrote {args.format} artifact {path}: input 'images' [batch, {height}, {width}, 3] "
        f"{args.input_dtype} (0..255, resized and padded as MaXDeepLabImageConverter does); "
        "outputs panoptic_pred, semantic_pred, instance_pred, instance_scores, semantic_scores "
        f"[batch, {height}, {width}]"
    )


def add_parser(commands):
    parser = commands.add_parser(
        "export",
        help="export a preset's whole panoptic pipeline (post-processing included) for serving",
    )
    parser.add_argument("preset", help="preset name, hf:// handle or folder")
    parser.add_argument(
        "--format",
        default="tf_saved_model",
        choices=EXPORT_FORMATS,
        help="artifact format; which ones work depends on KERAS_BACKEND (default: tf_saved_model)",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="artifact path: a folder for tf_saved_model, else a file (.onnx, .tflite, .pt2 added)",
    )
    parser.add_argument(
        "--input-dtype",
        default="float32",
        choices=("float32", "uint8"),
        help="float32: exact for any resized image; uint8: for images already at the crop size",
    )
    parser.set_defaults(run=run)
