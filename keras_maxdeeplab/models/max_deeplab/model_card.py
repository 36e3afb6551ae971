"""The Hugging Face model card (README.md) of a MaX-DeepLab preset folder.

Written from the folder's own files: `config.json` and `task.json`
(architecture, classes, post-processing), `metadata.json` (parameters,
versions) and, for converted presets, `conversion.json` (the source
checkpoint). A preset name or source URL found in `MAX_DEEPLAB_PRESETS` adds the preset's
name, description and deeplab2's published PQ.
"""

import json
import os

from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESETS

README_FILE = "README.md"
CONVERSION_FILE = "conversion.json"
_ARCHITECTURES = {"resnet_beta": "MaX-DeepLab-S", "wider_resnet": "MaX-DeepLab-L"}

CITATION = """@inproceedings{max_deeplab_2021,
  author={Huiyu Wang and Yukun Zhu and Hartwig Adam and Alan Yuille and Liang-Chieh Chen},
  title={{MaX-DeepLab}: End-to-End Panoptic Segmentation with Mask Transformers},
  booktitle={CVPR},
  year={2021}
}"""


def _read(preset_dir, filename):
    path = os.path.join(preset_dir, filename)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _table_entry(conversion):
    name = (conversion or {}).get("preset")  # Set by the conversion on first use.
    if name in MAX_DEEPLAB_PRESETS:
        return name, MAX_DEEPLAB_PRESETS[name]
    url = (conversion or {}).get("source_url")
    for name, entry in MAX_DEEPLAB_PRESETS.items():
        if url and entry["source_url"] == url:
            return name, entry
    return None, None


def _front_matter(entry):
    datasets = ["coco"] if entry is None or entry["kind"] == "task" else ["imagenet-1k"]
    lines = [
        "---",
        "library_name: keras-hub",
        "license: apache-2.0",
        "pipeline_tag: image-segmentation",
        "tags:",
        *[
            f"- {tag}"
            for tag in ("keras", "keras-maxdeeplab", "max-deeplab", "panoptic-segmentation")
        ],
        "datasets:",
        *[f"- {dataset}" for dataset in datasets],
        "---",
    ]
    return "\n".join(lines)


