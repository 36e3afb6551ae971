"""kMaX-DeepLab (r50) against deeplab2's reduced reference model
(../shared/reference/kmax_deeplab_tiny): checkpoint conversion, every
intermediate array, the final outputs and the parameter counts."""

import json

import numpy as np
import pytest

import keras

from keras_maxdeeplab.conversion.deeplab2 import kmax_key_to_path
from keras_maxdeeplab.conversion.deeplab2 import load_kmax_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import match_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import open_checkpoint
from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab import KMaXDeepLab
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab import transformer_block_names
from keras_maxdeeplab.postprocessing import postprocess_panoptic_maskwise
from tests.helpers import shared_path
from tests.helpers import to_numpy

REFERENCE = ("reference", "kmax_deeplab_tiny")
OUTPUT_KEYS = (
    "semantic_logits",
    "pixel_space_normalized_feature",
    "pixel_space_mask_logits",
    "transformer_class_logits",
)


def count_values(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _reference():
    return np.load(shared_path(*REFERENCE, "io.npz"))


def _images(io, crop):
    # deeplab2's in-model normalisation, in float32.
    return io[f"s{crop}/input/image_0_255"] / np.float32(127.5) - np.float32(1)


def _tiny(crop):
    model = build_kmax_model("kmax_r50_tiny", crop)
    load_kmax_checkpoint(model, shared_path(*REFERENCE, "ckpt"))
    return model


def _tolerance(key, reference):
    """README section 8: encoder / pixel decoder 1e-5 of the range + 1e-6;
    transformer decoder features and raw outputs 5e-5 of the range."""
    scale = float(np.max(np.abs(reference)))
    if key.startswith(("encoder/", "pixel_decoder/")):
        return 1e-5 * scale + 1e-6
    return 5e-5 * scale


def compare_with_reference(arrays, io, crop_prefix):
    """Asserts every array of ours that `io` also holds at `crop_prefix`
    (e.g. "s65"): k-means assignments exact, the rest within `_tolerance`.
    Returns the names compared."""
    compared = []
    for key in io.files:
        if not key.startswith(crop_prefix + "/"):
            continue
        name = key[len(crop_prefix) + 1 :]
        if name not in arrays:
            continue
        reference, ours = io[key], arrays[name]
        assert ours.shape == reference.shape, name
        if name.endswith("kmeans_assignment"):
            np.testing.assert_array_equal(ours, reference, err_msg=name)
        else:
            np.testing.assert_allclose(
                ours, reference, rtol=0, atol=_tolerance(name, reference), err_msg=name
            )
        compared.append(name)
    return compared


@pytest.fixture(scope="module")
def io():
    return _reference()


@pytest.fixture(scope="module")
def model65():
    shared_path(*REFERENCE, "ckpt")
    return _tiny(65)


@pytest.fixture(scope="module")
def arrays65(model65, io):
    return to_numpy(model65.intermediate_outputs(_images(io, 65)))


def test_tiny_parameter_counts(model65):
    counts = json.load(open(shared_path(*REFERENCE, "params.json")))
    assert count_values(model65.trainable_weights) == counts["trainable_total"] == 673_870
    assert count_values(model65.non_trainable_weights) == counts["non_trainable_total"] == 20_462
    items = counts["per_checkpoint_item"]
    parts = {
        "encoder": ("stem/", "stage"),
        "pixel_decoder": ("pixel_decoder/",),
        "transformer_decoder": (
            "cluster_centers/",
            "kmax_transformer_decoder_",
            "class_embedding_projection/",
            "mask_embedding_projection/",
        ),
    }
    for item, prefixes in parts.items():
        weights = [v for v in model65.trainable_weights if v.path.startswith(prefixes)]
        assert count_values(weights) == items[item]["trainable"], item


def test_every_intermediate_array_s65(arrays65, io):
    """Encoder, pixel decoder, every k-means block (centers, auxiliary
    outputs, the exact assignment), the embeddings and the final outputs."""
    compared = compare_with_reference(arrays65, io, "s65")
    blocks = transformer_block_names((2, 2, 2))
    expected = (
        [f"encoder/stage{k}" for k in range(1, 6)]
        + [f"pixel_decoder/decoder_stage{k}" for k in range(1, 4)]
        + ["pixel_decoder/decoder_output"]
        + [f"transformer_decoder/{b}/cluster_centers" for b in blocks]
        + [f"transformer_decoder/{b}/kmeans_assignment" for b in blocks]
        + [f"transformer_decoder/{b}/aux/{k}" for b in blocks for k in OUTPUT_KEYS[1:]]
        + ["transformer_decoder/transformer_class_feature"]
        + ["transformer_decoder/transformer_mask_feature"]
        + [f"output/{k}" for k in OUTPUT_KEYS]
    )
    assert sorted(compared) == sorted(expected)


def test_postprocessed_maps_s65(arrays65, io):
    """Our outputs give deeplab2's maskwise maps exactly (tuned and default thresholds)."""
    config = json.load(open(shared_path(*REFERENCE, "config.json")))["post_processing"]
    settings = {
        "postprocess": config["tuned_thresholds"]["65"],
        "postprocess_default": config["deeplab2_default_thresholds (kMaX COCO config)"],
    }
    for prefix, thresholds in settings.items():
        options = {k: v for k, v in thresholds.items() if k != "transformer_post_processing"}
        maps = to_numpy(
            postprocess_panoptic_maskwise(
                arrays65["output/pixel_space_mask_logits"],
                arrays65["output/transformer_class_logits"],
                (65, 65),
                **options,
            )
        )
        for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
            np.testing.assert_array_equal(maps[key], io[f"s65/{prefix}/{key}"], err_msg=key)


def test_final_outputs_s129(io):
    outputs = to_numpy(_tiny(129)(_images(io, 129), training=False))
    assert sorted(outputs) == sorted(OUTPUT_KEYS)
    for key in OUTPUT_KEYS:
        reference = io[f"s129/output/{key}"]
        np.testing.assert_allclose(
            outputs[key], reference, rtol=0, atol=_tolerance(key, reference), err_msg=key
        )


def test_converter_is_strict(model65):
    """A checkpoint variable too many, one missing, or a wrong shape is refused."""
    _, shapes = open_checkpoint(shared_path(*REFERENCE, "ckpt"))
    names = [block.name for block in model65.transformer_blocks]

    def match(changed):
        return match_checkpoint(
            model65,
            changed,
            key_to_path=lambda key: kmax_key_to_path(key, names),
            model_name="kMaX-DeepLab",
        )

    assert len(match(shapes)) == len(model65.weights) == len(shapes) == 923
    centers = "transformer_decoder/cluster_centers/.ATTRIBUTES/VARIABLE_VALUE"
    with pytest.raises(ValueError, match="1 model weights are not in the checkpoint"):
        match({k: v for k, v in shapes.items() if k != centers})
    with pytest.raises(ValueError, match="1 shape mismatches"):
        match({**shapes, centers: (1, 16, 256)})
    extra = "transformer_decoder/_kmax_decoder/6/_block1_transformer/_pixel_v_conv_bn/_conv/kernel"
    with pytest.raises(ValueError, match="1 checkpoint variables map to no model weight"):
        match({**shapes, extra: (1, 32, 32)})


def test_saved_model_round_trip(model65, io, tmp_path):
    """`.keras` save and load, and compiled `predict`, keep deeplab2's outputs."""
    images = _images(io, 65)
    path = str(tmp_path / "kmax.keras")
    model65.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, KMaXDeepLab)
    for outputs in (to_numpy(restored(images)), to_numpy(model65.predict(images, verbose=0))):
        for key in OUTPUT_KEYS:
            reference = io[f"s65/output/{key}"]
            np.testing.assert_allclose(
                outputs[key], reference, rtol=0, atol=_tolerance(key, reference), err_msg=key
            )


def test_config_round_trip(model65):
    clone = KMaXDeepLab.from_config(model65.get_config())
    assert clone.get_config() == model65.get_config()
    assert [v.path for v in clone.weights] == [v.path for v in model65.weights]


@pytest.mark.large
def test_full_r50_parameter_counts():
    """deeplab2's published kMaX R50 (README section 2e); no weight depends on the crop."""
    model = build_kmax_model("kmax_r50", 65)
    assert count_values(model.trainable_weights) == 72_436_862
    assert count_values(model.non_trainable_weights) == 213_934
    semantic = [v for v in model.trainable_weights if v.path.startswith("semantic_")]
    assert count_values(model.trainable_weights) - count_values(semantic) == 56_580_120
