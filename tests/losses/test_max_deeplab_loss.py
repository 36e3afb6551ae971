import numpy as np
import pytest

from keras_maxdeeplab.losses import MaXDeepLabLoss
from keras_maxdeeplab.losses.max_deeplab_loss import TERMS
from tests.helpers import shared_path
from tests.helpers import to_numpy

MATCHING_FREE = ("instance_discrimination_loss", "semantic_loss")


def _case(prefix, data, gt_prefix="gt/"):
    y_true = {k[len(gt_prefix) :]: data[k] for k in data.files if k.startswith(gt_prefix)}
    y_pred = {k.split("/")[-1]: data[k] for k in data.files if k.startswith(prefix + "pred/")}
    return y_true, y_pred


def _assert_terms(terms, reference, names, rtol=1e-4):
    for name in names:
        np.testing.assert_allclose(terms[name], reference(name), rtol=rtol, err_msg=name)


@pytest.fixture(scope="module")
def s_case():
    return np.load(shared_path("reference", "max_deeplab_s", "loss_case_439180.npz"))


def test_synthetic_case_all_terms_and_assignment(s_case):
    y_true, y_pred = _case("synthetic/", s_case)
    loss = MaXDeepLabLoss()
    terms = to_numpy(loss.compute_terms(y_true, y_pred))
    _assert_terms(
        terms, lambda n: s_case[f"synthetic/loss_per_sample/{n}"], TERMS + ("total_loss",)
    )
    # Our exact matcher assigns every valid GT mask to deeplab2's slot.
    targets = loss._targets(y_true, 33, 33)
    valid = to_numpy(targets["mask_non_void"])[0] > 0
    costs = to_numpy(
        loss.matching_costs(
            to_numpy(_softmax(y_pred["pixel_space_mask_logits"].reshape(1, -1, 128))),
            y_pred["transformer_class_logits"],
            targets,
        )[0]
    )
    np.testing.assert_allclose(costs, s_case["synthetic/matching/hungarian_weights"], atol=1e-5)
    from keras_maxdeeplab.losses import hungarian_matching

    padded = np.pad(costs, [[0, 0], [0, 0], [0, 53]], constant_values=-999.0)
    ours = to_numpy(hungarian_matching(padded))[0][valid, :128]
    np.testing.assert_array_equal(
        ours, s_case["synthetic/matching/nonsquare_permutation"][0][valid]
    )


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_matching_independent_terms(s_case, mode):
    y_true, y_pred = _case(f"{mode}/", s_case)
    terms = to_numpy(MaXDeepLabLoss().compute_terms(y_true, y_pred))
    _assert_terms(terms, lambda n: s_case[f"{mode}/loss_per_sample/{n}"], MATCHING_FREE)


def test_injected_permutation_reproduces_every_term(s_case):
    y_true, y_pred = _case("eval/", s_case)
    terms = to_numpy(
        MaXDeepLabLoss().compute_terms(
            y_true, y_pred, permutation=s_case["eval/matching/full_permutation"]
        )
    )
    _assert_terms(terms, lambda n: s_case[f"eval/loss_per_sample/{n}"], TERMS + ("total_loss",))


@pytest.mark.parametrize("crop, mode", [(65, "eval"), (129, "eval"), (129, "train")])
def test_tiny_model_cases(crop, mode):
    """32 slots < 181 masks: the other padding branch (+999 rows)."""
    io = np.load(shared_path("reference", "max_deeplab_tiny", "io.npz"))
    y_true = {k.split("/")[-1]: io[k] for k in io.files if k.startswith(f"s{crop}/gt/")}
    source = "output" if mode == "eval" else "train/pred"
    y_pred = {k.split("/")[-1]: io[k] for k in io.files if k.startswith(f"s{crop}/{source}/")}
    permutation = io[f"s{crop}/loss_{mode}/matching/full_permutation"]
    terms = to_numpy(MaXDeepLabLoss().compute_terms(y_true, y_pred, permutation=permutation))
    _assert_terms(terms, lambda n: io[f"s{crop}/loss_{mode}/{n}"], TERMS + ("total_loss",))
    solved = to_numpy(MaXDeepLabLoss().compute_terms(y_true, y_pred))
    _assert_terms(solved, lambda n: io[f"s{crop}/loss_{mode}/{n}"], MATCHING_FREE)
    if mode == "eval":
        # deeplab2 run with scipy's matcher: our matcher solves the same problem.
        _assert_terms(
            solved, lambda n: io[f"s{crop}/loss_eval_scipy_matching/{n}"], TERMS, rtol=1e-3
        )


