"""Preset test helpers: a real offline Hugging Face cache, a local archive server,
TF checkpoints and archives in deeplab2's layout."""

import hashlib
import http.server
import os
import socket
import tarfile
import threading
import time

import huggingface_hub
from huggingface_hub import constants as hf_constants
from huggingface_hub.file_download import repo_folder_name


def offline_hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache under a temporary `HF_HOME`, with the Hub offline.

    huggingface_hub reads `HF_HOME`, `HF_HUB_CACHE` and `HF_HUB_OFFLINE` once,
    when it is imported: the environment is set for child processes and the
    `constants` it read for this one. Returns the cache folder.
    """
    home = os.path.join(tmp_path, "hf_home")
    cache = os.path.join(home, "hub")
    os.makedirs(cache)
    for name, value in (("HF_HOME", home), ("HF_HUB_CACHE", cache), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(hf_constants, "HF_HOME", home)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", cache)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_preset(folder, repo_id, cache_dir):
    """Stores a preset folder in a Hugging Face cache as a download leaves it.

    huggingface_hub's layout: `models--org--name/blobs/<content hash>`, the
    files under `snapshots/<commit>/` linking to their blobs, and
    `refs/main` naming the commit. Checked with huggingface_hub's own
    `scan_cache_dir`. Returns the commit.
    """
    storage = os.path.join(cache_dir, repo_folder_name(repo_id=repo_id, repo_type="model"))
    names = sorted(os.listdir(folder))
    commit = hashlib.sha1("\n".join(names).encode()).hexdigest()
    snapshot = os.path.join(storage, "snapshots", commit)
    blobs = os.path.join(storage, "blobs")
    os.makedirs(snapshot)
    os.makedirs(blobs)
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        blob = os.path.join(blobs, hashlib.sha256(data).hexdigest())
        with open(blob, "wb") as f:
            f.write(data)
        os.symlink(os.path.relpath(blob, snapshot), os.path.join(snapshot, name))
    refs = os.path.join(storage, "refs")
    os.makedirs(refs)
    with open(os.path.join(refs, hf_constants.DEFAULT_REVISION), "w") as f:
        f.write(commit)

    (repo,) = [r for r in huggingface_hub.scan_cache_dir(cache_dir).repos if r.repo_id == repo_id]
    (revision,) = repo.revisions
    assert revision.commit_hash == commit and revision.refs == {"main"}
    assert sorted(f.file_name for f in revision.files) == names
    return commit


class ArchiveServer:
    """A local HTTP server on 127.0.0.1 for download tests, with Range support.

    `files` maps URL paths (`/name.tar.gz`) to bytes. `faults` maps a path to
    how it misbehaves: an int status (404, 500), or "truncate" (the first
    answer promises the whole file, sends half and drops the connection;
    later requests are dropped unanswered, until the fault is removed).
    `delay` seconds pass before each answer. `requests` records
    `(path, Range header)` of every GET.

    Example:
    >>> with ArchiveServer({"/a.tar.gz": data}) as server:
    ...     server.url  # "http://127.0.0.1:<port>"
    """

    def __init__(self, files, faults=None, delay=0.0):
        self.files = dict(files)
        self.faults = dict(faults or {})
        self.delay = delay
        self.requests = []
        self._truncated = set()

    def __enter__(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                time.sleep(server.delay)
                fault = server.faults.get(self.path)
                if isinstance(fault, int) or self.path not in server.files:
                    self.send_error(fault if isinstance(fault, int) else 404)
                    return
                data = server.files[self.path]
                if fault == "truncate":
                    if self.path in server._truncated:
                        self.close_connection = True
                        return
                    server._truncated.add(self.path)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args):
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    def gets(self, path):
        return sum(1 for requested, _ in self.requests if requested == path)


def closed_port_url():
    """An http://127.0.0.1 URL on which nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def write_checkpoint(prefix, arrays):
    """Writes `{key: array}` as a TF checkpoint bundle under those exact keys
    (the layout TF's object-based checkpoints use, without an object graph)."""
    import tensorflow as tf

    keys = sorted(arrays)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=keys,
        shape_and_slices=[""] * len(keys),
        tensors=[tf.constant(arrays[key]) for key in keys],
    )


def checkpoint_archive(path, folder_name, checkpoint_files):
    """A `.tar.gz` in deeplab2's published layout: one folder holding the
    checkpoint's files (`{name in archive: local path}`); returns its bytes."""
    with tarfile.open(path, "w:gz") as tar:
        for name, source in checkpoint_files.items():
            tar.add(source, arcname=f"{folder_name}/{name}")
    with open(path, "rb") as f:
        return f.read()


class TableSetter:
    """`table[name] = entry` through monkeypatch, undone after the test."""

    def __init__(self, monkeypatch, table):
        self._monkeypatch = monkeypatch
        self._table = table

    def __setitem__(self, name, entry):
        self._monkeypatch.setitem(self._table, name, entry)


def cache_listing():
    """Every file and folder under the preset cache, hidden ones included."""
    from keras_maxdeeplab.conversion.preset_cache import cache_root

    root = cache_root()
    return sorted(
        os.path.relpath(os.path.join(folder, name), root)
        for folder, folders, files in os.walk(root)
        for name in folders + files
        if not name.endswith(".lock")
    )


def assert_only_preset_cached(name):
    """The cache holds preset `name` and nothing else: no archive, no extracted
    checkpoint, no work folder."""
    others = [p for p in cache_listing() if not p.startswith(os.path.join("presets", name))]
    assert others == ["downloads", "presets"], others
