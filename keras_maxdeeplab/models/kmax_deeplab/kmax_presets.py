"""kMaX-DeepLab presets: deeplab2's 17 published kMaX checkpoints.

deeplab2's model zoo (g3doc/projects/kmax_deeplab.md) publishes 17
checkpoints: COCO (7), Cityscapes (6) and ADE20K (4), on ResNet-50,
Axial-ResNet-50 (MaX-S with GeLU) and ConvNeXt-T/S/B/L backbones.

`KMAX_DEEPLAB_PRESETS` holds them, each loadable by name
(`KMaXDeepLab.from_preset("kmax_r50_coco")`): deeplab2's archive is
converted on first use by `load_kmax_checkpoint` and cached, as for
MaX-DeepLab (`keras_maxdeeplab.hub`). Entries follow `MAX_DEEPLAB_PRESETS`'
conventions (`metadata`, `kind`, `family` = `"kmax_deeplab"`, `handle`,
`config` of `KMAX_DEEPLAB_CONFIGS` (`<backbone>_cityscapes` for the Cityscapes
rows, which deeplab2 builds differently), `crop_size` (an int, or
`(height, width)` for Cityscapes), `training_steps`,
`postprocess_options` = deeplab2's evaluator options of the config (besides
`transformer_post_processing`, keyword arguments of
`keras_maxdeeplab.postprocessing.postprocess_panoptic_maskwise`), `archive`,
`archive_sha256`, `source_url`, `deeplab2_name` = its config file, `pq`)
plus `dataset`, `num_classes` (deeplab2's class channels, the `output_channels`
of its semantic head: COCO 134 and ADE20K 151 counting void 0; Cityscapes 19,
its void label being 255, to which the converter adds our void channel 0) and
`backbone` (in words).

`kmax_task_overrides(entry)` gives the `KMaXDeepLab` arguments a row builds
with besides its config (`kmax_dataset_overrides` of its dataset): the
dataset's categories, the evaluator options, and the transformer drop path
deeplab2 hard-codes per dataset.

`pq` holds deeplab2's val PQ, PQ things, PQ stuff by the official script and
PQ by deeplab2's own evaluator (single scale).
"""

from keras_maxdeeplab.coco.categories import ADE20K_PANOPTIC_CATEGORIES
from keras_maxdeeplab.coco.categories import CITYSCAPES_PANOPTIC_CATEGORIES
from keras_maxdeeplab.coco.categories import COCO_PANOPTIC_CATEGORIES
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import HF_ORG
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import deeplab2_archive

