"""`maxdeeplab train`: fine-tune a preset, or train from scratch, on a COCO-panoptic folder.

MaX-DeepLab and kMaX-DeepLab presets and configurations alike, each with its
family's deeplab2 recipe (`compile()`'s defaults: Adam at 1e-3 for MaX-DeepLab;
AdamW at 5e-4 with weight decay 0.05 for kMaX-DeepLab).

Checkpoints (`output/checkpoints/`, `TrainingCheckpoint`: counted in steps,
written atomically) are written every epoch; running the same command again
resumes from the last one, the data stream where it stopped (with any
`--steps-per-epoch`), and a larger `--steps` continues training. A NaN or
infinite loss stops training with an error, keeping the last good checkpoint.
The result is a preset folder
(`output/preset/`) with the dataset's categories, loadable with
`MaXDeepLab.from_preset` / `KMaXDeepLab.from_preset`, and
`output/training.json` (steps done, last logs).

`--devices N` trains data-parallel on N local devices (JAX:
`keras.distribution.DataParallel`; TensorFlow: `tf.distribute.MirroredStrategy`
with synchronised batch norm); `--batch-size` is the global batch, split evenly.
`--precision bf16|fp16` trains under Keras' `mixed_bfloat16` / `mixed_float16`
policy (float32 weights; loss scaling for float16).
"""

import gc
import json
import os

# The crop of a model trained from scratch when --crop-size is not given:
# deeplab2's COCO training crop.
SCRATCH_CROP_SIZE = 641
# --precision -> Keras dtype policy.
PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def _dataset_paths(args):
    root = args.data
    paths = (
        os.path.join(root, "images"),
        os.path.join(root, "panoptic"),
        os.path.join(root, "panoptic.json"),
    )
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        raise ValueError(
            f"{root} is not a COCO-panoptic dataset folder: missing {', '.join(missing)} "
            "(expected images/, panoptic/ and panoptic.json)."
        )
    return paths


def _configs():
    from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_CONFIGS
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_configs import MAX_DEEPLAB_CONFIGS

    return {**MAX_DEEPLAB_CONFIGS, **KMAX_DEEPLAB_CONFIGS}


def build_model(args, categories):
    """A preset fine-tuned to `categories` (at its own input size unless
    `--crop-size` is given), or a fresh `--config` model."""
    from keras_maxdeeplab import build_model as build_named_model
    from keras_maxdeeplab.hub import task_class
    from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model
    from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_CONFIGS

    if not args.preset:
        crop_size = args.crop_size or SCRATCH_CROP_SIZE
        build = build_kmax_model if args.config in KMAX_DEEPLAB_CONFIGS else build_named_model
        return build(args.config, crop_size, overrides={"categories": categories})
    cls = task_class(args.preset)
    if not args.crop_size:
        return cls.from_preset(args.preset, categories=categories)
    crop = (args.crop_size, args.crop_size, 3)
    return cls.from_preset(args.preset, categories=categories, image_shape=crop)


def _compile(model, args):
    """deeplab2's recipe of the model's family, with the command's schedule."""
    from keras_maxdeeplab import KMaXDeepLab

    options = {
        "training_steps": args.steps,
        "warmup_steps": args.warmup_steps,
        # Only a preset's ImageNet-pretrained backbone part learns 10x slower.
        "backbone_learning_rate_multiplier": 0.1 if args.preset else 1.0,
    }
    if args.learning_rate is not None:
        options["learning_rate"] = args.learning_rate
    if args.instance_discrimination_sample_k is not None:
        if not isinstance(model, KMaXDeepLab):
            raise ValueError(
                "--instance-discrimination-sample-k is a kMaX-DeepLab option; "
                f"{type(model).__name__} has no instance discrimination loss."
            )
        options["instance_discrimination_sample_k"] = args.instance_discrimination_sample_k
    model.compile(**options)


def _fit(model, dataset, **fit_args):
    """`model.fit(dataset, ...).history`; a bad sample raises the dataset's own
    one-line message instead of TensorFlow's wrapped error and its traceback.

    That traceback holds the tf.data iterator. It is freed here, before the
    process exits: an iterator still alive at interpreter shutdown is deleted
    there while its loading threads wait for the GIL, and the process hangs.
    """
    import tensorflow as tf

    from keras_maxdeeplab.data.coco_panoptic import DatasetError

    marker = "DatasetError: "
    try:
        return model.fit(dataset, **fit_args).history
    except tf.errors.OpError as error:
        if marker not in error.message:
            raise
        message = error.message.split(marker, 1)[1].splitlines()[0]
    # Out of the except block the error is unreferenced; its cycles go now.
    gc.collect()
    raise DatasetError(f"{message} (pass --skip-errors to leave out unreadable samples)")


