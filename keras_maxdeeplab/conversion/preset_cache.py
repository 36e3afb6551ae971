"""Presets converted on first use: deeplab2's archive -> a preset folder in the local cache.

The cache holds one folder per preset name under
`$KERAS_HOME/keras_maxdeeplab/presets/` (`~/.keras/...` without
`KERAS_HOME`, as Keras' own downloads). A folder there is always complete: it
appears by an atomic rename once the conversion has written everything, so a
killed download or conversion leaves nothing that looks like a preset. A
partial download stays as `downloads/<archive>.part` and is resumed by the
next call. A file lock per preset makes concurrent callers (processes or
threads) wait for one conversion instead of racing.
"""

import glob
import os
import shutil
import tempfile

import filelock

from keras_maxdeeplab.conversion.archive import ArchiveError
from keras_maxdeeplab.conversion.archive import download
from keras_maxdeeplab.conversion.archive import extract_checkpoint
from keras_maxdeeplab.conversion.archive import sha256_of
from keras_maxdeeplab.conversion.convert import CONVERSION_FILE
from keras_maxdeeplab.conversion.convert import convert_preset
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import CHECKPOINT_BASE_URL

CHECKPOINT_URL_VARIABLE = "KERAS_MAXDEEPLAB_CHECKPOINT_URL"


def cache_root():
    """`$KERAS_HOME/keras_maxdeeplab` (Keras' cache folder convention)."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(keras_home, "keras_maxdeeplab")


def cached_preset_dir(name):
    """Where the converted copy of preset `name` lives (whether or not it exists yet)."""
    return os.path.join(cache_root(), "presets", name)


def cached_preset(name):
    """The converted copy of preset `name` in the cache, or None.

    Example:
    >>> cached_preset("max_deeplab_s_coco_641_400k")  # after a first `from_preset`
    '/home/me/.keras/keras_maxdeeplab/presets/max_deeplab_s_coco_641_400k'
    """
    folder = cached_preset_dir(name)
    return folder if os.path.isfile(os.path.join(folder, CONVERSION_FILE)) else None


def checkpoint_base_url(base_url=None):
    """The base URL of deeplab2's archives: `base_url`, else the
    `KERAS_MAXDEEPLAB_CHECKPOINT_URL` environment variable, else deeplab2's."""
    base = base_url or os.environ.get(CHECKPOINT_URL_VARIABLE) or CHECKPOINT_BASE_URL
    return base.rstrip("/")


def archive_url(entry, base_url=None):
    """The address of a preset's deeplab2 archive under `checkpoint_base_url`.

    Example:
    >>> archive_url(get_preset("max_deeplab_s_coco_641_400k"), "http://mirror/deeplab2")
    'http://mirror/deeplab2/max_deeplab_s_os16_res641_400k_coco_train.tar.gz'
    """
    return f"{checkpoint_base_url(base_url)}/{entry['archive']}"


def convert_on_first_use(name, entry, base_url=None):
    """The cached preset folder of `name`, made first if needed: download
    (resumed where an earlier attempt stopped), sha256 check where the table
    knows the digest, safe extraction, strict conversion, atomic write; the
    archive and the extracted checkpoint are deleted afterwards.

    Args:
        name: the preset's table name (not an alias).
        entry: its `MAX_DEEPLAB_PRESETS` or `KMAX_DEEPLAB_PRESETS` entry (its
            `family` picks the converter).
        base_url: where deeplab2's archives are (see `checkpoint_base_url`).

    Raises:
        DownloadError: the archive could not be downloaded (HTTP error, or no
            server reached); a partial download is kept for the next call.
        ValueError: the archive is corrupt, unsafe, fails its sha256, or
            holds a checkpoint of another model; nothing is cached.

    Example:
    >>> convert_on_first_use("max_deeplab_s_coco_641_400k", MAX_DEEPLAB_PRESETS[...])
    """
    folder = cached_preset_dir(name)
    presets = os.path.dirname(folder)
    os.makedirs(presets, exist_ok=True)
    with filelock.FileLock(os.path.join(presets, f".{name}.lock")):
        if cached_preset(name):  # Another caller converted it while we waited.
            return folder
        _remove_leftovers(presets, name)
        url = archive_url(entry, base_url)
        archive = download(url, os.path.join(cache_root(), "downloads", entry["archive"]))
        work = tempfile.mkdtemp(prefix=f".{name}.extracting-", dir=presets)
        try:
            digest = sha256_of(archive)
            expected = entry.get("archive_sha256")
            if expected and digest != expected:
                raise ArchiveError(
                    f"{entry['archive']} has sha256 {digest}, not the {expected} this preset "
                    "was published with (a wrong or tampered file)."
                )
            checkpoint = extract_checkpoint(archive, work)
            record = {
                "source_checkpoint": os.path.relpath(checkpoint, work),
                "archive_sha256": digest,
                "preset": name,
            }
            convert_preset(entry, checkpoint, folder, url, record)
        except ValueError as error:
            raise ValueError(
                f"deeplab2's archive of preset {name!r} ({url}) is unusable, so nothing was "
                f"cached: {' '.join(str(error).split())}"
            ) from error
        finally:
            shutil.rmtree(work, ignore_errors=True)
            os.remove(archive)
    return folder


def _remove_leftovers(presets, name):
    # Work folders of a killed conversion of this preset; the lock is held.
    for path in glob.glob(os.path.join(presets, f".{name}.*")):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)


def folder_size(folder):
    """Bytes held by the files of a folder."""
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder) for f in files
    )
