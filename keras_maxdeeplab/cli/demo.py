"""`maxdeeplab demo`: the offline demo of `keras_maxdeeplab.demo`."""


def run(args):
    from keras_maxdeeplab.demo import run_demo

    run_demo(args.output, preset=args.preset, images=args.images, scenes=args.scenes)


def add_parser(commands):
    parser = commands.add_parser(
        "demo",
        help="segment held-out synthetic scenes with the embedded model (offline), "
        "or photos with --preset",
    )
    parser.add_argument("--output", default="demo_output", help="output folder")
    parser.add_argument("--scenes", type=int, default=6, help="synthetic scenes to segment")
    parser.add_argument("--preset", help="a COCO preset (name, hf:// handle or folder) for photos")
    parser.add_argument("--images", nargs="+", help="photos for --preset")
    parser.set_defaults(run=run)