# deeplab2's kMaX configs, per backbone: the name in its config files, ours, in words.
_BACKBONES = {
    "r50": ("r50", "kmax_r50", "ResNet-50", "resnet50"),
    "axial_r50": ("axial_r50", "kmax_axial_r50", "Axial-ResNet-50 (MaX-S w/ GeLU)", "maxs_gelu"),
    "convnext_tiny": ("convnext_tiny", "kmax_convnext_tiny", "ConvNeXt-T", "convnext_tiny"),
    "convnext_small": ("convnext_small", "kmax_convnext_small", "ConvNeXt-S", "convnext_small"),
    "convnext_base": ("convnext_base", "kmax_convnext_base", "ConvNeXt-B", "convnext_base"),
    "convnext_large": ("convnext_large", "kmax_convnext_large", "ConvNeXt-L", "convnext_large"),
}
_DATASETS = {
    # dataset: (deeplab2's name, class channels, training steps, title)
    "coco": ("coco_panoptic", 134, 150_000, "COCO panoptic (133 classes)"),
    "cityscapes": ("cityscapes_panoptic", 19, 60_000, "Cityscapes panoptic (19 classes)"),
    "ade20k": ("ade20k_panoptic", 151, 100_000, "ADE20K panoptic (150 classes)"),
}
# Model sizes counted on the built models, deeplab2's own counts
# (shared/reference/kmax_deeplab_tiny README section 2e;
# tests/models/deeplab2_convnext/params_full.json;
# tests/models/deeplab2_cityscapes/params_full.json plus our void channel's
# 257 semantic-head weights).
_PARAMS = {
    "kmax_r50": 72_650_796,
    "kmax_axial_r50": 90_577_452,
    "kmax_convnext_tiny": 67_430_412,
    "kmax_convnext_small": 89_064_972,
    "kmax_convnext_base": 129_912_300,
    "kmax_convnext_large": 244_047_276,
    "kmax_r50_cityscapes": 57_198_908,
    "kmax_axial_r50_cityscapes": 75_127_740,
    "kmax_convnext_tiny_cityscapes": 61_143_132,
    "kmax_convnext_small_cityscapes": 82_777_692,
    "kmax_convnext_base_cityscapes": 121_793_404,
    "kmax_convnext_large_cityscapes": 232_265_148,
}
# ADE20K's 151 class channels against COCO's 134: each class has 257 weights
# (kernel row of 256 + bias) in the final class head, the six k-means blocks'
# auxiliary class heads and the semantic head's last convolution.
_CLASS_WEIGHTS = 257 * 8
# deeplab2's evaluator options of the kMaX COCO configs (maskwise post-processing).
_COCO_POSTPROCESS = {
    "transformer_post_processing": "maskwise",
    "pixel_confidence_threshold": 0.4,
    "transformer_class_confidence_threshold_thing": 0.7,
    "transformer_class_confidence_threshold_stuff": 0.5,
    "overlapping_threshold": 0.8,
    "reorder_class_weight": 1.0,
    "reorder_mask_weight": 1.0,
    "thing_area_limit": 400,
    "stuff_area_limit": 6400,
}
# deeplab2's evaluator options of the kMaX ADE20K configs (no area limits).
_ADE20K_POSTPROCESS = {
    **_COCO_POSTPROCESS,
    "transformer_class_confidence_threshold_thing": 0.4,
    "transformer_class_confidence_threshold_stuff": 0.4,
    "thing_area_limit": 0,
    "stuff_area_limit": 0,
}
# deeplab2's evaluator options of the kMaX Cityscapes configs.
_CITYSCAPES_POSTPROCESS = {
    **_COCO_POSTPROCESS,
    "transformer_class_confidence_threshold_thing": 0.5,
    "transformer_class_confidence_threshold_stuff": 0.3,
    "overlapping_threshold": 0.9,
    "reorder_mask_weight": 0.0,
    "thing_area_limit": 256,
    "stuff_area_limit": 2048,
}
_DATASET_POSTPROCESS = {
    "coco": _COCO_POSTPROCESS,
    "cityscapes": _CITYSCAPES_POSTPROCESS,
    "ade20k": _ADE20K_POSTPROCESS,
}
_DATASET_CATEGORIES = {
    "coco": COCO_PANOPTIC_CATEGORIES,
    "cityscapes": CITYSCAPES_PANOPTIC_CATEGORIES,
    "ade20k": ADE20K_PANOPTIC_CATEGORIES,
}
# deeplab2 hard-codes the transformer decoder's drop path per dataset
# (`model/kmax_deeplab.py`): keep probability 0.8, 1.0 for ADE20K.
_TRANSFORMER_DROP_PATH_KEEP_PROB = {"coco": 0.8, "cityscapes": 0.8, "ade20k": 1.0}
# The datasets whose kMaX checkpoints this package builds.
KMAX_DATASETS = tuple(_DATASET_CATEGORIES)


def _row(backbone, dataset, crop_size, pq, archive_stem, config_suffix="", name_suffix=""):
    deeplab2_config, config, title, _ = _BACKBONES[backbone]
    dataset_name, num_classes, steps, dataset_title = _DATASETS[dataset]
    if dataset == "cityscapes":
        config = f"{config}_cityscapes"
        params = _PARAMS[config]
    else:
        params = _PARAMS[config] + _CLASS_WEIGHTS * (num_classes - 134)
    name = f"kmax_{backbone}_{dataset}{name_suffix}"
    height, width = crop_size if isinstance(crop_size, tuple) else (crop_size, crop_size)
    official, things, stuff, deeplab2 = pq
    description = (
        f"kMaX-DeepLab with a {title} backbone trained by deeplab2 on {dataset_title} at "
        f"{height}x{width} for {steps // 1000}k steps. Val PQ {official} (things {things}, "
        f"stuff {stuff}; {deeplab2} by deeplab2's evaluator)."
    )
    entry = {
        "metadata": {
            "description": description,
            "params": params,
            "path": "kmax_deeplab",
        },
        "kind": "task",
        "family": "kmax_deeplab",
        "handle": f"hf://{HF_ORG}/{name}",
        "config": config,
        "backbone": title,
        "dataset": dataset_name,
        "num_classes": num_classes,
        "crop_size": crop_size,
        "training_steps": steps,
        "postprocess_options": dict(_DATASET_POSTPROCESS[dataset]),
        **deeplab2_archive(archive_stem),
        "deeplab2_name": f"kmax_meta_{deeplab2_config}_os32{config_suffix}",
        "pq": {"pq": official, "pq_thing": things, "pq_stuff": stuff, "pq_deeplab2": deeplab2},
    }
    return name, entry


