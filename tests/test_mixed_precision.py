"""Mixed precision (`mixed_bfloat16`, `mixed_float16`) for inference and training.

Against deeplab2's float32 reference outputs of its converted tiny model: the
outputs within a stated tolerance, the panoptic map of the reference image
identical; and `fit` lowers the loss (with loss scaling under float16).
"""

import json

import numpy as np
import pytest

import keras

from keras_maxdeeplab.conversion import load_deeplab2_checkpoint
from keras_maxdeeplab.postprocessing import postprocess_panoptic
from tests.helpers import relative_error
from tests.helpers import shared_path
from tests.helpers import tiny_model
from tests.helpers import to_numpy
from tests.models.test_max_deeplab_fit import _scenes

CROP = 65
# max |mixed - float32| / max |float32| of each output. bfloat16 (8 mantissa
# bits) measured on JAX: mask logits 0.084, class logits 0.030, semantic
# logits 0.066, normalised feature 0.106; bound 0.15. float16 (11 bits):
# bound 0.02, not yet measured, nor either policy on TensorFlow and PyTorch.
TOLERANCES = {
    "mixed_bfloat16": dict.fromkeys(
        (
            "pixel_space_mask_logits",
            "transformer_class_logits",
            "semantic_logits",
            "pixel_space_normalized_feature",
        ),
        0.15,
    ),
    "mixed_float16": dict.fromkeys(
        (
            "pixel_space_mask_logits",
            "transformer_class_logits",
            "semantic_logits",
            "pixel_space_normalized_feature",
        ),
        0.02,
    ),
}


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", sorted(TOLERANCES), indirect=True)
def test_outputs_and_panoptic_map_match_float32(policy):
    io = np.load(shared_path("reference", "max_deeplab_tiny", "io.npz"))
    model = tiny_model(CROP)
    load_deeplab2_checkpoint(model, shared_path("reference", "max_deeplab_tiny", "ckpt"))
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in model.weights)
    outputs = model(io[f"s{CROP}/input/image_normalized"], training=False)
    compute_dtype = policy.removeprefix("mixed_")
    errors = {}
    for key, tolerance in TOLERANCES[policy].items():
        assert keras.backend.standardize_dtype(outputs[key].dtype) == compute_dtype, key
        value = to_numpy(keras.ops.cast(outputs[key], "float32"))
        errors[key] = relative_error(value, io[f"s{CROP}/output/{key}"])
    print(policy, keras.backend.backend(), json.dumps(errors))
    for key, tolerance in TOLERANCES[policy].items():
        assert errors[key] < tolerance, (key, errors)

    config = json.load(open(shared_path("reference", "max_deeplab_tiny", "config.json")))
    thresholds = config["post_processing"]["tuned_thresholds"][str(CROP)]
    maps = to_numpy(
        postprocess_panoptic(
            outputs["pixel_space_mask_logits"],
            outputs["transformer_class_logits"],
            (CROP, CROP),
            **thresholds,
        )
    )
    reference = io[f"s{CROP}/postprocess/panoptic_pred"]
    print(policy, "panoptic agreement", float(np.mean(maps["panoptic_pred"] == reference)))
    np.testing.assert_array_equal(maps["panoptic_pred"], reference)


@pytest.mark.parametrize("policy", sorted(TOLERANCES), indirect=True)
def test_fit_lowers_the_loss(policy):
    keras.utils.set_random_seed(1)
    model = tiny_model(CROP)
    model.compile(learning_rate=1e-3, training_steps=1000, warmup_steps=0)
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")
    images, y_true = _scenes(4, seed=0)
    history = model.fit(images, y_true, batch_size=4, epochs=12, verbose=0).history
    losses = history["loss"]
    print(policy, keras.backend.backend(), losses)
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
