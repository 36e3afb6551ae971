"""Exported panoptic pipelines, run by their own runtimes, against the Keras path.

deeplab2's tiny MaX-DeepLab (../shared/reference/max_deeplab_tiny) at 65x65
with its tuned thresholds (10 segments on the reference image). Each format is
exported once per module; the artifact is then run by its runtime alone
(tests/models/export_runtimes.py imports neither Keras nor this package).
"""

import importlib.util
import json
import os

import numpy as np
import pytest

import keras

from keras_maxdeeplab.backend_seam import export_formats
from keras_maxdeeplab.conversion.deeplab2 import load_deeplab2_checkpoint
from keras_maxdeeplab.data import COCOPanopticDataset
from keras_maxdeeplab.evaluation import evaluate_dataset
from keras_maxdeeplab.layers.resize import resize_bilinear_align_corners
from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import restore_indices
from keras_maxdeeplab.models.max_deeplab.max_deeplab_export import EXPORT_FORMATS
from keras_maxdeeplab.models.max_deeplab.max_deeplab_export import SERVING_OUTPUTS
from keras_maxdeeplab.models.max_deeplab.max_deeplab_export import artifact_path
from keras_maxdeeplab.models.max_deeplab.max_deeplab_export import serving_model
from keras_maxdeeplab.postprocessing.panoptic import postprocess_panoptic
from tests.helpers import shared_path
from tests.helpers import tiny_model
from tests.helpers import to_numpy
from tests.models.export_runtimes import RUNTIMES
from tests.models.export_runtimes import artifact_panoptic_quality

# The runtime module each format's artifact is run with.
RUNTIME_MODULES = {
    "tf_saved_model": "tensorflow",
    "onnx": "onnxruntime",
    "openvino": "openvino",
    "litert": "ai_edge_litert",
    "torch": "torch",
}
# Scores: float noise of another compiler or runtime on the same float32 network
# (XLA, ONNX Runtime, OpenVINO and LiteRT kernels fuse and order sums differently
# than Keras' compiled predict). It arises in the network's mask and class logits,
# which the post-processor's softmax maxima pass on; no reformulation of the
# post-processor removes it. Largest differences measured on these images, batch 1
# and 3, crop and frame: SavedModel 8.1e-6 (TensorFlow), 7.7e-6 (JAX); ONNX 1.27e-5
# (tf2onnx), 8.4e-6 (PyTorch dynamo); OpenVINO 1.38e-5; LiteRT 1.68e-5; .pt2 0;
# up to 3.4e-5 on the unrounded float images. deeplab2's own tf.function-vs-eager
# noise on instance_scores is 1.1e-5 (shared/reference/max_deeplab_tiny/README.md
# section 8, which suggests atol 1e-4 for scores).
SCORE_ATOL = 1e-4


def _reference_folder():
    return shared_path("reference", "max_deeplab_tiny")


@pytest.fixture(scope="module")
def model():
    folder = _reference_folder()
    model = tiny_model(65)
    load_deeplab2_checkpoint(model, os.path.join(folder, "ckpt"))
    with open(os.path.join(folder, "config.json")) as f:
        tuned = json.load(f)["post_processing"]["tuned_thresholds"]["65"]
    model.postprocess_options.update(tuned)
    return model


@pytest.fixture(scope="module")
def images():
    """Three 65x65 images with 0..255 pixels: deeplab2's padded reference
    image, its mirror image and a shifted copy (each has several segments)."""
    io = np.load(os.path.join(_reference_folder(), "io.npz"))
    image = io["s65/input/image_0_255"][0]
    shifted = np.full_like(image, 127.5)
    shifted[8:] = image[:-8]
    return np.stack([image, image[:, ::-1], shifted]).astype("float32")


# The artifacts' input sizes: the crop size (the issue's signature) and a
# camera-like frame the graph resizes up and pads (48x64 -> 49x65 in 65x65).
INPUT_SIZES = {"crop": (65, 65), "frame": (48, 64)}


