"""Presets converted on first use from deeplab2's archives, served on 127.0.0.1."""

import json
import os
import tarfile

import numpy as np
import pytest

from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab.conversion import convert_checkpoint
from keras_maxdeeplab.conversion.preset_cache import cache_root
from keras_maxdeeplab.conversion.preset_cache import cached_preset
from keras_maxdeeplab.hub import PresetNotFoundError
from keras_maxdeeplab.hub import fetch_preset
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESETS
from tests.helpers import python_child
from tests.helpers import shared_path
from tests.helpers import to_numpy
from tests.hub_helpers import ArchiveServer
from tests.hub_helpers import assert_only_preset_cached
from tests.hub_helpers import TableSetter
from tests.hub_helpers import cache_listing
from tests.hub_helpers import checkpoint_archive
from tests.hub_helpers import offline_hf_cache
from tests.hub_helpers import write_checkpoint

NAME = "max_deeplab_tiny_coco_65"
ARCHIVE = "max_deeplab_tiny_os16_res65_coco_train.tar.gz"
# What a subprocess runs: the same table entry, then from_preset.
CHILD = """
import sys
from keras_maxdeeplab import MaXDeepLab
from tests.conversion.test_preset_cache import register_tiny_preset
register_tiny_preset()
model = MaXDeepLab.from_preset(sys.argv[1])
print("loaded", model.count_params())
"""


def register_tiny_preset(table=MAX_DEEPLAB_PRESETS, **changes):
    """A table entry for deeplab2's tiny MaX-DeepLab (../shared/reference) at 65x65."""
    entry = dict(
        MAX_DEEPLAB_PRESETS["max_deeplab_s_coco_641_400k"],
        config="max_deeplab_tiny",
        crop_size=65,
        archive=ARCHIVE,
        handle="hf://keras-maxdeeplab/max_deeplab_tiny_coco_65",
        deeplab2_name="max_deeplab_tiny_os16_res65",
        **changes,
    )
    table[NAME] = entry
    return entry


@pytest.fixture
def tiny_preset(monkeypatch, tmp_path):
    offline_hf_cache(tmp_path, monkeypatch)  # The Hub step finds nothing, offline.
    register_tiny_preset(TableSetter(monkeypatch, MAX_DEEPLAB_PRESETS))


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """deeplab2's tiny checkpoint packed as deeplab2 publishes checkpoints."""
    ckpt = shared_path("reference", "max_deeplab_tiny", "ckpt")
    path = tmp_path_factory.mktemp("archive") / ARCHIVE
    files = {name: os.path.join(ckpt, name) for name in os.listdir(ckpt)}
    return checkpoint_archive(str(path), "max_deeplab_tiny_os16_res65", files)


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    """The same checkpoint converted directly, and its outputs on a fixed input."""
    folder = str(tmp_path_factory.mktemp("direct") / "tiny")
    ckpt = shared_path("reference", "max_deeplab_tiny", "ckpt")
    model = convert_checkpoint(ckpt, folder, config="max_deeplab_tiny", crop_size=65)
    images = np.random.RandomState(0).uniform(-1, 1, (1, 65, 65, 3)).astype("float32")
    return images, to_numpy(model(images))


def _assert_same(model, direct):
    images, expected = direct
    got = to_numpy(model(images))
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_first_use_downloads_converts_and_caches(tiny_preset, archive, direct, monkeypatch):
    with ArchiveServer({f"/mirror/{ARCHIVE}": archive}) as server:
        monkeypatch.setenv("KERAS_MAXDEEPLAB_CHECKPOINT_URL", server.url + "/mirror/")
        model = MaXDeepLab.from_preset(NAME)
        assert server.gets(f"/mirror/{ARCHIVE}") == 1
    _assert_same(model, direct)

    folder = cached_preset(NAME)
    assert folder == os.path.join(cache_root(), "presets", NAME)
    assert_only_preset_cached(NAME)
    with open(os.path.join(folder, "conversion.json")) as f:
        record = json.load(f)
    assert record["source_url"] == f"{server.url}/mirror/{ARCHIVE}"
    assert record["archive_sha256"] == __import__("hashlib").sha256(archive).hexdigest()
    assert record["converter_version"] == __import__("keras_maxdeeplab").__version__
    assert record["preset"] == NAME and record["converted_on"]
    assert record["source_checkpoint"] == "max_deeplab_tiny_os16_res65"

    # The server is gone: the second call reads the cache, converts nothing.
    before = os.path.getmtime(os.path.join(folder, "model.weights.h5"))
    _assert_same(MaXDeepLab.from_preset(NAME), direct)
    assert os.path.getmtime(os.path.join(folder, "model.weights.h5")) == before


def test_keyword_overrides_the_environment(tiny_preset, archive, direct):
    with ArchiveServer({f"/d/{ARCHIVE}": archive}) as server:
        files = fetch_preset(NAME, checkpoint_base_url=f"{server.url}/d")
    assert sorted(files) == ["model.weights.h5", "task.weights.h5"]
    assert all(path.startswith(cached_preset(NAME)) for path in files.values())


def test_an_interrupted_download_resumes(tiny_preset, archive, direct, monkeypatch):
    path = f"/{ARCHIVE}"
    with ArchiveServer({path: archive}, faults={path: "truncate"}) as server:
        monkeypatch.setenv("KERAS_MAXDEEPLAB_CHECKPOINT_URL", server.url)
        with pytest.raises(PresetNotFoundError) as error:
            MaXDeepLab.from_preset(NAME)
        message = str(error.value)
        assert "\n" not in message and f"{server.url}{path}" in message
        assert cache_listing() == ["downloads", f"downloads{os.sep}{ARCHIVE}.part", "presets"]
        part = os.path.join(cache_root(), "downloads", ARCHIVE + ".part")
        kept = os.path.getsize(part)  # What arrived, to the last whole block.
        assert 0 < kept <= len(archive) // 2

        del server.faults[path]
        server.requests.clear()
        _assert_same(MaXDeepLab.from_preset(NAME), direct)
        assert server.requests == [(path, f"bytes={kept}-")]


