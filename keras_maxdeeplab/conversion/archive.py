"""Fetching deeplab2's published checkpoint archives: resumable download, safe extraction.

deeplab2 publishes each checkpoint as `<name>.tar.gz` holding one folder with
a TF checkpoint (`checkpoint`, `ckpt-N.index`, `ckpt-N.data-*`).
"""

import hashlib
import os
import tarfile

import requests
import tqdm


class ArchiveError(ValueError):
    """A downloaded archive is unusable (corrupt, unsafe, wrong checksum)."""


class DownloadError(OSError):
    """An archive could not be downloaded (HTTP error, no server, broken transfer)."""


def sha256_of(path):
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url, path, timeout=60):
    """Downloads `url` to `path` with a progress bar, resuming the partial
    `path + ".part"` an interrupted attempt left (an HTTP range request; a
    server that ignores it sends the whole file again).

    The finished file is renamed into place, so `path` exists only complete;
    its size is checked against the server's `Content-Length`.

    Raises:
        DownloadError: the server refused (HTTP 4xx/5xx), could not be
            reached, or the transfer broke off; a partial file is kept for
            the next attempt.

    Example:
    >>> download("https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/"
    ...          "max_deeplab_s_os16_res641_400k_coco_train.tar.gz", "/tmp/s641.tar.gz")
    """
    partial = path + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    done = os.path.getsize(partial) if os.path.exists(partial) else 0
    headers = {"Range": f"bytes={done}-"} if done else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            if response.status_code != 206:
                done = 0
            length = response.headers.get("Content-Length")
            total = done + int(length) if length is not None else None
            with open(partial, "ab" if done else "wb") as f, tqdm.tqdm(
                total=total, initial=done, unit="B", unit_scale=True, desc=os.path.basename(path)
            ) as progress:
                for block in response.iter_content(1 << 20):
                    f.write(block)
                    progress.update(len(block))
    except requests.HTTPError as error:
        status = error.response.status_code
        raise DownloadError(f"{url} answered HTTP {status}") from error
    except requests.RequestException as error:
        raise DownloadError(
            f"{url} could not be downloaded ({type(error).__name__}); "
            "a later call resumes where this one stopped"
        ) from error
    if total is not None and os.path.getsize(partial) != total:
        raise DownloadError(
            f"{url} ended after {os.path.getsize(partial)} of {total} bytes; "
            "a later call resumes where this one stopped"
        )
    os.replace(partial, path)
    return path


def _refusal(member):
    name = member.name
    if name.startswith(("/", "\\")) or os.path.isabs(name):
        return "an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "a '..' component"
    if member.issym() or member.islnk():
        return "a link"
    if not (member.isfile() or member.isdir()):
        return "a device, FIFO or other special file"
    return None


def extract_checkpoint(archive, folder):
    """Extracts a deeplab2 checkpoint archive into `folder` and returns the
    folder holding its checkpoint (its one `.index` file).

    Every member is checked first: absolute paths, `..`, links, devices and
    FIFOs are refused, and tarfile's `data` filter guards the extraction too.

    Raises:
        ArchiveError: not a readable `.tar.gz`, an unsafe member, or not
            exactly one checkpoint inside.

    Example:
    >>> extract_checkpoint("max_deeplab_s_os16_res641_400k_coco_train.tar.gz", "/tmp/x")
    '/tmp/x/max_deeplab_s_os16_res641_400k'
    """
    name = os.path.basename(archive)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                reason = _refusal(member)
                if reason:
                    raise ArchiveError(f"{name} holds {member.name!r}, {reason}: refused.")
            tar.extractall(folder, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ArchiveError(
            f"{name} is not a readable .tar.gz archive (truncated or corrupt: {error})."
        ) from error
    return checkpoint_folder(folder, name)


def checkpoint_folder(folder, what=None):
    """The one folder under `folder` that holds a TF checkpoint (`*.index`).

    Raises:
        ArchiveError: none or several, naming `what` (default: the folder).
    """
    holders = sorted(
        root for root, _, files in os.walk(folder) if any(f.endswith(".index") for f in files)
    )
    if len(holders) != 1:
        raise ArchiveError(
            f"{what or folder} should hold one TensorFlow checkpoint (a '*.index' file); "
            f"found {len(holders)}."
        )
    return holders[0]
