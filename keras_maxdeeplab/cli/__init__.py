"""The `maxdeeplab` command line: one module per command, each adding its parser."""

import argparse
import sys

from keras_maxdeeplab.cli import convert
from keras_maxdeeplab.cli import demo
from keras_maxdeeplab.cli import evaluate
from keras_maxdeeplab.cli import export
from keras_maxdeeplab.cli import predict
from keras_maxdeeplab.cli import presets
from keras_maxdeeplab.cli import train

COMMANDS = (predict, evaluate, train, convert, export, presets, demo)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="maxdeeplab", description="MaX-DeepLab panoptic segmentation for Keras 3."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv=None):
    """Runs a command; an error is one line on stderr (exit 1) unless --debug."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError) as error:
        if args.debug:
            raise
        message = " ".join(str(error).split())
        print(f"maxdeeplab {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
