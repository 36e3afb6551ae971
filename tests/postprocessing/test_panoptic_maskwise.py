"""kMaX-DeepLab's 'maskwise' post-processing against deeplab2's maps, on
deeplab2's own raw outputs (../shared/reference/kmax_deeplab_tiny)."""

import json

import numpy as np
import pytest

from keras_maxdeeplab.postprocessing import postprocess_panoptic
from keras_maxdeeplab.postprocessing import postprocess_panoptic_maskwise
from tests.helpers import shared_path
from tests.helpers import to_numpy

REFERENCE = ("reference", "kmax_deeplab_tiny")
MAPS = ("panoptic_pred", "semantic_pred", "instance_pred")


@pytest.fixture(scope="module")
def io():
    return np.load(shared_path(*REFERENCE, "io.npz"))


@pytest.fixture(scope="module")
def config():
    return json.load(open(shared_path(*REFERENCE, "config.json")))["post_processing"]


def _options(thresholds):
    options = dict(thresholds)
    assert options.pop("transformer_post_processing") == "maskwise"
    return options


def _maskwise(io, crop, thresholds):
    return to_numpy(
        postprocess_panoptic_maskwise(
            io[f"s{crop}/output/pixel_space_mask_logits"],
            io[f"s{crop}/output/transformer_class_logits"],
            (crop, crop),
            **_options(thresholds),
        )
    )


@pytest.mark.parametrize("crop", [65, 129])
def test_maskwise_tuned_thresholds(io, config, crop):
    """Every filter acts here (README section 6): both class thresholds, the
    overlap test, the area limits, rank + 1 ids, instance 1 where unassigned."""
    maps = _maskwise(io, crop, config["tuned_thresholds"][str(crop)])
    for key in MAPS:
        np.testing.assert_array_equal(maps[key], io[f"s{crop}/postprocess/{key}"], err_msg=key)
    for key in ("instance_scores", "semantic_scores"):
        np.testing.assert_allclose(
            maps[key], io[f"s{crop}/postprocess/{key}"], rtol=0, atol=1e-4, err_msg=key
        )
    segments = np.unique(maps["panoptic_pred"])
    assert len(segments[segments > 0]) == {65: 5, 129: 10}[crop]


@pytest.mark.parametrize("crop", [65, 129])
def test_maskwise_default_thresholds(io, config, crop):
    thresholds = config["deeplab2_default_thresholds (kMaX COCO config)"]
    maps = _maskwise(io, crop, thresholds)
    for key in MAPS:
        np.testing.assert_array_equal(
            maps[key], io[f"s{crop}/postprocess_default/{key}"], err_msg=key
        )


@pytest.mark.parametrize("crop", [65, 129])
def test_pixelwise_thresholds(io, crop):
    summary = json.load(open(shared_path(*REFERENCE, "summary.json")))
    options = dict(summary[f"s{crop}"]["pixelwise_thresholds"])
    assert options.pop("transformer_post_processing") == "pixelwise"
    maps = to_numpy(
        postprocess_panoptic(
            io[f"s{crop}/output/pixel_space_mask_logits"],
            io[f"s{crop}/output/transformer_class_logits"],
            (crop, crop),
            **options,
        )
    )
    for key in MAPS:
        np.testing.assert_array_equal(
            maps[key], io[f"s{crop}/postprocess_pixelwise/{key}"], err_msg=key
        )
