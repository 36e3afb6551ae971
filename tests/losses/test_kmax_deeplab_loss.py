"""kMaX-DeepLab's loss against deeplab2's terms on its own predictions
(../shared/reference/kmax_deeplab_tiny), with deeplab2's matching and
Gumbel draws replayed (README section 7)."""

import numpy as np
import pytest

from keras_maxdeeplab.losses import KMaXDeepLabLoss
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab import transformer_block_names
from tests.helpers import shared_path
from tests.helpers import to_numpy

REFERENCE = ("reference", "kmax_deeplab_tiny")
PREDICTION_KEYS = (
    "pixel_space_mask_logits",
    "pixel_space_normalized_feature",
    "transformer_class_logits",
)


@pytest.fixture(scope="module")
def io():
    return np.load(shared_path(*REFERENCE, "io.npz"))


def _loss():
    # deeplab2's COCO loss options for the tiny reference (config.json).
    return KMaXDeepLabLoss(
        instance_discrimination_sample_k=64, instance_discrimination_sample_temperature=1.5
    )


def _y_true(io, crop):
    gt = f"s{crop}/gt"
    return {
        "semantic_gt": io[f"{gt}/semantic_gt"],
        "thing_id_mask_gt": io[f"{gt}/thing_id_mask_gt"],
        "thing_id_class_gt": io[f"{gt}/thing_id_class_gt"].astype("int32"),
        "semantic_loss_weight": io[f"{gt}/semantic_loss_weight"],
    }


def _y_pred(io, crop, auxiliary):
    y_pred = {key: io[f"s{crop}/output/{key}"] for key in PREDICTION_KEYS + ("semantic_logits",)}
    if auxiliary:
        y_pred["auxiliary_outputs"] = [
            {key: io[f"s{crop}/transformer_decoder/{name}/aux/{key}"] for key in PREDICTION_KEYS}
            for name in transformer_block_names((2, 2, 2))
        ]
    return y_pred


def _replayed(io, prefix):
    draws = sorted(k for k in io.files if k.startswith(f"{prefix}/gumbel_sample_indices/"))
    return io[f"{prefix}/matching/full_permutation"], [io[k] for k in draws]


def _check_terms(terms, io, prefix):
    references = {
        k[len(prefix) + 1 :]: io[k]
        for k in io.files
        if k.startswith(prefix + "/") and k.count("/") == 2
    }
    assert sorted(terms) == sorted(references)
    for key, reference in references.items():
        np.testing.assert_allclose(terms[key], reference, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("crop", [65, 129])
def test_evaluator_loss(io, crop):
    """The final prediction alone: deeplab2's evaluator loss."""
    prefix = f"s{crop}/loss_eval"
    permutation, draws = _replayed(io, prefix)
    terms = _loss().compute_terms(
        _y_true(io, crop), _y_pred(io, crop, False), permutation, sample_indices=draws
    )
    _check_terms(to_numpy(terms), io, prefix)


@pytest.mark.parametrize("crop", [65, 129])
def test_trainer_loss_with_auxiliary_outputs(io, crop):
    """Six auxiliary predictions (at their blocks' strides, resized to
    stride 4) share the final prediction's matching and weights."""
    prefix = f"s{crop}/loss_eval_with_aux"
    permutation, draws = _replayed(io, prefix)
    np.testing.assert_array_equal(permutation, io[f"s{crop}/loss_eval/matching/full_permutation"])
    terms = _loss().compute_terms(
        _y_true(io, crop), _y_pred(io, crop, True), permutation, sample_indices=draws
    )
    assert len(terms) == 6 + 6 * 4
    _check_terms(to_numpy(terms), io, prefix)


def test_sampling_draws_non_void_pixels(io):
    """Without replayed draws: 64 distinct stride-4 pixels, none void."""
    loss = KMaXDeepLabLoss(instance_discrimination_sample_k=64, seed=1)
    y_true = _y_true(io, 65)
    t = loss._targets(y_true, 17, 17)
    indices = to_numpy(loss.sample_pixels(t))
    assert indices.shape == (1, 64) and len(set(indices[0])) == 64
    semantic = io["s65/gt/semantic_gt"][:, ::4, ::4].reshape(1, -1)
    assert np.all(semantic[0, indices[0]] != 0)
    terms = to_numpy(loss.compute_terms(y_true, _y_pred(io, 65, False)))
    assert np.isfinite(terms["total_loss"]).all()