def run(args):
    import keras

    from keras_maxdeeplab import backend_seam
    from keras_maxdeeplab.data import COCOPanopticDataset

    if bool(args.preset) == bool(args.config):
        raise ValueError("train needs exactly one of --preset (fine-tune) or --config (scratch).")
    if args.batch_size % args.devices:
        raise ValueError(
            f"--batch-size {args.batch_size} (the global batch) cannot be split evenly over "
            f"--devices {args.devices}; use a multiple of {args.devices}."
        )
    keras.utils.set_random_seed(args.seed)
    on_error = "skip" if args.skip_errors else "raise"
    data = COCOPanopticDataset(*_dataset_paths(args), on_error=on_error)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(PRECISIONS[args.precision])
    try:
        # Built, compiled and trained inside: variables are placed (and batch
        # norms synchronised) when they are created.
        with backend_seam.data_parallel(args.devices):
            _train(args, data)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(args, data):
    import keras

    from keras_maxdeeplab.atomic_files import write_atomically
    from keras_maxdeeplab.atomic_files import write_folder_atomically
    from keras_maxdeeplab.training_checkpoint import StopAtStep
    from keras_maxdeeplab.training_checkpoint import TrainingCheckpoint

    model = build_model(args, data.categories)
    _compile(model, args)
    checkpoint = TrainingCheckpoint(os.path.join(args.output, "checkpoints"), args.steps_per_epoch)
    done = checkpoint.restore(model)
    history = {}
    if done < args.steps:
        if done:
            print(f"Resuming at step {done} of {args.steps}.")
        # The stream goes on where the checkpoint left it: same order, same augmentation.
        dataset = data.as_dataset(
            model=model, batch_size=args.batch_size, seed=args.seed, start=done * args.batch_size
        )
        remaining = args.steps - done
        history = _fit(
            model,
            dataset,
            steps_per_epoch=min(args.steps_per_epoch, remaining),
            epochs=-(-remaining // args.steps_per_epoch),
            callbacks=[checkpoint, StopAtStep(args.steps)],
            verbose=2 if args.quiet else "auto",
        )
    if checkpoint.diverged_at is not None:
        raise ValueError(
            f"Training stopped at step {checkpoint.diverged_at}: the loss became NaN or infinite. "
            f"The last checkpoint (step {checkpoint.saved_step or 0}) is kept; a lower "
            "--learning-rate (or more --warmup-steps) usually helps."
        )
    steps_done = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    _compile(model, args)  # a fresh optimizer: the preset keeps the weights, not the moments
    preset = os.path.join(args.output, "preset")
    write_folder_atomically(preset, model.save_to_preset)
    logs = {key: float(values[-1]) for key, values in history.items()}
    arguments = {k: v for k, v in vars(args).items() if not callable(v)}
    record = {"steps_done": steps_done, "last_logs": logs, "arguments": arguments}
    if data.skipped:
        record["skipped_samples"] = data.skipped
        for error in data.skipped:
            print(f"Skipped a sample: {error}")
    write_atomically(
        os.path.join(args.output, "training.json"),
        lambda f: json.dump(record, f, indent=2, default=str),
    )
    print(f"Trained to step {steps_done}; preset in {preset}")


def add_parser(commands):
    parser = commands.add_parser(
        "train",
        help="fine-tune a preset (or train a --config from scratch) on a COCO-panoptic folder",
    )
    parser.add_argument("data", help="dataset folder with images/, panoptic/ and panoptic.json")
    parser.add_argument("--output", required=True, help="folder for checkpoints and the preset")
    parser.add_argument("--preset", help="preset name, hf:// handle or folder to fine-tune")
    parser.add_argument("--config", choices=sorted(_configs()), help="train from scratch")
    parser.add_argument(
        "--crop-size",
        type=int,
        help=f"training crop, 16k+1 (kMaX-DeepLab: 32k+1; default: the preset's input size; "
        f"{SCRATCH_CROP_SIZE} with --config)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="global batch, split evenly over --devices"
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="local devices to train on, data-parallel (jax or tensorflow; default 1)",
    )
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default="fp32",
        help="fp32, or mixed precision with float32 weights: bf16, or fp16 (loss-scaled)",
    )
    parser.add_argument("--steps", type=int, default=20_000, help="total training steps")
    parser.add_argument(
        "--steps-per-epoch", type=int, default=1000, help="steps per epoch and per checkpoint"
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        help="peak learning rate (default: deeplab2's, 1e-3 for MaX-DeepLab, 5e-4 for kMaX-DeepLab)",
    )
    parser.add_argument(
        "--instance-discrimination-sample-k",
        type=int,
        help="kMaX-DeepLab: pixels sampled for its instance discrimination loss (default "
        "deeplab2's 4096; at most the stride-4 pixel count, 161x161 at crop 641)",
    )
    parser.add_argument("--warmup-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="one log line per epoch")
    parser.add_argument(
        "--skip-errors",
        action="store_true",
        help="leave out samples that cannot be read and list them at the end (default: stop)",
    )
    parser.set_defaults(run=run)
