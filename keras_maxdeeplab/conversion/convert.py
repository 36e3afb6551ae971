"""deeplab2 checkpoint (MaX-DeepLab or kMaX-DeepLab) -> keras-hub preset folder, in one call."""

import datetime
import json
import os

from keras_maxdeeplab.atomic_files import write_folder_atomically
from keras_maxdeeplab.conversion.archive import sha256_of
from keras_maxdeeplab.conversion.deeplab2 import load_deeplab2_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import load_kmax_checkpoint
from keras_maxdeeplab.conversion.imagenet import load_imagenet_backbone
from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import kmax_task_overrides
from keras_maxdeeplab.models.max_deeplab.max_deeplab_builder import build_backbone
from keras_maxdeeplab.models.max_deeplab.max_deeplab_builder import build_model
from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import (
    MaXDeepLabImageConverter,
)
from keras_maxdeeplab.version import __version__

CONVERSION_FILE = "conversion.json"


def checkpoint_digests(path):
    """sha256 of every file of a TF checkpoint (folder or prefix): `{name: hex}`."""
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    prefix = None if os.path.isdir(path) else os.path.basename(path)
    names = sorted(
        name
        for name in os.listdir(folder)
        if (name.endswith(".index") or ".data-" in name)
        and (prefix is None or name.startswith(prefix + "."))
    )
    return {name: sha256_of(os.path.join(folder, name)) for name in names}


def convert_checkpoint(
    checkpoint,
    output_dir,
    config="max_deeplab_s",
    crop_size=641,
    overrides=None,
    source_url=None,
    overwrite=False,
    record=None,
):
    """Converts a deeplab2 MaX-DeepLab checkpoint into a keras-hub preset folder.

    The conversion is strict (see `load_deeplab2_checkpoint`) and atomic: the
    preset is written to a temporary folder and moved to `output_dir` only
    once complete, so a failure leaves nothing behind. Besides keras-hub's
    files, `conversion.json` names the source checkpoint (path, URL, sha256 of
    its files), the configuration, the crop size, this package's version and
    the date, plus the entries of `record`.

    Returns:
        The converted `MaXDeepLab` model.

    Example:
    >>> convert_checkpoint("max_deeplab_s_os16_res641_400k", "presets/max_deeplab_s_coco_641",
    ...                    config="max_deeplab_s", crop_size=641)
    """
    return _convert_task(
        lambda: build_model(config, crop_size, overrides),
        load_deeplab2_checkpoint,
        checkpoint,
        output_dir,
        (config, crop_size, overrides, source_url, overwrite, record),
    )


def convert_kmax_checkpoint(
    checkpoint,
    output_dir,
    config="kmax_r50",
    crop_size=1281,
    overrides=None,
    source_url=None,
    overwrite=False,
    record=None,
):
    """Converts a deeplab2 kMaX-DeepLab checkpoint into a keras-hub preset
    folder and returns the converted `KMaXDeepLab`: strict
    (`load_kmax_checkpoint`) and atomic like `convert_checkpoint`, with the
    same `conversion.json`. `overrides`: `KMaXDeepLab` arguments of another
    dataset than COCO (`kmax_task_overrides` of a preset row: its
    categories, evaluator options and transformer drop path).

    Example:
    >>> model = convert_kmax_checkpoint("kmax_resnet50_coco_train", "presets/kmax_r50_coco")
    """

    def build():
        return build_kmax_model(config, crop_size, overrides=overrides)

    options = (config, crop_size, overrides, source_url, overwrite, record)
    return _convert_task(build, load_kmax_checkpoint, checkpoint, output_dir, options)


def _convert_task(build, load, checkpoint, output_dir, options):
    """`build()` a task, `load(model, checkpoint)` into it and write its preset
    folder; `options`: `(config, crop_size, overrides, source_url, overwrite, record)`."""
    config, crop_size, overrides, source_url, overwrite, record = options
    output_dir = os.path.abspath(output_dir)
    check_output_folder(output_dir, overwrite)
    model = build()
    load(model, checkpoint)
    record = {
        **_source_record(checkpoint, source_url, config, crop_size),
        "overrides": overrides or {},
        **(record or {}),
    }
    write_preset([model], output_dir, record)
    return model


