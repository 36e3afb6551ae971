import os

import numpy as np
import pytest

import keras

from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab.layers.heads import void_prior_logit
from tests.helpers import tiny_model
from tests.helpers import to_numpy


@pytest.fixture(scope="module")
def model():
    return tiny_model(65)


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).uniform(-1, 1, (2, 65, 65, 3)).astype("float32")


def test_outputs(model, images):
    outputs = to_numpy(model(images))
    assert {k: v.shape for k, v in outputs.items()} == {
        "semantic_logits": (2, 17, 17, 134),
        "pixel_space_normalized_feature": (2, 17, 17, 16),
        "transformer_class_logits": (2, 32, 134),
        "pixel_space_mask_logits": (2, 17, 17, 32),
    }
    norms = np.linalg.norm(outputs["pixel_space_normalized_feature"], axis=-1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    # Untrained class head: near-zero logits plus the constant void prior ln(1197).
    assert void_prior_logit(134) == pytest.approx(np.log(1197.0))
    np.testing.assert_allclose(
        outputs["transformer_class_logits"][..., -1], void_prior_logit(134), atol=0.5
    )


def test_eager_equals_compiled(model, images):
    eager = to_numpy(model(images))
    compiled = model.predict(images, verbose=0)
    for key in eager:
        np.testing.assert_allclose(compiled[key], eager[key], rtol=1e-4, atol=1e-4)


def test_saved_model_round_trip(model, images, tmp_path):
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, MaXDeepLab)
    expected = to_numpy(model(images))
    got = to_numpy(restored(images))
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-6)


def test_get_config_round_trip(model):
    clone = MaXDeepLab.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert [v.path for v in clone.weights] == [v.path for v in model.weights]


def test_mixed_precision(model, images):
    from keras_maxdeeplab import MaXDeepLabBackbone

    backbone = model.backbone
    config = dict(backbone.get_config(), dtype="mixed_bfloat16")
    mixed = MaXDeepLab(
        MaXDeepLabBackbone.from_config(config),
        **{
            k: v
            for k, v in model.get_config().items()
            if k not in ("backbone", "preprocessor", "name")
        },
    )
    for source, target in zip(model.weights, mixed.weights):
        target.assign(source)
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in mixed.weights)
    outputs = mixed(images)
    assert keras.backend.standardize_dtype(outputs["semantic_logits"].dtype) == "bfloat16"
    reference = to_numpy(model(images))["transformer_class_logits"]
    got = to_numpy(keras.ops.cast(outputs["transformer_class_logits"], "float32"))
    np.testing.assert_allclose(got, reference, atol=0.1)


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="rank 4"):
        model(np.zeros((65, 65, 3), "float32"))
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        model(np.zeros((1, 65, 65, 1), "float32"))
    with pytest.raises(ValueError, match="built for 65x65"):
        model(np.zeros((1, 64, 64, 3), "float32"))
    with pytest.raises(ValueError, match="float images"):
        model(np.zeros((1, 65, 65, 3), "uint8"))
