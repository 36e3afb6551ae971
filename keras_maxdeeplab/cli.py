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