def convert_imagenet_backbone(
    checkpoint,
    output_dir,
    config="max_deeplab_s",
    crop_size=641,
    source_url=None,
    overwrite=False,
    record=None,
):
    """Converts a deeplab2 ImageNet-pretrained backbone checkpoint into a
    backbone preset folder (backbone, image converter, `conversion.json`).

    Only the Axial-ResNet pixel path is pretrained (see
    `load_imagenet_backbone`); the checkpoint keys the backbone has no weight
    for (the ImageNet classifier) are listed in `conversion.json` under
    `skipped_variables`. Atomic like `convert_checkpoint`.

    Returns:
        The converted `MaXDeepLabBackbone`.

    Example:
    >>> convert_imagenet_backbone("max_deeplab_s_backbone_imagenet1k_strong_training_strategy",
    ...                           "presets/max_deeplab_s_imagenet", config="max_deeplab_s")
    """
    output_dir = os.path.abspath(output_dir)
    check_output_folder(output_dir, overwrite)
    backbone = build_backbone(config, crop_size)
    skipped = load_imagenet_backbone(backbone, checkpoint)
    record = {
        **_source_record(checkpoint, source_url, config, crop_size),
        "overrides": {},
        "skipped_variables": skipped,
        **(record or {}),
    }
    converter = MaXDeepLabImageConverter(image_size=(crop_size, crop_size))
    write_preset([backbone, converter], output_dir, record)
    return backbone


def convert_preset(entry, checkpoint, output_dir, source_url=None, record=None, overwrite=False):
    """Converts the deeplab2 checkpoint of a `MAX_DEEPLAB_PRESETS` or
    `KMAX_DEEPLAB_PRESETS` entry with the entry's architecture, crop and
    post-processing options: a kMaX-DeepLab preset (`family`
    `"kmax_deeplab"`) by `convert_kmax_checkpoint`, a MaX-DeepLab task by
    `convert_checkpoint`, an ImageNet backbone by `convert_imagenet_backbone`.

    Example:
    >>> convert_preset(MAX_DEEPLAB_PRESETS["max_deeplab_s_coco_641_400k"],
    ...                "max_deeplab_s_os16_res641_400k", "presets/s641")
    """
    config, crop = entry["config"], entry["crop_size"]
    if entry["family"] == "kmax_deeplab":
        overrides = kmax_task_overrides(entry)
        return convert_kmax_checkpoint(
            checkpoint, output_dir, config, crop, overrides, source_url, overwrite, record
        )
    if entry["kind"] == "backbone":
        return convert_imagenet_backbone(
            checkpoint, output_dir, config, crop, source_url, overwrite, record
        )
    options = entry["postprocess_options"]
    overrides = {"postprocess_options": dict(options)} if options else None
    return convert_checkpoint(
        checkpoint, output_dir, config, crop, overrides, source_url, overwrite, record
    )


def _source_record(checkpoint, source_url, config, crop_size):
    return {
        "source_checkpoint": os.path.abspath(checkpoint),
        "source_url": source_url,
        "source_sha256": checkpoint_digests(checkpoint),
        "config": config,
        "crop_size": crop_size,
        "converter_version": __version__,
        "converted_on": datetime.date.today().isoformat(),
    }


def check_output_folder(output_dir, overwrite):
    """Refuses, before any work, a non-empty `output_dir` unless `overwrite`,
    and with `overwrite` one that is not a preset folder (a folder of other
    files is never deleted)."""
    if not (os.path.exists(output_dir) and os.listdir(output_dir)):
        return
    if not overwrite:
        raise ValueError(
            f"Output folder {output_dir!r} exists and is not empty (pass --overwrite, or "
            "overwrite=True, to replace a preset there)."
        )
    if not os.path.isfile(os.path.join(output_dir, "config.json")):
        raise ValueError(
            f"Output folder {output_dir!r} is not a preset folder (no config.json): overwrite "
            "replaces presets only; choose another folder."
        )


def write_preset(parts, output_dir, record):
    """Writes a preset folder atomically (`write_folder_atomically`): each of
    `parts` (a model, an image converter, ...) `save_to_preset` plus
    `conversion.json` = `record`; a failure leaves nothing behind and an
    existing preset stays whole until the new one is complete."""

    def fill(folder):
        for part in parts:
            part.save_to_preset(folder)
        with open(os.path.join(folder, CONVERSION_FILE), "w") as f:
            json.dump(record, f, indent=2)

    write_folder_atomically(output_dir, fill)