def _tar(tmp_path, members):
    """A .tar.gz with `members`: (TarInfo changes, bytes or None)."""
    path = os.path.join(tmp_path, "bad.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
            info.size = len(data or b"")
            tar.addfile(info, __import__("io").BytesIO(data or b""))
    with open(path, "rb") as f:
        return f.read()


def _foreign_archive(tmp_path):
    """A checkpoint of another model (a ResNet-like variable) in deeplab2's layout."""
    folder = os.path.join(tmp_path, "resnet")
    os.makedirs(folder)
    write_checkpoint(
        os.path.join(folder, "ckpt-0"),
        {"resnet/conv1/kernel/.ATTRIBUTES/VARIABLE_VALUE": np.ones((3, 3, 3, 64), "float32")},
    )
    files = {name: os.path.join(folder, name) for name in os.listdir(folder)}
    return checkpoint_archive(os.path.join(tmp_path, "foreign.tar.gz"), "resnet", files)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("truncated file", "not a readable .tar.gz archive"),
        ("not an archive", "not a readable .tar.gz archive"),
        ("dot-dot member", "'..' component"),
        ("absolute member", "an absolute path"),
        ("link member", "a link"),
        ("fifo member", "a device, FIFO"),
        ("another model", "does not match this MaX-DeepLab architecture"),
        ("wrong sha256", "has sha256"),
        (404, "answered HTTP 404"),
        (500, "answered HTTP 500"),
    ],
)
def test_bad_archives_are_refused_and_nothing_is_cached(
    tiny_preset, archive, tmp_path, monkeypatch, case, expected
):
    ok = ("d/ckpt-0.index", tarfile.REGTYPE, b"x")
    served = {
        "truncated file": archive[: len(archive) * 2 // 3],
        "not an archive": b"<html>Not Found</html>",
        "dot-dot member": _tar(tmp_path, [ok, ("d/../../escaped", tarfile.REGTYPE, b"x")]),
        "absolute member": _tar(tmp_path, [ok, ("/tmp/escaped", tarfile.REGTYPE, b"x")]),
        "link member": _tar(tmp_path, [ok, ("d/link", tarfile.SYMTYPE, None)]),
        "fifo member": _tar(tmp_path, [ok, ("d/pipe", tarfile.FIFOTYPE, None)]),
        "another model": _foreign_archive(tmp_path),
    }.get(case, archive)
    if case == "wrong sha256":
        register_tiny_preset(TableSetter(monkeypatch, MAX_DEEPLAB_PRESETS), archive_sha256="0" * 64)
    path = f"/{ARCHIVE}"
    faults = {path: case} if isinstance(case, int) else {}
    with ArchiveServer({path: served}, faults=faults) as server:
        monkeypatch.setenv("KERAS_MAXDEEPLAB_CHECKPOINT_URL", server.url)
        with pytest.raises(ValueError, match=expected) as error:
            MaXDeepLab.from_preset(NAME)
    assert "\n" not in str(error.value)
    assert cached_preset(NAME) is None
    assert cache_listing() == ["downloads", "presets"]
    assert not os.path.exists("/tmp/escaped") and not os.path.exists(
        os.path.join(cache_root(), "escaped")
    )


def test_offline_with_nothing_cached_names_the_three_places(tiny_preset):
    with pytest.raises(PresetNotFoundError) as error:
        MaXDeepLab.from_preset(NAME)
    message = str(error.value)
    assert "\n" not in message
    assert os.path.join(cache_root(), "presets", NAME) in message  # (1)
    assert "hf://keras-maxdeeplab/max_deeplab_tiny_coco_65 (Hugging Face Hub unreachable" in message
    assert f"/{ARCHIVE} (" in message  # (3)
    for fix in ("Connect to the internet", "KERAS_MAXDEEPLAB_CHECKPOINT_URL", "local preset folder"):
        assert fix in message
    assert cached_preset(NAME) is None


def test_two_processes_convert_once(tiny_preset, archive, direct, tmp_path):
    path = f"/{ARCHIVE}"
    # A slow answer keeps the first process in its download while the second starts.
    with ArchiveServer({path: archive}, delay=3.0) as server:
        env = {"KERAS_MAXDEEPLAB_CHECKPOINT_URL": server.url}
        children = [python_child(CHILD, NAME, env=env) for _ in range(2)]
        results = [child.communicate(timeout=600) for child in children]
    for child, (out, err) in zip(children, results):
        assert child.returncode == 0, err[-3000:]
        assert "loaded" in out
    assert server.gets(path) == 1
    _assert_same(MaXDeepLab.from_preset(NAME), direct)


def test_cli_fetches_ahead_and_lists_the_cached_preset(tiny_preset, archive, capsys):
    from keras_maxdeeplab.cli import main

    with ArchiveServer({f"/{ARCHIVE}": archive}) as server:
        assert main(["presets", "--fetch", NAME, "--checkpoint-base-url", server.url]) == 0
    assert capsys.readouterr().out.strip() == f"{NAME}: {cached_preset(NAME)}"
    assert main(["presets"]) == 0
    (row,) = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(NAME)]
    size = sum(
        os.path.getsize(os.path.join(cached_preset(NAME), f)) for f in os.listdir(cached_preset(NAME))
    )
    assert row[-3:] == ["converted", f"{size / 1e6:.0f}", "MB"]
