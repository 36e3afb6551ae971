"""Produces each MaX-DeepLab preset from deeplab2's published checkpoint, in one command.

    python tools/make_presets.py build max_deeplab_s_coco_641_400k [--upload]
    python tools/make_presets.py build --all --work-dir ~/deeplab2_checkpoints
    python tools/make_presets.py definitions     # regenerate presets/ from the table

`build NAME` takes the preset's entry of `MAX_DEEPLAB_PRESETS` and
1. downloads its `source_url` into `--work-dir` and unpacks it (the package's
   resumable download and safe extraction, `keras_maxdeeplab.conversion.archive`);
2. converts it into a keras-hub preset folder `--output-dir/NAME` with
   `keras_maxdeeplab.conversion.convert_preset`, as `from_preset(NAME)` does
   on first use (COCO models with the preset's architecture, crop and
   post-processing options; ImageNet backbones with their pretrained pixel
   path only);
3. writes the model card (`README.md`, `keras_maxdeeplab.hub.write_model_card`);
4. checks parity on a real image (default: COCO val2017 000000439180.jpg):
   our outputs against deeplab2's own model on the same input, when deeplab2
   is importable (run by `tools/deeplab2_outputs.py` in a subprocess under
   `TF_USE_LEGACY_KERAS=1` with tf-keras); otherwise it prints how to install
   deeplab2 and the segments our model finds;
5. with `--upload`, publishes the folder to the preset's `hf://` handle
   (`keras_maxdeeplab.hub.upload_preset`; log in first with `hf auth login`).

It needs network access and TensorFlow (to read the checkpoints), so it has
not been run where this package is developed (no network there): its parts
are tested there against a local HTTP server (`tests/tools/test_make_presets.py`,
and the package's first-use conversion in `tests/conversion/test_preset_cache.py`).
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFINITIONS_DIR = os.path.join(REPO, "presets")
DEFAULT_IMAGE = "http://images.cocodataset.org/val2017/000000439180.jpg"
# Raw outputs: max |ours - deeplab2| / max |deeplab2| (TF's own kernel choices
# reach ~1e-5); panoptic maps: share of differing pixels.
RELATIVE_TOLERANCE = 1e-4
PIXEL_TOLERANCE = 1e-3
DEEPLAB2_INSTALL = """\
The parity check against deeplab2 needs deeplab2 importable in this Python:
    pip install tf-keras
    git clone https://github.com/google-research/deeplab2 /opt/src/deeplab2
    cd /opt/src && protoc deeplab2/*.proto --python_out=.
    export PYTHONPATH=/opt/src:$PYTHONPATH
(deeplab2 then runs under TF_USE_LEGACY_KERAS=1 in a subprocess.)"""


def canonical_name(name):
    """The table name of a preset name or alias; ValueError listing the names otherwise."""
    from keras_maxdeeplab import MAX_DEEPLAB_PRESET_ALIASES
    from keras_maxdeeplab import MAX_DEEPLAB_PRESETS

    name = MAX_DEEPLAB_PRESET_ALIASES.get(name, name)
    if name not in MAX_DEEPLAB_PRESETS:
        raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(MAX_DEEPLAB_PRESETS)}.")
    return name


def _preset_argument(name):
    try:
        return canonical_name(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def fetch_checkpoint(url, folder):
    """Downloads a checkpoint archive into `folder` once and unpacks it once;
    returns the folder holding the checkpoint."""
    from keras_maxdeeplab.conversion.archive import checkpoint_folder
    from keras_maxdeeplab.conversion.archive import download
    from keras_maxdeeplab.conversion.archive import extract_checkpoint

    name = os.path.basename(urllib.parse.urlparse(url).path)
    archive = os.path.join(folder, name)
    if not os.path.exists(archive):
        download(url, archive)
    target = os.path.join(folder, name[: -len(".tar.gz")] if name.endswith(".tar.gz") else name)
    if not os.path.isdir(target):
        staging = tempfile.mkdtemp(prefix=".unpacking-", dir=folder)
        extract_checkpoint(archive, staging)
        os.replace(staging, target)
    return checkpoint_folder(target)


def checkpoint_prefix(folder):
    """The checkpoint prefix (`.../ckpt-400000`) of a folder holding one checkpoint."""
    indexes = sorted(f for f in os.listdir(folder) if f.endswith(".index"))
    if len(indexes) != 1:
        raise ValueError(f"Expected one '*.index' file in {folder}, found {indexes or 'none'}.")
    return os.path.join(folder, indexes[0][: -len(".index")])


def read_image(path_or_url, folder):
    from keras_maxdeeplab.conversion.archive import download
    from keras_maxdeeplab.image_files import read_image as read_image_file

    if urllib.parse.urlparse(path_or_url).scheme in ("http", "https"):
        path = os.path.join(folder, os.path.basename(urllib.parse.urlparse(path_or_url).path))
        path_or_url = path if os.path.exists(path) else download(path_or_url, path)
    return read_image_file(path_or_url)


def _relative_error(ours, reference):
    return float(np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), 1e-12))


def parity_check(model, entry, checkpoint_dir, image, folder):
    """Compares `model` with deeplab2's model of the same checkpoint on `image`.

    Returns `{output: relative error, "panoptic_pred": share of differing
    pixels}`, or None when deeplab2 is not importable (then it says how to
    install it). Raises ValueError beyond `RELATIVE_TOLERANCE` /
    `PIXEL_TOLERANCE`.
    """
    import keras

    from keras_maxdeeplab.postprocessing import postprocess_panoptic

    spec = importlib.util.find_spec("deeplab2")
    if spec is None:
        print(DEEPLAB2_INSTALL)
        return None
    inputs = keras.ops.convert_to_numpy(model.preprocessor(image))
    ours = keras.tree.map_structure(keras.ops.convert_to_numpy, model(inputs[None]))
    crop = tuple(model.backbone.image_shape[:2])
    ours["panoptic_pred"] = keras.ops.convert_to_numpy(
        postprocess_panoptic(
            ours["pixel_space_mask_logits"],
            ours["transformer_class_logits"],
            crop,
            thing_class_ids=model.thing_class_ids,
            **model.postprocess_options,
        )["panoptic_pred"]
    )
    input_path = os.path.join(folder, "deeplab2_input.npy")
    output_path = os.path.join(folder, "deeplab2_outputs.npz")
    # deeplab2 normalises inside its model: give it the 0..255 padded image.
    np.save(input_path, (inputs + 1.0) * 127.5)
    config = os.path.join(
        spec.submodule_search_locations[0],
        "configs",
        "coco",
        "max_deeplab",
        entry["deeplab2_name"] + ".textproto",
    )
    subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "deeplab2_outputs.py"),
            config,
            checkpoint_prefix(checkpoint_dir),
            input_path,
            output_path,
        ],
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
        check=True,
    )
    reference = np.load(output_path)
    report = {}
    for key in (
        "semantic_logits",
        "pixel_space_normalized_feature",
        "pixel_space_mask_logits",
        "transformer_class_logits",
    ):
        report[key] = _relative_error(ours[key], reference[key])
    report["panoptic_pred"] = float(np.mean(ours["panoptic_pred"] != reference["panoptic_pred"]))
    for key, value in report.items():
        print(f"  {key}: {value:.2e}")
    failed = [
        key
        for key, value in report.items()
        if value > (PIXEL_TOLERANCE if key == "panoptic_pred" else RELATIVE_TOLERANCE)
    ]
    if failed:
        raise ValueError(f"Parity with deeplab2 failed for {failed}: {report}")
    return report


def build(name, work_dir, output_dir, image, overwrite=False, upload=False):
    """Download, convert, model card, parity check and optional upload of one preset."""
    from keras_maxdeeplab import MAX_DEEPLAB_PRESETS
    from keras_maxdeeplab import MaXDeepLab
    from keras_maxdeeplab.conversion import convert_preset
    from keras_maxdeeplab.hub import upload_preset
    from keras_maxdeeplab.hub import write_model_card

    entry = MAX_DEEPLAB_PRESETS[name]
    checkpoint_dir = fetch_checkpoint(entry["source_url"], work_dir)
    preset_dir = os.path.join(output_dir, name)
    print(f"{name}: converting {checkpoint_dir} -> {preset_dir}")
    convert_preset(entry, checkpoint_dir, preset_dir, entry["source_url"], {"preset": name}, overwrite)
    write_model_card(preset_dir, handle=entry["handle"])
    if entry["kind"] == "task":
        print(f"{name}: parity check on {image}")
        model = MaXDeepLab.from_preset(preset_dir)
        pixels = read_image(image, work_dir)
        if parity_check(model, entry, checkpoint_dir, pixels, work_dir) is None:
            segments = model.predict_panoptic(pixels)[0]["segments_info"]
            print("Our segments:", [(s["label"], round(s["score"], 2)) for s in segments])
    else:
        print(f"{name}: no deeplab2 parity check for a backbone (its conversion is strict).")
    if upload:
        repo_id = upload_preset(preset_dir, entry["handle"])
        print(f"{name}: uploaded to https://huggingface.co/{repo_id}")
    return preset_dir


def _definition(name, entry, **fields):
    """A preset's JSON definition: the table entry's fields, then `fields`."""
    definition = {
        "name": name,
        "kind": entry["kind"],
        "description": entry["metadata"]["description"],
        "params": entry["metadata"]["params"],
        "handle": entry["handle"],
        "source_url": entry["source_url"],
        "archive_sha256": entry["archive_sha256"],
        "deeplab2_name": entry["deeplab2_name"],
        "config": entry["config"],
        "crop_size": entry["crop_size"],
        "training_steps": entry["training_steps"],
        "pq": entry["pq"],
        "postprocess_options": entry["postprocess_options"],
        **fields,
    }
    return json.dumps(definition, indent=2) + "\n"


def _pq_cells(entry):
    pq = entry["pq"] or {}
    return [str(pq.get(key, "-")) for key in ("pq", "pq_thing", "pq_stuff", "pq_deeplab2")]


def _kmax_head_arguments(entry, config_heads):
    """The config's head arguments with the row's dataset overrides (the
    drop path deeplab2 hard-codes per dataset; the categories and evaluator
    options have their own fields)."""
    from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import kmax_task_overrides

    overrides = kmax_task_overrides(entry)
    keep_prob = overrides["transformer_drop_path_keep_prob"]
    return {**config_heads, "transformer_drop_path_keep_prob": keep_prob}


def _kmax_definitions(files):
    """kMaX-DeepLab's JSON files into `files`; returns its README lines."""
    from keras_maxdeeplab import KMAX_DEEPLAB_CONFIGS
    from keras_maxdeeplab import KMAX_DEEPLAB_HEAD_CONFIGS
    from keras_maxdeeplab import KMAX_DEEPLAB_PRESETS

    rows = []
    for name, entry in KMAX_DEEPLAB_PRESETS.items():
        config = entry["config"]
        files[f"{name}.json"] = _definition(
            name,
            entry,
            dataset=entry["dataset"],
            num_classes=entry["num_classes"],
            backbone=entry["backbone"],
            backbone_arguments=KMAX_DEEPLAB_CONFIGS[config],
            head_arguments=_kmax_head_arguments(entry, KMAX_DEEPLAB_HEAD_CONFIGS[config]),
        )
        crop = entry["crop_size"]
        cells = [
            f"`{name}`",
            entry["backbone"],
            entry["dataset"],
            "x".join(map(str, crop)) if isinstance(crop, tuple) else str(crop),
            *_pq_cells(entry),
            f"[{entry['archive']}]({entry['source_url']})",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return [
        "## kMaX-DeepLab",
        "",
        "From `keras_maxdeeplab/models/kmax_deeplab/kmax_presets.py`: deeplab2's 17 published",
        "kMaX-DeepLab checkpoints. PQ: val set of the dataset, single scale, as deeplab2 reports it.",
        "Each loads by name (`KMaXDeepLab.from_preset(NAME)`), converted on first use like",
        "MaX-DeepLab's.",
        "",
        "| preset | backbone | dataset | crop | PQ | PQ things | PQ stuff | PQ (deeplab2) "
        "| deeplab2 checkpoint |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def definitions():
    """`{file name: text}` of the `presets/` folder, generated from the tables."""
    from keras_maxdeeplab import MAX_DEEPLAB_CONFIGS
    from keras_maxdeeplab import MAX_DEEPLAB_HEAD_CONFIGS
    from keras_maxdeeplab import MAX_DEEPLAB_PRESET_ALIASES
    from keras_maxdeeplab import MAX_DEEPLAB_PRESETS

    files = {}
    rows = []
    for name, entry in MAX_DEEPLAB_PRESETS.items():
        aliases = sorted(a for a, target in MAX_DEEPLAB_PRESET_ALIASES.items() if target == name)
        files[f"{name}.json"] = _definition(
            name,
            entry,
            aliases=aliases,
            backbone_arguments=MAX_DEEPLAB_CONFIGS[entry["config"]],
            head_arguments=MAX_DEEPLAB_HEAD_CONFIGS[entry["config"]]
            if entry["kind"] == "task"
            else None,
            build=f"python tools/make_presets.py build {name}",
        )
        steps = entry["training_steps"]
        cells = [
            f"`{name}`" + "".join(f" (`{alias}`)" for alias in aliases),
            entry["kind"],
            f"{entry['metadata']['params'] / 1e6:.1f}M",
            str(entry["crop_size"]),
            f"{steps // 1000}k" if steps else "-",
            *_pq_cells(entry),
            f"[{entry['deeplab2_name']}]({entry['source_url']})",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    files["README.md"] = "\n".join(
        [
            "# MaX-DeepLab presets",
            "",
            "Generated by `python tools/make_presets.py definitions` from",
            "`keras_maxdeeplab/models/max_deeplab/max_deeplab_presets.py` (the table the package",
            "reads); edit that table, not these files. One JSON file per preset holds its full",
            "definition. PQ: COCO val2017, single scale, as deeplab2 reports it (official script;",
            "the last column by deeplab2's own evaluator). Weights: `from_preset(NAME)` converts",
            "the deeplab2 checkpoint linked below on first use and caches it (or takes the `hf://`",
            "handle in each JSON once that repository is published); see the README's",
            "\"Pretrained weights\".",
            "",
            "| preset (alias) | kind | params | crop | steps | PQ | PQ things | PQ stuff "
            "| PQ (deeplab2) | deeplab2 checkpoint |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "For maintainers, build one for publishing (download, convert, model card, parity",
            "check with deeplab2, upload):",
            "",
            "    python tools/make_presets.py build NAME [--upload]",
            "",
            *_kmax_definitions(files),
        ]
    )
    return files


def write_definitions(folder=DEFINITIONS_DIR):
    """Rewrites `folder` with `definitions()`, removing stale preset files."""
    os.makedirs(folder, exist_ok=True)
    files = definitions()
    for name in os.listdir(folder):
        if name not in files and (name.endswith(".json") or name == "README.md"):
            os.remove(os.path.join(folder, name))
    for name, text in files.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.write(text)
    return sorted(files)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="make_presets.py", description="Builds MaX-DeepLab presets from deeplab2 checkpoints."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="download, convert, check and upload presets")
    build_command.add_argument(
        "names", nargs="*", type=_preset_argument, help="preset names or aliases"
    )
    build_command.add_argument("--all", action="store_true", help="every preset of the table")
    build_command.add_argument(
        "--work-dir", default="deeplab2_checkpoints", help="downloads and unpacked checkpoints"
    )
    build_command.add_argument("--output-dir", default="converted_presets", help="preset folders")
    build_command.add_argument("--image", default=DEFAULT_IMAGE, help="parity image (path or URL)")
    build_command.add_argument("--overwrite", action="store_true", help="replace preset folders")
    build_command.add_argument(
        "--upload", action="store_true", help="upload each preset to its hf:// handle"
    )
    definitions_command = commands.add_parser(
        "definitions", help="regenerate the presets/ folder from the package's table"
    )
    definitions_command.add_argument("--output", default=DEFINITIONS_DIR, help="folder to write")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "definitions":
        print("Wrote", ", ".join(write_definitions(args.output)))
        return 0
    from keras_maxdeeplab import MAX_DEEPLAB_PRESETS

    names = list(MAX_DEEPLAB_PRESETS) if args.all else list(dict.fromkeys(args.names))
    if not names:
        parser.error("build needs preset names or --all")
    for name in names:
        build(name, args.work_dir, args.output_dir, args.image, args.overwrite, args.upload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
