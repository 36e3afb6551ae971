"""A real Hugging Face cache for preset tests: offline, in a temporary HF_HOME."""

import hashlib
import os

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
