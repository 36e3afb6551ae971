"""tools/make_presets.py: its table tools, and its download against a local server."""

import importlib.util
import json
import os

import pytest

from keras_maxdeeplab import KMAX_DEEPLAB_PRESETS
from keras_maxdeeplab import MAX_DEEPLAB_PRESETS
from tests.helpers import REPO
from tests.hub_helpers import ArchiveServer
from tests.hub_helpers import checkpoint_archive


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
    kmax = list(KMAX_DEEPLAB_PRESETS)
    names = list(MAX_DEEPLAB_PRESETS) + kmax
    assert sorted(expected) == sorted(["README.md"] + [f"{n}.json" for n in names])
    assert len(kmax) == 17  # deeplab2's kMaX model zoo
    readme = expected["README.md"]
    assert "`max_deeplab_s_coco_1025_400k` (`max_deeplab_s_coco`)" in readme
    assert "| `kmax_r50_coco` | ResNet-50 | coco_panoptic | 1281 | 53.0 | 58.3 | 44.9 | 53.5 | [" in readme
    assert "| `kmax_convnext_tiny_coco` | ConvNeXt-T | coco_panoptic | 1281 | 55.3 | 61.0 | 46.7 | 55.8 | [" in readme
    kmax_r50 = json.loads(expected["kmax_r50_coco.json"])
    assert kmax_r50["params"] == 72_650_796
    assert kmax_r50["backbone_arguments"]["backbone_type"] == "resnet"
    convnext = json.loads(expected["kmax_convnext_tiny_coco.json"])
    assert convnext["params"] == 67_430_412
    arguments = convnext["backbone_arguments"]
    assert (arguments["backbone_type"], arguments["convnext_dims"]) == ("convnext", [96, 192, 384, 768])
    ade20k = json.loads(expected["kmax_convnext_large_ade20k_1281.json"])
    assert ade20k["params"] == 244_082_228
    assert ade20k["num_classes"] == 151
    assert ade20k["postprocess_options"]["transformer_class_confidence_threshold_thing"] == 0.4
    # deeplab2 hard-codes the transformer drop path per dataset: 1.0 for ADE20K.
    assert ade20k["head_arguments"]["transformer_drop_path_keep_prob"] == 1.0
    assert convnext["head_arguments"]["transformer_drop_path_keep_prob"] == 0.8
    cityscapes = json.loads(expected["kmax_r50_cityscapes.json"])
    assert (cityscapes["params"], cityscapes["crop_size"]) == (57_198_908, [1025, 2049])
    assert cityscapes["backbone_arguments"]["pixel_decoder_dims"] == [512, 256, 128, 64, 32]
    assert cityscapes["head_arguments"]["num_mask_slots"] == 256
    assert cityscapes["head_arguments"]["use_auxiliary_semantic_decoder"] is False
    assert cityscapes["postprocess_options"]["overlapping_threshold"] == 0.9
    assert "| `kmax_r50_cityscapes` | ResNet-50 | cityscapes_panoptic | 1025x2049 | 64.3 |" in readme


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


def test_fetch_checkpoint_downloads_and_unpacks_once(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("checkpoint", "ckpt-400000.index", "ckpt-400000.data-00000-of-00001"):
        (source / name).write_bytes(name.encode())
    name = "max_deeplab_s_os16_res641_400k_coco_train.tar.gz"
    files = {f.name: str(f) for f in source.iterdir()}
    data = checkpoint_archive(str(tmp_path / name), "max_deeplab_s_os16_res641_400k", files)
    work = str(tmp_path / "work")
    os.makedirs(work)

    with ArchiveServer({f"/{name}": data}) as server:
        folder = make_presets.fetch_checkpoint(f"{server.url}/{name}", work)
    expected = os.path.join(work, name[: -len(".tar.gz")], "max_deeplab_s_os16_res641_400k")
    assert folder == expected
    assert make_presets.checkpoint_prefix(folder) == os.path.join(folder, "ckpt-400000")
    with open(os.path.join(folder, "ckpt-400000.index"), "rb") as f:
        assert f.read() == b"ckpt-400000.index"
    # The server is gone: the archive and the unpacked folder are reused.
    assert make_presets.fetch_checkpoint(f"{server.url}/{name}", work) == folder


@pytest.mark.skipif(
    importlib.util.find_spec("deeplab2") is not None, reason="deeplab2 is installed here"
)
def test_parity_check_without_deeplab2_says_how_to_install_it(capsys):
    entry = MAX_DEEPLAB_PRESETS["max_deeplab_s_coco_641_400k"]
    assert make_presets.parity_check(None, entry, "ckpt", None, "work") is None
    out = capsys.readouterr().out
    assert "needs deeplab2" in out and "protoc deeplab2/*.proto" in out
