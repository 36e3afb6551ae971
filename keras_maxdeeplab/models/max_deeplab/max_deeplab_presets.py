"""MaX-DeepLab presets: deeplab2's published checkpoints as keras-hub presets.

Each entry of `MAX_DEEPLAB_PRESETS` names one deeplab2 checkpoint and holds
everything needed to rebuild its architecture without a download (`config`,
a name of `MAX_DEEPLAB_CONFIGS`, the `crop_size` and the
`postprocess_options` of deeplab2's config), where published converted
weights live (`handle`, a Hugging Face repository), deeplab2's archive they
are converted from on first use (`archive`, a file name under
`CHECKPOINT_BASE_URL`; `source_url` is its default address; `archive_sha256`
its digest where known, refused on mismatch), and what deeplab2 reports for
them (`pq`, COCO val, single scale). `metadata` follows keras-hub's preset
tables (`description`, `params`, `path`).

`family` (`"max_deeplab"`) names the model family, which decides the
builder and the converter (kMaX-DeepLab's table, `kmax_presets.py`, says
`"kmax_deeplab"`). `kind` is `"task"` (a full `MaXDeepLab` trained on COCO panoptic) or
`"backbone"` (an ImageNet-1K-pretrained `MaXDeepLabBackbone` to fine-tune on
new data: deeplab2's starting point; its dual-path transformers, memory and
decoder are not pretrained). `params` counts every weight of the preset's
model (the task for COCO presets, the backbone for ImageNet ones).

The human-readable copies under the repository's `presets/` folder are
generated from this table by `tools/make_presets.py definitions`.
"""

import os

HF_ORG = "keras-maxdeeplab"
# Where deeplab2 publishes its checkpoints (g3doc/projects/max_deeplab.md).
CHECKPOINT_BASE_URL = "https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint"

# Model sizes, counted on the built models (keras `count_params`).
_TASK_PARAMS = {"max_deeplab_s": 77_990_256, "max_deeplab_l": 451_622_800}
_BACKBONE_PARAMS = {"max_deeplab_s": 61_951_872, "max_deeplab_l": 451_272_192}
_TITLES = {"max_deeplab_s": "MaX-DeepLab-S", "max_deeplab_l": "MaX-DeepLab-L"}

# deeplab2 post-processes its 1025x1025 COCO models with larger area limits.
_POSTPROCESS_1025 = {"thing_area_limit": 256, "stuff_area_limit": 4096}


def deeplab2_archive(archive_stem):
    """The `archive`, `archive_sha256` and `source_url` of a preset entry for
    deeplab2's `<archive_stem>.tar.gz` under `CHECKPOINT_BASE_URL`.

    Example:
    >>> deeplab2_archive("kmax_resnet50_coco_train")["source_url"]
    'https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/kmax_resnet50_coco_train.tar.gz'
    """
    archive = f"{archive_stem}.tar.gz"
    # deeplab2 publishes no digests; a preset whose archive digest is known sets it.
    return {
        "archive": archive,
        "archive_sha256": None,
        "source_url": f"{CHECKPOINT_BASE_URL}/{archive}",
    }


def _coco(config, crop_size, steps, pq, pq_thing, pq_stuff, pq_deeplab2):
    deeplab2_name = f"{config}_os16_res{crop_size}_{steps // 1000}k"
    name = f"{config}_coco_{crop_size}_{steps // 1000}k"
    description = (
        f"{_TITLES[config]} trained by deeplab2 on COCO panoptic (133 classes) at "
        f"{crop_size}x{crop_size} for {steps // 1000}k steps. COCO val PQ {pq} "
        f"(things {pq_thing}, stuff {pq_stuff}; {pq_deeplab2} by deeplab2's evaluator)."
    )
    return name, {
        "metadata": {
            "description": description,
            "params": _TASK_PARAMS[config],
            "path": "max_deeplab",
        },
        "kind": "task",
        "family": "max_deeplab",
        "handle": f"hf://{HF_ORG}/{name}",
        "config": config,
        "crop_size": crop_size,
        "training_steps": steps,
        "postprocess_options": dict(_POSTPROCESS_1025) if crop_size == 1025 else {},
        **deeplab2_archive(f"{deeplab2_name}_coco_train"),
        "deeplab2_name": deeplab2_name,
        "pq": {"pq": pq, "pq_thing": pq_thing, "pq_stuff": pq_stuff, "pq_deeplab2": pq_deeplab2},
    }


def _imagenet(config, crop_size, pretrained_params):
    name = f"{config}_imagenet"
    deeplab2_name = f"{config}_backbone_imagenet1k_strong_training_strategy"
    description = (
        f"{_TITLES[config]} backbone whose Axial-ResNet pixel path ({pretrained_params} "
        "weights) deeplab2 pretrained on ImageNet-1K (strong training strategy); the "
        "dual-path transformers, memory and decoder are freshly initialised. The starting "
        "point of deeplab2's COCO recipe, for training on new data."
    )
    return name, {
        "metadata": {
            "description": description,
            "params": _BACKBONE_PARAMS[config],
            "path": "max_deeplab",
        },
        "kind": "backbone",
        "family": "max_deeplab",
        "handle": f"hf://{HF_ORG}/{name}",
        "config": config,
        "crop_size": crop_size,
        "training_steps": None,
        "postprocess_options": {},
        **deeplab2_archive(deeplab2_name),
        "deeplab2_name": deeplab2_name,
        "pq": None,
    }


