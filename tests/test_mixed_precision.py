"""Mixed precision (`mixed_bfloat16`, `mixed_float16`) for inference and training.

Against deeplab2's float32 reference outputs of its converted tiny model: the
outputs within a stated tolerance and the panoptic map of the reference image
nearly identical; on the trained demo model, the panoptic maps of held-out
scenes nearly identical to float32's; and `fit` lowers the loss (with loss
scaling under float16).

Why "nearly": rounding every activation to 8 (bfloat16) or 11 (float16)
mantissa bits moves the tiny model's logits by 1-10 % of their range (below),
and the random-weight reference model has many pixels whose float32 decision
margins are smaller than that. Even the trained demo model flips a few
boundary pixels per image.
"""

import json

import numpy as np
import pytest

import keras

from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab.conversion import load_deeplab2_checkpoint
from keras_maxdeeplab.data.synthetic import synthetic_scene
from keras_maxdeeplab.demo import DEMO_PRESET
from keras_maxdeeplab.postprocessing import postprocess_panoptic
from tests.helpers import ONE_BLOCK_PER_STAGE
from tests.helpers import relative_error
from tests.helpers import shared_path
from tests.helpers import tiny_model
from tests.helpers import to_numpy
from tests.models.test_max_deeplab_fit import _scenes

CROP = 65
# max |mixed - float32| / max |float32| of each output, measured (JAX /
# TensorFlow / PyTorch): bfloat16, the same on all three: mask logits 0.084,
# class logits 0.030, semantic logits 0.066, normalised feature 0.106; bound
# 0.15. float16: mask logits 0.028 / 0.014 / 0.014, class logits 0.0067 /
# 0.0049 / 0.0063, semantic logits 0.019 / 0.0082 / 0.0082, normalised
# feature 0.032 / 0.018 / 0.017; bound 0.05.
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
        0.05,
    ),
}
# Fraction of the reference image's panoptic map equal to deeplab2's float32
# map (measured: bfloat16 0.9586 on every backend; float16 0.9858 JAX, 0.9948
# TensorFlow, 0.9931 PyTorch).
REFERENCE_MAP_AGREEMENT = {"mixed_bfloat16": 0.95, "mixed_float16": 0.98}
# Fraction of each held-out scene's panoptic map equal to float32's with the
# trained demo model (measured, worst of the 8 scenes, JAX / TensorFlow /
# PyTorch: bfloat16 0.9986 / 0.9984 / 0.9977, float16 0.9997 / 0.9999 / 0.9998).
DEMO_MAP_AGREEMENT = {"mixed_bfloat16": 0.995, "mixed_float16": 0.999}


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
    agreement = float(np.mean(maps["panoptic_pred"] == io[f"s{CROP}/postprocess/panoptic_pred"]))
    print(policy, "reference map agreement", agreement)
    assert agreement >= REFERENCE_MAP_AGREEMENT[policy]


def test_trained_model_panoptic_maps_match_float32():
    # Held out: the demo model was trained on the scenes of seeds 0 and 1.
    images = [synthetic_scene(100 + index)[0] for index in range(8)]
    maps = {}
    for policy in ("float32", *DEMO_MAP_AGREEMENT):
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = MaXDeepLab.from_preset(DEMO_PRESET)
            maps[policy] = [r["panoptic_pred"] for r in model.predict_panoptic(images)]
        finally:
            keras.mixed_precision.set_global_policy("float32")
    for policy, bound in DEMO_MAP_AGREEMENT.items():
        agreement = [np.mean(a == b) for a, b in zip(maps[policy], maps["float32"])]
        print(policy, keras.backend.backend(), "demo map agreement", agreement)
        assert min(agreement) >= bound, agreement


@pytest.mark.parametrize("policy", sorted(TOLERANCES), indirect=True)
def test_fit_lowers_the_loss(policy):
    keras.utils.set_random_seed(1)
    model = tiny_model(CROP, **ONE_BLOCK_PER_STAGE)
    model.compile(learning_rate=1e-3, training_steps=1000, warmup_steps=0)
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")
    images, y_true = _scenes(4, seed=0)
    history = model.fit(images, y_true, batch_size=4, epochs=12, verbose=0).history
    losses = history["loss"]
    print(policy, keras.backend.backend(), losses)
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
