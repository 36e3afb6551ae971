import numpy as np
import pytest


from keras_maxdeeplab.layers.heads import void_prior_logit
from tests.helpers import run_backbone_test
from tests.helpers import run_task_test
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


def test_task_checks(model, images, tmp_path):
    run_task_test(model, images, tmp_path)


def test_backbone_checks(model, images):
    run_backbone_test(model.backbone, images)


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="rank 4"):
        model(np.zeros((65, 65, 3), "float32"))
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        model(np.zeros((1, 65, 65, 1), "float32"))
    with pytest.raises(ValueError, match="built for 65x65"):
        model(np.zeros((1, 64, 64, 3), "float32"))
    with pytest.raises(ValueError, match="float images"):
        model(np.zeros((1, 65, 65, 3), "uint8"))
