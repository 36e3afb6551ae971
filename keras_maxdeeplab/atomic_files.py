"""Files written whole or not at all.

A file is written to a temporary name in its own folder, flushed to disk and
renamed over the target: a killed process, a full disk or an exception leaves
either the old file or the new one, never a truncated mix.
"""

import os
import shutil
import tempfile


def write_atomically(path, write, mode="w"):
    """Calls `write(file)` on a temporary file, then renames it to `path`.

    Args:
        path: the file to create or replace.
        write: a function taking the open file object.
        mode: `"w"` (text, UTF-8) or `"wb"`.

    Example:
    >>> write_atomically("out/panoptic.json", lambda f: json.dump(data, f))
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        with os.fdopen(handle, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_folder_atomically(path, fill):
    """Calls `fill(folder)` on a temporary folder beside `path`, which then
    takes `path`'s place: an existing folder there steps aside (a rename),
    the new one moves in (a rename), and only then is the old one deleted.
    A failure or a kill leaves the old folder (or none) in place, never a
    half-written one; leftovers are hidden `.NAME.writing-*` folders.

    Example:
    >>> write_folder_atomically("runs/mine/preset", model.save_to_preset)
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.writing-", dir=parent)
    try:
        fill(staging)
        if os.path.exists(path):
            retired = staging + ".replaced"
            os.replace(path, retired)
            os.replace(staging, path)
            shutil.rmtree(retired)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