def _zoo_row(backbone, dataset, pq, name_suffix=""):
    """A COCO or Cityscapes row: one crop per dataset, archive named after the backbone."""
    archive_backbone = _BACKBONES[backbone][3]
    crop = 1281 if dataset == "coco" else (1025, 2049)
    stem = f"kmax_{archive_backbone}_{dataset}_train{name_suffix}"
    return _row(backbone, dataset, crop, pq, stem, name_suffix=name_suffix)


def _ade20k_row(backbone, crop_size, pq):
    suffix = "_res1281" if crop_size == 1281 else ""
    stem = f"kmax_{_BACKBONES[backbone][3]}_res{crop_size}_ade20k_train"
    return _row(backbone, "ade20k", crop_size, pq, stem, suffix, f"_{crop_size}")


# deeplab2's model zoo, in its order: val PQ, PQ things, PQ stuff (official
# script), PQ (deeplab2's evaluator).
_ZOO = dict(
    [
        _zoo_row("r50", "coco", (53.0, 58.3, 44.9, 53.50)),
        _zoo_row("axial_r50", "coco", (56.2, 62.2, 47.1, 56.71)),
        _zoo_row("convnext_tiny", "coco", (55.3, 61.0, 46.7, 55.80)),
        _zoo_row("convnext_small", "coco", (56.3, 62.2, 47.5, 56.86)),
        _zoo_row("convnext_base", "coco", (57.2, 63.4, 47.8, 57.73)),
        _zoo_row("convnext_large", "coco", (57.9, 64.0, 48.6, 58.38)),
        # The same config trained with COCO's unlabeled images too.
        _zoo_row("convnext_large", "coco", (58.1, 64.3, 48.8, 58.69), "_unlabeled"),
        _zoo_row("r50", "cityscapes", (64.3, 57.7, 69.1, 64.65)),
        _zoo_row("axial_r50", "cityscapes", (66.4, 61.2, 70.2, 66.73)),
        _zoo_row("convnext_tiny", "cityscapes", (66.3, 60.2, 70.8, 66.65)),
        _zoo_row("convnext_small", "cityscapes", (67.3, 61.6, 71.5, 67.71)),
        _zoo_row("convnext_base", "cityscapes", (68.0, 62.6, 72.0, 68.30)),
        _zoo_row("convnext_large", "cityscapes", (68.4, 62.9, 72.4, 68.73)),
        _ade20k_row("r50", 641, (41.5, 40.4, 43.7, 41.47)),
        _ade20k_row("r50", 1281, (42.3, 42.2, 42.5, 42.37)),
        _ade20k_row("convnext_large", 641, (48.7, 48.0, 50.0, 48.75)),
        _ade20k_row("convnext_large", 1281, (50.9, 51.0, 50.7, 50.92)),
    ]
)
KMAX_DEEPLAB_PRESETS = _ZOO


def get_kmax_preset(name):
    """The entry of a loadable kMaX preset name, or None for any other string.

    Example:
    >>> get_kmax_preset("kmax_r50_coco")["crop_size"]
    1281
    """
    return KMAX_DEEPLAB_PRESETS.get(name) if isinstance(name, str) else None


def kmax_dataset_overrides(dataset):
    """The `KMaXDeepLab` keyword arguments deeplab2's kMaX configs of a
    dataset (`"coco"`, `"cityscapes"` or `"ade20k"`) imply besides the
    architecture: its
    `categories`, the evaluator options (`postprocess_options`) and
    `transformer_drop_path_keep_prob`.

    Example:
    >>> kmax_dataset_overrides("ade20k")["postprocess_options"]["thing_area_limit"]
    0
    """
    if dataset not in KMAX_DATASETS:
        raise ValueError(
            f"Unknown kMaX-DeepLab dataset {dataset!r}; expected one of {KMAX_DATASETS}."
        )
    options = dict(_DATASET_POSTPROCESS[dataset])
    options.pop("transformer_post_processing")  # KMaXDeepLab post-processes maskwise.
    return {
        "categories": _DATASET_CATEGORIES[dataset],
        "postprocess_options": options,
        "transformer_drop_path_keep_prob": _TRANSFORMER_DROP_PATH_KEEP_PROB[dataset],
    }


def kmax_task_overrides(entry):
    """`kmax_dataset_overrides` of a table row's dataset.

    Example:
    >>> kmax_task_overrides(get_kmax_preset("kmax_r50_ade20k_641"))["categories"][0]["name"]
    'wall'
    """
    return kmax_dataset_overrides(entry["dataset"].removesuffix("_panoptic"))


def listed_kmax_presets():
    """`{name: {"metadata": ..., "handle": ...}}` of the loadable kMaX presets,
    for keras-hub's `presets` property."""
    return {
        name: {"metadata": dict(entry["metadata"]), "handle": entry["handle"]}
        for name, entry in KMAX_DEEPLAB_PRESETS.items()
    }