@pytest.fixture(scope="module")
def uint8_images(images):
    """`{input size name: [3, H, W, 3] uint8}`: the images rounded up, and
    their bottom-left 48x64 regions. Chosen so that no pixel sits at a tie:
    rounding to the nearest puts a pixel of the first image at a 3e-6 gap
    between two slots' mask logits, and the top-left region one at 9e-6 on
    PyTorch, below the ~1e-4 float noise of another runtime's kernels
    (deeplab2's own tf.function-vs-eager noise on these logits is 8.9e-5):
    `semantic_pred` flipped there in ONNX Runtime. `expected` checks the
    margin."""
    rounded = np.ceil(images).astype("uint8")
    return {"crop": rounded, "frame": np.ascontiguousarray(rounded[:, 17:, :64])}


@pytest.fixture(scope="module")
def reference(model, images):
    """The Keras path on the float 65x65 images: `predict_panoptic`'s
    compiled forward pass, then deeplab2's post-processor."""
    outputs = model.predict_on_batch(images / 127.5 - 1.0)
    return to_numpy(
        postprocess_panoptic(
            outputs["pixel_space_mask_logits"],
            outputs["transformer_class_logits"],
            (65, 65),
            thing_class_ids=model.thing_class_ids,
            **model.postprocess_options,
        )
    )


@pytest.fixture(scope="module")
def expected(model, uint8_images):
    """`{input size name: maps}`: `predict_panoptic` on the uint8 images
    (its converter, compiled forward pass, post-processor and resize back),
    the score maps restored the way it restores the id maps. No shown
    pixel's two largest mask logits are closer than 1e-5 (a closer tie is
    float noise's to decide, in any runtime)."""
    converter = model.image_converter
    maps = {}
    for name, batch in uint8_images.items():
        outputs = model.predict_on_batch(converter(batch))
        size = batch.shape[1:3]
        logits = to_numpy(resize_bilinear_align_corners(outputs["pixel_space_mask_logits"], (65, 65)))
        rows, cols = restore_indices(size, (65, 65))
        logits = np.sort(logits[:, rows][:, :, cols], axis=-1)  # The pixels the maps show.
        assert np.min(logits[..., -1] - logits[..., -2]) > 1e-5, name
        crop = to_numpy(
            postprocess_panoptic(
                outputs["pixel_space_mask_logits"],
                outputs["transformer_class_logits"],
                (65, 65),
                thing_class_ids=model.thing_class_ids,
                **model.postprocess_options,
            )
        )
        maps[name] = {
            key: np.stack([converter.restore_original_size(m, size) for m in value])
            for key, value in crop.items()
        }
        results = model.predict_panoptic(batch)
        for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
            np.testing.assert_array_equal(np.stack([r[key] for r in results]), maps[name][key])
        for index in range(3):
            assert len(np.unique(maps[name]["panoptic_pred"][index])) >= 3, (name, index)
    return maps


def test_reference_is_predict_panoptic_and_deeplab2(model, images, reference):
    """On the float images: `predict_panoptic`'s maps (at the crop size its
    resize back is the identity) and, on deeplab2's image, deeplab2's own
    post-processed maps."""
    results = model.predict_panoptic(images)
    for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
        np.testing.assert_array_equal(np.stack([r[key] for r in results]), reference[key])
    io = np.load(os.path.join(_reference_folder(), "io.npz"))
    for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
        np.testing.assert_array_equal(reference[key][:1], io[f"s65/postprocess/{key}"], key)
    for index in range(3):
        assert len(np.unique(reference["panoptic_pred"][index])) >= 4


def test_serving_model_matches_predict_panoptic(model, images, uint8_images, reference, expected):
    """The graph every format exports, run by Keras: uint8 at the crop size
    and at a frame size (resized, padded and restored inside), and float32
    pixels at the crop size (the client-resized route)."""
    for name, size in INPUT_SIZES.items():
        serving = serving_model(model, input_size=None if name == "crop" else size)
        assert tuple(serving.input.shape) == (None, *size, 3) and serving.input.dtype == "uint8"
        got = to_numpy(serving.predict_on_batch(uint8_images[name]))
        assert sorted(got) == sorted(SERVING_OUTPUTS)
        _assert_same_maps(got, expected[name])
    got = to_numpy(serving_model(model, input_dtype="float32").predict_on_batch(images))
    _assert_same_maps(got, reference)


