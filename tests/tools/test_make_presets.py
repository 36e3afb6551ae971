"""The parts of tools/make_presets.py that run without network access."""

import importlib.util
import os
import tarfile

import numpy as np
import pytest

from keras_maxdeeplab import MAX_DEEPLAB_PRESETS
from keras_maxdeeplab import MaXDeepLabBackbone
from keras_maxdeeplab.conversion import deeplab2_key_to_path
from keras_maxdeeplab.conversion import read_checkpoint
from keras_maxdeeplab.optimizers import is_pretrained_backbone_variable
from tests.helpers import REPO
from tests.helpers import TINY_BACKBONE
from tests.helpers import shared_path


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "make_presets", os.path.join(REPO, "tools", "make_presets.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_presets = _load_tool()


def test_presets_folder_is_generated_from_the_table():
    expected = make_presets.definitions()
    folder = os.path.join(REPO, "presets")
    assert sorted(os.listdir(folder)) == sorted(expected)
    for name, text in expected.items():
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            assert f.read() == text, (
                f"presets/{name} is stale: run tools/make_presets.py definitions"
            )
    assert sorted(expected) == sorted(["README.md"] + [f"{n}.json" for n in MAX_DEEPLAB_PRESETS])
    assert "`max_deeplab_s_coco_1025_400k` (`max_deeplab_s_coco`)" in expected["README.md"]


def test_write_definitions_replaces_stale_files(tmp_path):
    (tmp_path / "max_deeplab_x_coco.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("kept")
    written = make_presets.write_definitions(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(written + ["notes.txt"])


def test_arguments():
    parser = make_presets.build_parser()
    args = parser.parse_args(["build", "max_deeplab_s_coco", "max_deeplab_l_imagenet", "--upload"])
    assert args.names == ["max_deeplab_s_coco_1025_400k", "max_deeplab_l_imagenet"]
    assert args.upload and not args.all and args.image == make_presets.DEFAULT_IMAGE
    args = parser.parse_args(["build", "--all", "--work-dir", "w", "--output-dir", "o"])
    assert (args.all, args.work_dir, args.output_dir) == (True, "w", "o")
    assert parser.parse_args(["definitions"]).output == os.path.join(REPO, "presets")


def test_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        make_presets.main(["build", "max_deeplab_m_coco"])
    assert "Unknown preset 'max_deeplab_m_coco'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make_presets.main(["build"])
    assert "build needs preset names or --all" in capsys.readouterr().err


def test_download_and_unpack_a_checkpoint_archive(tmp_path):
    source = tmp_path / "source" / "max_deeplab_s_os16_res641_400k"
    source.mkdir(parents=True)
    for name in ("checkpoint", "ckpt-400000.index", "ckpt-400000.data-00000-of-00001"):
        (source / name).write_bytes(name.encode())
    archive = tmp_path / "source" / "max_deeplab_s_os16_res641_400k_coco_train.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="max_deeplab_s_os16_res641_400k")
    work = str(tmp_path / "work")

    path = make_presets.download(archive.as_uri(), work)
    assert os.path.basename(path) == archive.name and os.listdir(work) == [archive.name]
    archive.unlink()
    assert make_presets.download(archive.as_uri(), work) == path  # reused, not fetched again
    folder = make_presets.unpack(path, work)
    assert folder == os.path.join(
        work, "max_deeplab_s_os16_res641_400k_coco_train", "max_deeplab_s_os16_res641_400k"
    )
    assert make_presets.checkpoint_prefix(folder) == os.path.join(folder, "ckpt-400000")
    assert make_presets.unpack(path, work) == folder


def test_imagenet_checkpoint_loads_the_pretrained_part_only():
    # deeplab2's tiny checkpoint dressed as an ImageNet one: the pretrained
    # encoder under TF Model Garden's prefix, plus a classifier.
    arrays = read_checkpoint(shared_path("reference", "max_deeplab_tiny", "ckpt"))
    backbone = MaXDeepLabBackbone(image_shape=(65, 65, 3), **TINY_BACKBONE)
    weights = {w.path: w for w in backbone.weights}
    imagenet = {"backbone/_head/kernel/.ATTRIBUTES/VARIABLE_VALUE": np.zeros((2048, 1000))}
    for key, value in arrays.items():
        weight = weights.get(deeplab2_key_to_path(key))
        if key.startswith("encoder/") and is_pretrained_backbone_variable(weight):
            imagenet["backbone/_encoder/" + key[len("encoder/") :]] = value
    fresh = {p: np.array(w.numpy()) for p, w in weights.items() if p not in _paths(imagenet)}
    assert fresh and len(imagenet) > 100

    skipped = make_presets.load_imagenet_backbone(backbone, imagenet)
    assert skipped == ["backbone/_head/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    for key, value in imagenet.items():
        path = deeplab2_key_to_path("encoder/" + key[len("backbone/_encoder/") :])
        if path in weights:
            np.testing.assert_array_equal(weights[path].numpy(), value, err_msg=path)
    assert all("transformer" in p or "extra" in p or "memory" in p for p in fresh)
    for path, value in fresh.items():
        np.testing.assert_array_equal(weights[path].numpy(), value, err_msg=path)

    missing = dict(imagenet)
    del missing[
        "backbone/_encoder/_stage2/_block1/_conv1_bn_act/_conv/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    ]
    with pytest.raises(ValueError, match="1 model weights are not in the checkpoint"):
        make_presets.load_imagenet_backbone(backbone, missing)


def _paths(imagenet):
    return {
        deeplab2_key_to_path("encoder/" + key[len("backbone/_encoder/") :])
        for key in imagenet
        if key.startswith("backbone/_encoder/")
    }


@pytest.mark.skipif(
    importlib.util.find_spec("deeplab2") is not None, reason="deeplab2 is installed here"
)
def test_parity_check_without_deeplab2_says_how_to_install_it(capsys):
    entry = MAX_DEEPLAB_PRESETS["max_deeplab_s_coco_641_400k"]
    assert make_presets.parity_check(None, entry, "ckpt", None, "work") is None
    out = capsys.readouterr().out
    assert "needs deeplab2" in out and "protoc deeplab2/*.proto" in out