def _targets(batch, size, things, stuff_class=100, void_fraction=0.0):
    """Targets with `things[b]` 6x6 squares of class 1 on stuff `stuff_class`."""
    semantic = np.full((batch, size, size), stuff_class, np.int32)
    thing_mask = np.full((batch, size, size), -1, np.int32)
    thing_class = np.full((batch, 128), -1, np.float32)
    for b in range(batch):
        for t in range(things[b]):
            y, x = divmod(t, size // 8)
            semantic[b, 8 * y : 8 * y + 6, 8 * x : 8 * x + 6] = 1
            thing_mask[b, 8 * y : 8 * y + 6, 8 * x : 8 * x + 6] = t
            thing_class[b, t] = 1
        if void_fraction:
            semantic[b, : int(size * void_fraction)] = 0
            thing_mask[b, : int(size * void_fraction)] = -1
    return {
        "semantic_gt": semantic,
        "thing_id_mask_gt": thing_mask,
        "thing_id_class_gt": thing_class,
        "semantic_loss_weight": np.ones((batch, size, size), np.float32),
    }


def _predictions(batch, slots=8, size=17, seed=0):
    rng = np.random.RandomState(seed)
    feature = rng.normal(size=(batch, size, size, 8)).astype("float32")
    return {
        "pixel_space_normalized_feature": feature / np.linalg.norm(feature, axis=-1, keepdims=True),
        "pixel_space_mask_logits": rng.normal(size=(batch, size, size, slots)).astype("float32"),
        "transformer_class_logits": rng.normal(size=(batch, slots, 134)).astype("float32"),
        "semantic_logits": rng.normal(size=(batch, size, size, 134)).astype("float32"),
    }


@pytest.mark.parametrize(
    "name, targets",
    [
        ("no things", lambda: _targets(2, 65, [0, 0])),
        ("all void", lambda: _targets(2, 65, [0, 0], void_fraction=1.0)),
        ("more masks than slots", lambda: _targets(2, 65, [20, 12])),
        (
            "one empty image",
            lambda: {
                **_targets(2, 65, [3, 0]),
                "semantic_gt": np.stack(
                    [_targets(1, 65, [3])["semantic_gt"][0], np.zeros((65, 65), np.int32)]
                ),
            },
        ),
    ],
)
def test_edge_cases_are_finite(name, targets):
    y_true = targets()
    terms = to_numpy(MaXDeepLabLoss().compute_terms(y_true, _predictions(2)))
    for term, value in terms.items():
        assert np.all(np.isfinite(value)), (name, term, value)


def test_all_void_image_has_zero_loss_except_negatives():
    terms = to_numpy(
        MaXDeepLabLoss().compute_terms(_targets(1, 65, [0], void_fraction=1.0), _predictions(1))
    )
    for term in (
        "pq_style_loss_mask_dice_term",
        "mask_id_cross_entropy_loss",
        "instance_discrimination_loss",
        "semantic_loss",
    ):
        assert terms[term][0] == 0.0, term
    # Every slot lies on void: unmatched slots are pushed to "no object".
    assert terms["pq_style_loss_class_term"][0] > 0


def test_bad_targets():
    loss = MaXDeepLabLoss()
    y_true = _targets(1, 65, [1])
    with pytest.raises(ValueError, match="lacks"):
        loss.compute_terms({k: v for k, v in y_true.items() if k != "semantic_gt"}, _predictions(1))
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        loss.compute_terms(
            {**y_true, "semantic_gt": y_true["semantic_gt"][..., None]}, _predictions(1)
        )
    with pytest.raises(ValueError, match="out of range"):
        loss.compute_terms({**y_true, "semantic_gt": y_true["semantic_gt"] + 200}, _predictions(1))
    with pytest.raises(ValueError, match="num_classes"):
        MaXDeepLabLoss(num_classes=20, thing_class_ids=range(1, 9)).compute_terms(
            y_true, _predictions(1)
        )
