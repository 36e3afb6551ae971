"""Our post-processors against deeplab2's own on ADE20K's class layout, where
deeplab2's channel order (its 100 thing ids first, then the stuff ids) is a
real permutation of the class ids 1..150 (deeplab2_ade20k/README.md, made by
tools/deeplab2_ade20k_postprocess_reference.py)."""

import json
import os

import numpy as np
import pytest

from keras_maxdeeplab.coco import ADE20K_PANOPTIC_CATEGORIES
from keras_maxdeeplab.coco import thing_class_ids
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import get_kmax_preset
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import kmax_task_overrides
from keras_maxdeeplab.postprocessing import postprocess_panoptic
from keras_maxdeeplab.postprocessing import postprocess_panoptic_maskwise
from keras_maxdeeplab.postprocessing import thing_stuff_class_ids
from tests.helpers import to_numpy

CASES = os.path.join(os.path.dirname(__file__), "deeplab2_ade20k", "cases.npz")
NAMES = ("maskwise_ade20k", "pixelwise_defaults", "pixelwise_area_limits")
ID_MAPS = ("panoptic_pred", "semantic_pred", "instance_pred")
SCORES = ("instance_scores", "semantic_scores")
POST_PROCESSORS = {"pixelwise": postprocess_panoptic, "maskwise": postprocess_panoptic_maskwise}


@pytest.fixture(scope="module")
def cases():
    return np.load(CASES)


def _post_process(cases, name, thing_class_ids):
    options = json.loads(str(cases[f"{name}/config"]))
    function = POST_PROCESSORS[options.pop("transformer_post_processing")]
    image_size = tuple(options.pop("eval_crop_size"))
    return to_numpy(
        function(
            cases["in/pixel_space_mask_logits"],
            cases["in/transformer_class_logits"],
            image_size,
            thing_class_ids=thing_class_ids,
            **options,  # thresholds, area limits, label_divisor 1000, void_label 0
        )
    )


def test_channel_order_is_deeplab2s(cases):
    thing_ids = cases["thing_class_ids"]
    assert len(thing_ids) == 100 and cases["in/transformer_class_logits"].shape[-1] == 151
    assert thing_stuff_class_ids(151, thing_ids) == cases["class_ids"].tolist()
    # The package's ADE20K categories give deeplab2's thing classes.
    assert thing_class_ids(ADE20K_PANOPTIC_CATEGORIES) == tuple(thing_ids.tolist())


def test_ade20k_presets_post_process_with_deeplab2s_ade20k_options(cases):
    """The ADE20K rows' options are the ones deeplab2's ADE20K config gave the
    reference (read from its textproto by the generator)."""
    config = json.loads(str(cases["maskwise_ade20k/config"]))
    for name in ("kmax_r50_ade20k_641", "kmax_convnext_large_ade20k_1281"):
        options = kmax_task_overrides(get_kmax_preset(name))["postprocess_options"]
        assert options == {k: config[k] for k in options}, name


@pytest.mark.parametrize("name", NAMES)
def test_matches_deeplab2(cases, name):
    maps = _post_process(cases, name, cases["thing_class_ids"].tolist())
    for key in ID_MAPS:
        expected = cases[f"{name}/out/{key}"]
        np.testing.assert_array_equal(maps[key], expected, err_msg=key)
    for key in SCORES:
        expected = cases[f"{name}/out/{key}"]
        np.testing.assert_allclose(maps[key], expected, rtol=0, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("name", NAMES)
def test_things_first_identity_order_differs(cases, name):
    """The cases exercise the permutation: taking the first 100 ids as the
    things (COCO's identity order) gives other panoptic maps."""
    maps = _post_process(cases, name, list(range(1, 101)))
    assert np.any(maps["panoptic_pred"] != cases[f"{name}/out/panoptic_pred"])
