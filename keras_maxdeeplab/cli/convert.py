"""`maxdeeplab convert`: a deeplab2 MaX-DeepLab checkpoint -> a preset folder."""

import argparse
import json
import os

from keras_maxdeeplab.models.max_deeplab.max_deeplab_configs import MAX_DEEPLAB_CONFIGS


def _parse_override(text):
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def run(args):
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


def add_parser(commands):
    parser = commands.add_parser(
        "convert", help="convert a deeplab2 MaX-DeepLab checkpoint into a preset folder"
    )
    parser.add_argument("checkpoint", help="checkpoint folder or prefix (.../ckpt-400000)")
    parser.add_argument(
        "--config",
        default="max_deeplab_s",
        choices=sorted(MAX_DEEPLAB_CONFIGS),
        help="architecture",
    )
    parser.add_argument("--crop-size", type=int, default=641, help="16k+1; 641 or 1025")
    parser.add_argument("--output", required=True, help="preset folder to write")
    parser.add_argument("--source-url", help="where the checkpoint was downloaded from")
    parser.add_argument(
        "--override",
        type=_parse_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="replace an architecture knob (e.g. num_mask_slots=32); repeatable",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing preset")
    parser.set_defaults(run=run)
