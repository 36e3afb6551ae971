"""`maxdeeplab presets` (list the table) and `maxdeeplab upload` (publish a preset)."""

import os


def _list(args):
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import HF_ORG
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESET_ALIASES
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESETS

    header = ("name", "kind", "params", "crop", "steps", "PQ", "PQ Th", "PQ St", "PQ deeplab2")
    rows = []
    for name, entry in MAX_DEEPLAB_PRESETS.items():
        pq = entry["pq"] or {}
        steps = entry["training_steps"]
        rows.append(
            (
                name,
                entry["kind"],
                f"{entry['metadata']['params'] / 1e6:.1f}M",
                str(entry["crop_size"]),
                f"{steps // 1000}k" if steps else "-",
                *(str(pq.get(key, "-")) for key in ("pq", "pq_thing", "pq_stuff", "pq_deeplab2")),
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print()
    for alias, target in MAX_DEEPLAB_PRESET_ALIASES.items():
        print(f"{alias} -> {target}")
    print(
        f"COCO val2017 PQ as deeplab2 reports it (official script; its own evaluator last). "
        f"Weights: hf://{HF_ORG}/<name>; the architecture of a name builds offline."
    )


def _add_list_command(commands):
    presets = commands.add_parser(
        "presets", help="list the MaX-DeepLab presets (name, params, crop, PQ)"
    )
    presets.set_defaults(run=_list)


def _upload(args):
    from keras_maxdeeplab.hub import upload_preset

    repo_id = upload_preset(args.preset_dir, args.uri)
    print(f"Uploaded {os.path.abspath(args.preset_dir)} to https://huggingface.co/{repo_id}")


def _add_upload_command(commands):
    upload = commands.add_parser(
        "upload",
        help="upload a preset folder to the Hugging Face Hub with its model card (README.md)",
    )
    upload.add_argument("preset_dir", help="preset folder (maxdeeplab convert / save_to_preset)")
    upload.add_argument("uri", help="hf://org/name")
    upload.set_defaults(run=_upload)


def add_parser(commands):
    _add_list_command(commands)
    _add_upload_command(commands)