def _architecture(backbone, task, metadata, conversion):
    height, width = backbone["image_shape"][:2]
    config_name = (conversion or {}).get("config")
    model = _ARCHITECTURES.get(backbone["backbone_type"], backbone["backbone_type"])
    rows = [
        ("Architecture", f"{model}" + (f" (`{config_name}`)" if config_name else "")),
        ("Input", f"{height}x{width} RGB (any image is resized and padded to it)"),
        ("Mask slots (max. segments)", backbone["num_mask_slots"]),
    ]
    if metadata and "parameter_count" in metadata:
        rows.append(("Backbone parameters", f"{metadata['parameter_count']:,}"))
    if task:
        categories = task["categories"]
        things = sum(1 for c in categories if c["isthing"])
        rows.append(
            (
                "Classes",
                f"{len(categories)} ({things} things, {len(categories) - things} stuff) + void",
            )
        )
        options = ", ".join(f"{k} {v}" for k, v in sorted(task["postprocess_options"].items()))
        rows.append(("Post-processing", options))
    else:
        rows.append(("Heads", "none: a backbone to build `MaXDeepLab` on (see Usage)"))
    if metadata:
        rows.append(
            (
                "Saved with",
                f"Keras {metadata['keras_version']}, keras-hub {metadata['keras_hub_version']}",
            )
        )
    return "\n".join(["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]])


def _source(conversion, entry):
    if conversion is None:
        return (
            "This preset was not converted from a deeplab2 checkpoint (it has no "
            "`conversion.json`): it was saved with `save_to_preset`, e.g. after fine-tuning."
        )
    rows = []
    if entry is not None:
        rows.append(f"deeplab2 model zoo checkpoint: `{entry['deeplab2_name']}`")
    if conversion.get("source_url"):
        rows.append(f"Downloaded from: {conversion['source_url']}")
    rows.append(
        f"Converted on {conversion.get('converted_on', 'an unrecorded date')} by "
        "keras-maxdeeplab's strict converter (`keras_maxdeeplab.conversion`): each checkpoint "
        "variable is assigned to exactly one weight of the same shape"
    )
    if conversion.get("skipped_variables"):
        rows.append(
            f"Not converted: {len(conversion['skipped_variables'])} checkpoint variables that "
            "MaX-DeepLab has no weight for (e.g. the ImageNet classifier), listed in `conversion.json`"
        )
    # The categories are the card's own section (and task.json's).
    overrides = dict(conversion.get("overrides") or {})
    overrides.pop("categories", None)
    if overrides:
        rows.append(f"Architecture overrides: `{json.dumps(overrides)}`")
    for filename, digest in sorted((conversion.get("source_sha256") or {}).items()):
        rows.append(f"SHA-256 of `{filename}`: `{digest}`")
    return "\n".join(f"- {row}" for row in rows)


def _results(entry):
    if entry is None or entry["pq"] is None:
        return None
    pq = entry["pq"]
    return "\n".join(
        [
            "COCO panoptic val2017, single scale, as deeplab2 reports them for the source "
            "checkpoint (`g3doc/projects/max_deeplab.md`):",
            "",
            "| PQ | PQ things | PQ stuff | PQ (deeplab2's evaluator) |",
            "|---|---|---|---|",
            f"| {pq['pq']} | {pq['pq_thing']} | {pq['pq_stuff']} | {pq['pq_deeplab2']} |",
        ]
    )


def _usage(handle, task):
    if task:
        code = [
            "import keras_maxdeeplab",
            "",
            f'model = keras_maxdeeplab.MaXDeepLab.from_preset("{handle}")',
            "result = model.predict_panoptic(image)[0]  # image: [H, W, 3] uint8",
            'print([(s["label"], s["score"]) for s in result["segments_info"]])',
        ]
    else:
        code = [
            "import keras_maxdeeplab",
            "",
            "# categories: your dataset's COCO-style list of {id, name, isthing}",
            "model = keras_maxdeeplab.MaXDeepLab.from_preset(",
            f'    "{handle}", categories=categories',
            ")",
            "model.fit(dataset)",
        ]
    return "\n".join(["```python", *code, "```"])


def _licence(entry):
    lines = [
        "The weights are converted from a checkpoint released with "
        "[deeplab2](https://github.com/google-research/deeplab2), which is distributed under "
        "the Apache License 2.0; this conversion is distributed under the same licence."
    ]
    if entry is None or entry["kind"] == "task":
        lines.append(
            "The model was trained on COCO panoptic: the COCO annotations are licensed under "
            "CC BY 4.0 (COCO Consortium); the images remain under their Flickr terms."
        )
    else:
        lines.append("The backbone was pretrained on ImageNet-1K; see ImageNet's terms of access.")
    return "\n\n".join(lines)


def model_card(preset_dir, handle=None):
    """The model card (Markdown with Hugging Face front matter) of a preset folder.

    Args:
        preset_dir: a MaX-DeepLab preset folder.
        handle: how users load it (e.g. `hf://org/name`), for the usage
            snippet; default: the table name when known, else the folder.

    Returns:
        str: front matter, description, usage, architecture, source
        checkpoint, results (deeplab2's PQ, for table presets), licence and
        the MaX-DeepLab citation.

    Example:
    >>> print(model_card("presets/max_deeplab_s_coco_641_400k"))
    """
    backbone_config = _read(preset_dir, "config.json")
    if backbone_config is None:
        raise ValueError(f"{preset_dir!r} is not a preset folder: it has no config.json.")
    backbone = backbone_config["config"]
    task_config = _read(preset_dir, "task.json")
    task = task_config["config"] if task_config else None
    metadata = _read(preset_dir, "metadata.json")
    conversion = _read(preset_dir, CONVERSION_FILE)
    name, entry = _table_entry(conversion)
    title = name or os.path.basename(os.path.normpath(preset_dir))
    description = (
        entry["metadata"]["description"]
        if entry
        else "A MaX-DeepLab model saved with keras-maxdeeplab."
    )
    sections = [
        _front_matter(entry),
        f"# {title}",
        description,
        "MaX-DeepLab (Wang et al., CVPR 2021) segments images panoptically end to end: a mask "
        "transformer predicts a set of class-labelled masks directly, with no boxes, no "
        "non-maximum suppression and no thing/stuff merging. This is the Keras 3 port of "
        "deeplab2's implementation by the keras-maxdeeplab package, built on keras-hub; "
        "it runs on JAX, TensorFlow and PyTorch.",
        "## Usage",
        _usage(handle or name or preset_dir, task is not None),
        "## Architecture",
        _architecture(backbone, task, metadata, conversion),
        "## Source checkpoint",
        _source(conversion, entry),
    ]
    results = _results(entry)
    if results:
        sections += ["## Results", results]
    sections += [
        "## Licence",
        _licence(entry),
        "## Citation",
        f"```bibtex\n{CITATION}\n```",
    ]
    return "\n\n".join(sections) + "\n"


def write_model_card(preset_dir, handle=None):
    """Writes `model_card(preset_dir, handle)` to `preset_dir/README.md`; returns its path.

    Example:
    >>> write_model_card("presets/max_deeplab_s_coco_641_400k",
    ...                  handle="hf://keras-maxdeeplab/max_deeplab_s_coco_641_400k")
    """
    path = os.path.join(preset_dir, README_FILE)
    card = model_card(preset_dir, handle)
    with open(path, "w", encoding="utf-8") as f:
        f.write(card)
    return path
