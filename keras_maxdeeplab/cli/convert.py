"""`maxdeeplab convert`: a deeplab2 MaX-DeepLab or kMaX-DeepLab checkpoint -> a preset folder."""

import argparse
import json
import os

from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_CONFIGS
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import KMAX_DATASETS
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import kmax_dataset_overrides
from keras_maxdeeplab.models.max_deeplab.max_deeplab_configs import MAX_DEEPLAB_CONFIGS

# deeplab2's COCO training crops, the default --crop-size of each family.
MAX_DEEPLAB_CROP_SIZE = 641
KMAX_DEEPLAB_CROP_SIZE = 1281


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
    from keras_maxdeeplab.conversion import convert_kmax_checkpoint

    common = dict(source_url=args.source_url, overwrite=args.overwrite)
    if args.config in KMAX_DEEPLAB_CONFIGS:
        if args.override:
            raise ValueError(
                "--override applies to MaX-DeepLab configs; a kMaX-DeepLab config "
                f"({args.config}) is converted as deeplab2 defines it."
            )
        crop_size = args.crop_size or KMAX_DEEPLAB_CROP_SIZE
        overrides = kmax_dataset_overrides(args.dataset or "coco")
        convert_kmax_checkpoint(
            args.checkpoint, args.output, args.config, crop_size, overrides, **common
        )
    else:
        if args.dataset is not None:
            raise ValueError(
                "--dataset applies to kMaX-DeepLab configs; a MaX-DeepLab checkpoint's classes "
                "are COCO's (or set with --override)."
            )
        crop_size = args.crop_size or MAX_DEEPLAB_CROP_SIZE
        overrides = dict(args.override)
        convert_checkpoint(args.checkpoint, args.output, args.config, crop_size, overrides, **common)
    print(f"Wrote preset {os.path.abspath(args.output)}")


def add_parser(commands):
    parser = commands.add_parser(
        "convert",
        help="convert a deeplab2 MaX-DeepLab or kMaX-DeepLab checkpoint into a preset folder",
    )
    parser.add_argument("checkpoint", help="checkpoint folder or prefix (.../ckpt-400000)")
    parser.add_argument(
        "--config",
        default="max_deeplab_s",
        choices=sorted(MAX_DEEPLAB_CONFIGS) + sorted(KMAX_DEEPLAB_CONFIGS),
        help="architecture (kmax_* for kMaX-DeepLab checkpoints)",
    )
    parser.add_argument(
        "--crop-size",
        type=int,
        help=f"16k+1 (default {MAX_DEEPLAB_CROP_SIZE} for MaX-DeepLab, "
        f"{KMAX_DEEPLAB_CROP_SIZE} for kMaX-DeepLab: deeplab2's COCO crops)",
    )
    parser.add_argument(
        "--dataset",
        choices=KMAX_DATASETS,
        help="kMaX-DeepLab only: the dataset the checkpoint was trained on, for its classes, "
        "evaluator options and transformer drop path (default coco; ade20k for deeplab2's "
        "kmax_*_ade20k_train checkpoints, with --crop-size 641 or 1281)",
    )
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