def _assert_same_maps(got, reference, count=None):
    """Identical id maps; scores within SCORE_ATOL. Returns the largest score
    difference."""
    count = len(reference["panoptic_pred"]) if count is None else count
    largest = 0.0
    for key in SERVING_OUTPUTS:
        value, expected = np.asarray(got[key]), reference[key][:count]
        assert value.shape == expected.shape, key
        if key.endswith("scores"):
            np.testing.assert_allclose(value, expected, atol=SCORE_ATOL, rtol=0, err_msg=key)
            largest = max(largest, float(np.max(np.abs(value - expected))))
        else:
            assert value.dtype == np.int32, key
            np.testing.assert_array_equal(value, expected, err_msg=key)
    return largest


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """`exported(format, input size name="crop", input_dtype="uint8")`: the
    artifact's path, each exported once on first use."""
    folder = tmp_path_factory.mktemp("exported")
    paths = {}

    def export(format, name="crop", input_dtype="uint8"):
        key = (format, name, input_dtype)
        if key not in paths:
            paths[key] = model.export(
                os.path.join(folder, "_".join(key)),
                format=format,
                input_size=INPUT_SIZES[name],
                input_dtype=input_dtype,
            )
        return paths[key]

    return export


def _runnable(format):
    """Skips unless this backend can export `format` and its runtime is installed."""
    backend = keras.backend.backend()
    if format not in export_formats():
        pytest.skip(f"the {format} exporter of the {backend} backend is not installed")
    if importlib.util.find_spec(RUNTIME_MODULES[format]) is None:
        pytest.skip(f"the {format} runtime ({RUNTIME_MODULES[format]}) is not installed")


@pytest.mark.parametrize("name", sorted(INPUT_SIZES))
@pytest.mark.parametrize("format", ["tf_saved_model", "onnx", "openvino", "litert", "torch"])
def test_artifact_matches_predict_panoptic(model, uint8_images, expected, exported, format, name):
    """The uint8 artifact, run by its own runtime, gives `predict_panoptic`'s
    maps exactly (scores to float noise) at batch sizes 1 and 3, at the crop
    size and at a frame size it resizes itself."""
    backend = keras.backend.backend()
    if format not in export_formats(installed=False):
        with pytest.raises(ValueError, match=f"cannot export format '{format}' on the {backend}"):
            model.export("unused", format=format)
        return
    _runnable(format)
    run = RUNTIMES[format](exported(format, name))
    for count in (1, 3):
        largest = _assert_same_maps(run(uint8_images[name][:count]), expected[name], count)
        # The measured float noise, for the README (pytest -s shows it).
        print(f"\n{backend} {format} {name} batch {count}: largest score difference {largest:.2e}")


@pytest.mark.parametrize("format", ["tf_saved_model", "onnx"])
def test_artifact_refuses_wrong_dtype_and_shape(images, uint8_images, exported, format):
    """The serving signature checks what the runtime can: a float batch to
    the uint8 artifact or a frame of the wrong size is an error, not a
    silent wrong answer."""
    _runnable(format)
    run = RUNTIMES[format](exported(format))
    with pytest.raises(Exception, match="(?i)uint8|type|dtype"):
        run(images)
    with pytest.raises(Exception, match="(?i)shape|dimension|size|incompatible"):
        run(uint8_images["crop"][:, :33])


def test_pq_through_an_artifact_equals_keras(model, exported):
    """Real photos of other sizes (../shared/data/mini_real_panoptic, COCO
    panoptic format): through an exported artifact with the README's NumPy
    client resizing around it, the same panoptic maps at each image's size,
    and so the same PQ, as through `predict_panoptic` (deeplab2's tiny model
    is not trained: what counts is the equality). The demo preset on 100
    scenes in every format: benchmarks/export.py."""
    available = [f for f in ("tf_saved_model", "onnx") if f in export_formats()]
    available = [f for f in available if importlib.util.find_spec(RUNTIME_MODULES[f])]
    if not available:
        pytest.skip(f"neither a SavedModel nor ONNX can be exported and run on {keras.backend.backend()}")
    folder = shared_path("data", "mini_real_panoptic")
    data = COCOPanopticDataset(
        os.path.join(folder, "images"),
        os.path.join(folder, "panoptic"),
        os.path.join(folder, "panoptic.json"),
    )
    expected, predictions = evaluate_dataset(model, data)
    # The float32 artifact at the crop size: the client resizes images of any size.
    run = RUNTIMES[available[0]](exported(available[0], input_dtype="float32"))
    results, maps = artifact_panoptic_quality(run, data, model.categories, (65, 65))
    assert {m.shape for m in maps} != {(65, 65)}  # The client resized them back.
    for got, want in zip(maps, predictions):
        np.testing.assert_array_equal(got, want["panoptic_pred"])
    assert sum(len(np.unique(m)) for m in maps) > 2 * len(maps)
    assert results == expected


