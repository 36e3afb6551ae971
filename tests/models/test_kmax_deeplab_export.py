"""kMaX-DeepLab's exported pipeline (maskwise post-processor inside) against the Keras path.

deeplab2's tiny kMaX-DeepLab (../shared/reference/kmax_deeplab_tiny) at 65x65
with the reference's tuned thresholds. The graph every format exports is
checked here; an artifact of it run by its own runtime in
tests/test_cli.py (`maxdeeplab export` of a converted kMaX checkpoint), and
the whole format matrix with MaX-DeepLab (tests/models/test_max_deeplab_export.py):
the exporters see the same layers.
"""

import json

import numpy as np
import pytest

from keras_maxdeeplab.conversion.deeplab2 import load_kmax_checkpoint
from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model
from keras_maxdeeplab.models.max_deeplab.max_deeplab_export import SERVING_OUTPUTS
from keras_maxdeeplab.models.max_deeplab.max_deeplab_export import serving_model
from keras_maxdeeplab.postprocessing.panoptic import postprocess_panoptic
from keras_maxdeeplab.postprocessing.panoptic import postprocess_panoptic_maskwise
from tests.helpers import shared_path
from tests.helpers import to_numpy
from tests.models.test_max_deeplab_export import SCORE_ATOL

REFERENCE = ("reference", "kmax_deeplab_tiny")
FRAME = (48, 64)


@pytest.fixture(scope="module")
def model():
    model = build_kmax_model("kmax_r50_tiny", 65)
    load_kmax_checkpoint(model, shared_path(*REFERENCE, "ckpt"))
    with open(shared_path(*REFERENCE, "config.json")) as f:
        tuned = json.load(f)["post_processing"]["tuned_thresholds"]["65"]
    model.postprocess_options.update(
        {k: v for k, v in tuned.items() if k != "transformer_post_processing"}
    )
    return model


@pytest.fixture(scope="module")
def images():
    """`{"crop": [2, 65, 65, 3], "frame": [2, 48, 64, 3]}` uint8: deeplab2's
    padded reference image (rounded up) and its mirror image, and their
    bottom-left 48x64 regions."""
    io = np.load(shared_path(*REFERENCE, "io.npz"))
    image = np.ceil(io["s65/input/image_0_255"][0]).astype("uint8")
    crop = np.stack([image, image[:, ::-1]])
    return {"crop": crop, "frame": np.ascontiguousarray(crop[:, 17:, :64])}


@pytest.fixture(scope="module")
def expected(model, images):
    """`predict_panoptic`'s maps (with the scores restored alike); on the
    crop, deeplab2's maskwise post-processor on the compiled forward pass."""
    converter = model.image_converter
    maps = {}
    for name, batch in images.items():
        outputs = model.predict_on_batch(converter(batch))
        crop = to_numpy(
            postprocess_panoptic_maskwise(
                outputs["pixel_space_mask_logits"],
                outputs["transformer_class_logits"],
                (65, 65),
                thing_class_ids=model.thing_class_ids,
                **model.postprocess_options,
            )
        )
        size = batch.shape[1:3]
        maps[name] = {
            key: np.stack([converter.restore_original_size(m, size) for m in value])
            for key, value in crop.items()
        }
        results = model.predict_panoptic(batch)
        for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
            np.testing.assert_array_equal(np.stack([r[key] for r in results]), maps[name][key])
        for index in range(len(batch)):
            assert len(np.unique(maps[name]["panoptic_pred"][index])) >= 3, (name, index)
    return maps


def _assert_same_maps(got, expected):
    for key in SERVING_OUTPUTS:
        value = np.asarray(got[key])
        assert value.shape == expected[key].shape, key
        if key.endswith("scores"):
            np.testing.assert_allclose(value, expected[key], atol=SCORE_ATOL, rtol=0, err_msg=key)
        else:
            assert value.dtype == np.int32, key
            np.testing.assert_array_equal(value, expected[key], err_msg=key)


def test_serving_model_post_processes_maskwise(model, images, expected):
    """The graph every format exports, run by Keras, at the crop and at a
    frame size: `predict_panoptic`'s maskwise maps. deeplab2's pixelwise
    post-processor would give other maps, so the check can fail."""
    for name, batch in images.items():
        serving = serving_model(model, input_size=None if name == "crop" else FRAME)
        assert serving.get_layer("panoptic_postprocess").method == "maskwise"
        _assert_same_maps(to_numpy(serving.predict_on_batch(batch)), expected[name])
    outputs = model.predict_on_batch(model.image_converter(images["crop"]))
    pixelwise = to_numpy(
        postprocess_panoptic(
            outputs["pixel_space_mask_logits"],
            outputs["transformer_class_logits"],
            (65, 65),
            thing_class_ids=model.thing_class_ids,
        )
    )
    assert not np.array_equal(pixelwise["panoptic_pred"], expected["crop"]["panoptic_pred"])