# deeplab2's model zoo (g3doc/projects/max_deeplab.md): PQ, PQ thing, PQ stuff
# by the official COCO script, then PQ by deeplab2's own evaluator.
MAX_DEEPLAB_PRESETS = dict(
    [
        _coco("max_deeplab_s", 641, 100_000, 45.9, 49.2, 40.9, 46.36),
        _coco("max_deeplab_s", 641, 200_000, 46.5, 50.6, 40.4, 47.04),
        _coco("max_deeplab_s", 641, 400_000, 47.0, 51.3, 40.5, 47.56),
        _coco("max_deeplab_s", 1025, 100_000, 47.9, 52.1, 41.5, 48.41),
        _coco("max_deeplab_s", 1025, 200_000, 48.7, 53.6, 41.3, 49.23),
        _coco("max_deeplab_s", 1025, 400_000, 49.0, 54.0, 41.4, 49.54),
        _coco("max_deeplab_l", 1025, 100_000, 50.9, 56.9, 42.0, 51.48),
        _coco("max_deeplab_l", 1025, 200_000, 51.1, 56.8, 42.5, 51.64),
        _coco("max_deeplab_l", 1025, 400_000, 51.3, 57.5, 42.0, 51.87),
        # Crop sizes of deeplab2's COCO recipes; `image_shape=` changes them.
        _imagenet("max_deeplab_s", 641, "41.3M"),
        _imagenet("max_deeplab_l", 1025, "175.1M"),
    ]
)

# Short names for the best checkpoint of each size.
MAX_DEEPLAB_PRESET_ALIASES = {
    "max_deeplab_s_coco": "max_deeplab_s_coco_1025_400k",
    "max_deeplab_l_coco": "max_deeplab_l_coco_1025_400k",
}


def preset_names():
    """Every name `from_preset` accepts without a folder or handle, aliases included."""
    return sorted(MAX_DEEPLAB_PRESETS) + sorted(MAX_DEEPLAB_PRESET_ALIASES) + sorted(EMBEDDED_PRESETS)


_PACKAGE_PRESETS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "presets"
)
# Presets shipped inside the package: a name, a folder, nothing to download.
EMBEDDED_PRESETS = {
    "max_deeplab_tiny_synthetic": {
        "folder": os.path.join(_PACKAGE_PRESETS, "max_deeplab_tiny_synthetic"),
        "crop_size": 129,
        "training_steps": 4000,
        "metadata": {
            "description": (
                "A tiny MaX-DeepLab (129x129) this project trained on synthetic scenes of "
                "rectangles, discs and stripes (tools/train_demo_preset.py; held-out PQ 86.2). "
                "Shipped with the package for the offline demo and tests; meaningless on photos."
            ),
            "params": 911_982,
            "path": "max_deeplab",
        },
    }
}


def embedded_preset_folder(name):
    """The folder of a preset shipped inside the package, or None.

    Example:
    >>> embedded_preset_folder("max_deeplab_tiny_synthetic")  # .../keras_maxdeeplab/presets/...
    """
    entry = EMBEDDED_PRESETS.get(name) if isinstance(name, str) else None
    return entry["folder"] if entry else None


def canonical_preset_name(name):
    """The table name of a preset name or alias (aliases share one cache entry).

    Example:
    >>> canonical_preset_name("max_deeplab_s_coco")
    'max_deeplab_s_coco_1025_400k'
    """
    return MAX_DEEPLAB_PRESET_ALIASES.get(name, name)


def get_preset(name):
    """The table entry of a preset name or alias, or None for any other string.

    Example:
    >>> get_preset("max_deeplab_s_coco")["crop_size"]  # 1025
    """
    return MAX_DEEPLAB_PRESETS.get(canonical_preset_name(name))


def listed_presets():
    """`{name: {"metadata": ..., "handle": ...}}` for keras-hub's `presets` property.

    Aliases are listed too, their description naming the preset they stand for,
    and the presets shipped in the package, their folder as handle.
    """
    listed = {
        name: {"metadata": dict(entry["metadata"]), "handle": entry["handle"]}
        for name, entry in MAX_DEEPLAB_PRESETS.items()
    }
    for alias, target in MAX_DEEPLAB_PRESET_ALIASES.items():
        metadata = dict(listed[target]["metadata"])
        metadata["description"] = f"Alias of {target}. " + metadata["description"]
        listed[alias] = {"metadata": metadata, "handle": listed[target]["handle"]}
    for name, entry in EMBEDDED_PRESETS.items():
        listed[name] = {"metadata": dict(entry["metadata"]), "handle": entry["folder"]}
    return listed
