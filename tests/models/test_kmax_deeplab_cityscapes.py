"""kMaX-DeepLab as deeplab2 builds it for Cityscapes, against deeplab2's own.

The reference (`tests/models/deeplab2_cityscapes/`, made by
`tools/deeplab2_cityscapes_reference.py` with deeplab2's code): a reduced
Cityscapes kMaX-DeepLab (5-stage pixel decoder down to stride 2, 256 mask
slots, the semantic head on `stage5`, 19 classes with void 255) at a
non-square 65x129 crop, its arrays and its maskwise maps.
"""

import os

import numpy as np
import pytest

from keras_maxdeeplab.coco import CITYSCAPES_PANOPTIC_CATEGORIES
from keras_maxdeeplab.conversion.deeplab2 import VOID_CHANNEL_LOGIT
from keras_maxdeeplab.conversion.deeplab2 import load_kmax_checkpoint
from keras_maxdeeplab.evaluation.metric import PanopticQuality
from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import kmax_dataset_overrides
from tests.helpers import to_numpy

REFERENCE = os.path.join(os.path.dirname(__file__), "deeplab2_cityscapes")
CROP = (65, 129)
# The tool's TUNED evaluator options.
TUNED = {
    "pixel_confidence_threshold": 0.1,
    "transformer_class_confidence_threshold_thing": 0.1,
    "transformer_class_confidence_threshold_stuff": 0.1,
    "overlapping_threshold": 0.5,
    "thing_area_limit": 4,
    "stuff_area_limit": 8,
}
# deeplab2's Cityscapes ids: void 255, train ids 0..18 (ours: void 0, classes 1..19).
DEEPLAB2_VOID, DEEPLAB2_DIVISOR = 255, 1000


@pytest.fixture(scope="module")
def io():
    return np.load(os.path.join(REFERENCE, "io.npz"))


@pytest.fixture(scope="module")
def model():
    overrides = kmax_dataset_overrides("cityscapes")
    model = build_kmax_model("kmax_r50_cityscapes_tiny", CROP, overrides=overrides)
    assert model.categories == CITYSCAPES_PANOPTIC_CATEGORIES
    load_kmax_checkpoint(model, os.path.join(REFERENCE, "ckpt"))
    return model


@pytest.fixture(scope="module")
def arrays(model, io):
    return to_numpy(model.intermediate_outputs(io["images"]))


def _ours(deeplab2_panoptic):
    """deeplab2's Cityscapes panoptic ids in ours (same instances, divisor 1000)."""
    semantic = deeplab2_panoptic // DEEPLAB2_DIVISOR
    instance = deeplab2_panoptic % DEEPLAB2_DIVISOR
    return np.where(semantic == DEEPLAB2_VOID, 0, (semantic + 1) * DEEPLAB2_DIVISOR + instance)


def test_every_array_matches_deeplab2(arrays, io):
    """Encoder, the five pixel-decoder stages (the last at stride 2) and the
    outputs; the semantic head (at stride 32) has our void channel 0 in front
    of deeplab2's 19, a logit no softmax weighs."""
    names = [k for k in io.files if k.startswith(("encoder/", "pixel_decoder/", "output/"))]
    assert len(names) == 14 and "pixel_decoder/decoder_stage4" in names
    for name in names:
        reference, ours = io[name], arrays[name]
        if name == "output/semantic_logits":
            np.testing.assert_array_equal(ours[..., 0], VOID_CHANNEL_LOGIT)
            ours = ours[..., 1:]
        assert ours.shape == reference.shape, name
        scale = float(np.max(np.abs(reference)))
        np.testing.assert_allclose(ours, reference, rtol=0, atol=5e-5 * scale, err_msg=name)
    assert arrays["output/pixel_space_mask_logits"].shape == (1, 33, 65, 256)


def test_panoptic_pipeline_gives_deeplab2s_maps(model, io):
    """The compiled network + post-processor (`predict_panoptic`'s) gives
    deeplab2's maps exactly: stuff and thing segments, thing instance ids up
    to 143 (so the label divisor is 1000)."""
    assert model.label_divisor == DEEPLAB2_DIVISOR
    pipeline = model._panoptic_pipeline({**model.postprocess_options, **TUNED})
    maps = to_numpy(pipeline.predict_on_batch(io["images"]))
    expected = _ours(io["postprocess_tuned/panoptic_pred"])
    np.testing.assert_array_equal(maps["panoptic_pred"], expected)
    semantic = io["postprocess_tuned/semantic_pred"]
    np.testing.assert_array_equal(
        maps["semantic_pred"], np.where(semantic == DEEPLAB2_VOID, 0, semantic + 1)
    )
    np.testing.assert_array_equal(maps["instance_pred"], io["postprocess_tuned/instance_pred"])
    segments = np.unique(expected)
    assert (segments % DEEPLAB2_DIVISOR).max() == 142 and len(segments) == 15
    # deeplab2's Cityscapes options leave this small random model all void.
    assert np.all(io["postprocess/panoptic_pred"] == DEEPLAB2_VOID * DEEPLAB2_DIVISOR)


def test_panoptic_quality_reads_256_slots_against_256_divided_ground_truth(model, arrays, io):
    """The metric post-processes a 256-slot model's outputs with a divisor
    above the slots while the data's ground truth stays at 256: deeplab2's
    own tuned map as ground truth scores PQ 1."""
    ours = _ours(io["postprocess_tuned/panoptic_pred"])
    ground_truth = ours // DEEPLAB2_DIVISOR * 256 + ours % DEEPLAB2_DIVISOR % 256
    metric = PanopticQuality(
        num_classes=model.num_classes,
        thing_class_ids=model.thing_class_ids,
        postprocess_options={**model.postprocess_options, **TUNED},
        method="maskwise",
    )
    outputs = {key: arrays[f"output/{key}"] for key in model.output}
    # The instance ids in this map stay distinct modulo 256.
    assert len(np.unique(ground_truth)) == len(np.unique(ours))
    metric.update_state(ground_truth.astype(np.int32), outputs)
    assert float(metric.result()) == pytest.approx(1.0)