def test_bad_export_requests(model, tmp_path):
    with pytest.raises(ValueError, match="Unknown export format 'tflite'"):
        model.export(tmp_path / "x", format="tflite")
    with pytest.raises(ValueError, match="input_dtype"):
        model.export(tmp_path / "x", input_signature=[keras.InputSpec(shape=(None, 65, 65, 3))])
    with pytest.raises(ValueError, match="input_dtype must be one of"):
        serving_model(model, input_dtype="int16")
    for size in ((0, 64), 65, (48.0, 64), (48, 64, 3), "48x64", (True, 64)):
        with pytest.raises(ValueError, match="input_size must be"):
            model.export(tmp_path / "x", input_size=size)
    with pytest.raises(ValueError, match="Unknown postprocess options"):
        serving_model(model, thing_area=3)
    assert not os.listdir(tmp_path)


def test_openvino_refusals_say_why_and_what_to_do(model):
    """Keras' OpenVINO routes on PyTorch and JAX cannot hold the serving
    graph: a clear error naming the cause and the backend that can."""
    backend = keras.backend.backend()
    reasons = {
        "torch": r" with the post-processor inside: .*TorchScript.*dict of outputs",
        "jax": r": .*jax2tf without XLA.*axial-attention gathers",
    }
    if backend not in reasons:
        assert "openvino" in export_formats(installed=False)
        return
    with pytest.raises(
        ValueError,
        match=rf"'openvino' on the {backend} backend{reasons[backend]}.*set to one of tensorflow",
    ):
        model.export("unused", format="openvino")


def test_artifact_paths():
    assert artifact_path("out/model", "onnx") == "out/model.onnx"
    assert artifact_path("out/model.pt2", "torch") == "out/model.pt2"
    assert artifact_path("out/model", "tf_saved_model") == "out/model"
    assert set(EXPORT_FORMATS) == {"tf_saved_model", "onnx", "openvino", "litert", "torch"}


def test_failed_export_leaves_the_old_artifact(model, tmp_path, monkeypatch):
    """An export that fails midway keeps what was at the path and leaves no
    temporary files."""
    from keras_maxdeeplab.models.max_deeplab import max_deeplab_export

    format = export_formats()[0]
    target = tmp_path / ("model" + ("" if format == "tf_saved_model" else ".bin"))
    path = artifact_path(str(target), format)
    if format == "tf_saved_model":
        os.makedirs(path)
        with open(os.path.join(path, "old"), "w") as f:
            f.write("old")
    else:
        with open(path, "w") as f:
            f.write("old")

    def half_written(serving, path, format, verbose):
        with open(path if format != "tf_saved_model" else os.path.join(path, "x"), "w") as f:
            f.write("half")
        raise OSError("disk full")

    monkeypatch.setattr(max_deeplab_export, "export_model", half_written)
    with pytest.raises(OSError, match="disk full"):
        model.export(str(target), format=format)
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]
    old = os.path.join(path, "old") if format == "tf_saved_model" else path
    with open(old) as f:
        assert f.read() == "old"


def test_an_exporter_failure_names_the_way_out(model, tmp_path, monkeypatch):
    """A runtime lacking an op of the post-processor: the error says to export
    the network alone, whose outputs are the model's (post-processed outside)."""
    from keras_maxdeeplab.models.max_deeplab import max_deeplab_export

    def unsupported(serving, path, format, verbose):
        raise ValueError("Tensorflow op BitwiseAnd is not supported")

    monkeypatch.setattr(max_deeplab_export, "export_model", unsupported)
    format = export_formats()[0]
    with pytest.raises(RuntimeError, match=r"BitwiseAnd.*postprocess=False.*postprocess_panoptic"):
        model.export(str(tmp_path / "model"), format=format)
    with pytest.raises(ValueError, match="BitwiseAnd"):
        model.export(str(tmp_path / "model"), format=format, postprocess=False)
    assert not os.listdir(tmp_path)
    raw = serving_model(model, postprocess=False)
    assert sorted(raw.output) == sorted(model.output)
