"""`maxdeeplab export`: a preset -> one serving artifact with deeplab2's post-processor inside."""

from keras_maxdeeplab.models.max_deeplab.max_deeplab_export import EXPORT_FORMATS
from keras_maxdeeplab.models.max_deeplab.max_deeplab_export import INPUT_DTYPES


def run(args):
    from keras_maxdeeplab.backend_seam import check_export_format
    from keras_maxdeeplab.hub import task_class
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_export import check_input

    # Before the model loads: a refusal is quick.
    check_input(args.input_size, args.input_dtype)
    check_export_format(args.format, EXPORT_FORMATS)
    model = task_class(args.preset).from_preset(args.preset)
    path = model.export(
        args.output, format=args.format, input_size=args.input_size, input_dtype=args.input_dtype
    )
    height, width = args.input_size or model.backbone.image_shape[:2]
    print(
        f"Wrote {args.format} artifact {path}: input 'images' [batch, {height}, {width}, 3] "
        f"{args.input_dtype} (0..255; resized and padded inside as MaXDeepLabImageConverter does); "
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
        help="artifact path: a folder for tf_saved_model, else a file (.onnx, .tflite, .pt2, .xml added)",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="height and width of the images the artifact takes, e.g. a camera's 480 640 "
        "(default: the preset's crop size); the maps come back at this size",
    )
    parser.add_argument(
        "--input-dtype",
        default="uint8",
        choices=INPUT_DTYPES,
        help="uint8 (default) or float32 pixels 0..255 (float32 at the crop size: for a client "
        "that resizes and pads images of several sizes itself)",
    )
    parser.set_defaults(run=run)
