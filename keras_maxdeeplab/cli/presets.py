"""`maxdeeplab presets` (list the MaX-DeepLab and kMaX-DeepLab tables) and `maxdeeplab
upload` (publish a preset)."""

import os


def _cached(entry, name):
    """Where a preset's weights already are on this machine, and their size."""
    from keras_maxdeeplab.conversion.preset_cache import cached_preset
    from keras_maxdeeplab.conversion.preset_cache import folder_size
    from keras_maxdeeplab.hub import cached_hf_files

    folder = cached_preset(name)
    if folder is not None:
        return "converted", folder_size(folder)
    files = cached_hf_files(entry)
    if files is not None:
        return "hugging face", sum(os.path.getsize(path) for path in files.values())
    return "no", None


def _crop(crop_size):
    return "x".join(map(str, crop_size)) if isinstance(crop_size, tuple) else str(crop_size)


def _row(name, entry, cached, size):
    """One table row: name, kind, params, crop, steps, the four PQs, cached, size."""
    pq = entry["pq"] or {}
    steps = entry["training_steps"]
    params = entry["metadata"]["params"]
    return (
        name,
        entry["kind"],
        f"{params / 1e6:.1f}M" if params else "-",
        _crop(entry["crop_size"]),
        f"{steps // 1000}k" if steps else "-",
        *(str(pq.get(key, "-")) for key in ("pq", "pq_thing", "pq_stuff", "pq_deeplab2")),
        cached,
        f"{size / 1e6:.0f} MB" if size is not None else "-",
    )


def _list(args):
    from keras_maxdeeplab.conversion.preset_cache import cache_root
    from keras_maxdeeplab.conversion.preset_cache import folder_size
    from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import KMAX_DEEPLAB_PRESETS
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import EMBEDDED_PRESETS
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESET_ALIASES
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESETS

    header = ("name", "kind", "params", "crop", "steps", "PQ", "PQ Th", "PQ St", "PQ deeplab2")
    header += ("cached", "size")
    rows = [_row(name, entry, *_cached(entry, name)) for name, entry in MAX_DEEPLAB_PRESETS.items()]
    for name, entry in EMBEDDED_PRESETS.items():
        size = folder_size(entry["folder"])
        params = f"{entry['metadata']['params'] / 1e6:.1f}M"
        steps = f"{entry['training_steps'] // 1000}k"
        crop = str(entry["crop_size"])
        rows.append((name, "task", params, crop, steps, *["-"] * 4, "embedded", f"{size / 1e6:.0f} MB"))
    rows += [_row(name, entry, *_cached(entry, name)) for name, entry in KMAX_DEEPLAB_PRESETS.items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print()
    for alias, target in MAX_DEEPLAB_PRESET_ALIASES.items():
        print(f"{alias} -> {target}")
    print(
        "Val PQ as deeplab2 reports it (official script; its own evaluator last): COCO val2017, "
        "or Cityscapes / ADE20K val for kmax_*_cityscapes / kmax_*_ade20k_*. Weights on first "
        "use: converted from deeplab2's published checkpoint (or taken from the preset's Hugging "
        f"Face repository once published) and cached in {cache_root()}; `maxdeeplab presets "
        "--fetch NAME` does it ahead of time. Embedded: shipped inside the package (synthetic "
        "scenes, for the demo and tests)."
    )


def _fetch(args):
    from keras_maxdeeplab.hub import fetch_preset

    for name in args.fetch:
        files = fetch_preset(name, checkpoint_base_url=args.checkpoint_base_url)
        print(f"{name}: {os.path.dirname(files['model.weights.h5'])}")


def _run(args):
    return _fetch(args) if args.fetch else _list(args)


def _add_list_command(commands):
    presets = commands.add_parser(
        "presets",
        help="list the MaX-DeepLab and kMaX-DeepLab presets (name, params, crop, PQ, cached), or "
        "--fetch them",
    )
    presets.add_argument(
        "--fetch",
        nargs="+",
        metavar="NAME",
        help="download and convert these presets into the local cache now (e.g. before going "
        "offline)",
    )
    presets.add_argument(
        "--checkpoint-base-url",
        help="a mirror of deeplab2's checkpoint folder (default: $KERAS_MAXDEEPLAB_CHECKPOINT_URL, "
        "else deeplab2's own)",
    )
    presets.set_defaults(run=_run)


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
