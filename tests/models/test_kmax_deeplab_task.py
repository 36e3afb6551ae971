"""kMaX-DeepLab's training and inference methods against deeplab2's tiny
reference (../shared/reference/kmax_deeplab_tiny): the trainer loss through
`compute_loss` with the model's own auxiliary outputs, and `predict_panoptic`
giving deeplab2's maskwise maps."""

import functools
import json

import numpy as np
import pytest

import keras

from keras_maxdeeplab.conversion.deeplab2 import load_kmax_checkpoint
from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model
from keras_maxdeeplab.postprocessing import MASKWISE_POSTPROCESS_OPTIONS
from tests.helpers import shared_path
from tests.helpers import to_numpy
from tests.losses.test_kmax_deeplab_loss import _y_true

REFERENCE = ("reference", "kmax_deeplab_tiny")
CROP = 65


@pytest.fixture(scope="module")
def io():
    return np.load(shared_path(*REFERENCE, "io.npz"))


@pytest.fixture(scope="module")
def model():
    shared_path(*REFERENCE, "ckpt")
    model = build_kmax_model("kmax_r50_tiny", CROP)
    load_kmax_checkpoint(model, shared_path(*REFERENCE, "ckpt"))
    return model


def _images(io):
    # deeplab2's in-model normalisation, in float32.
    return io[f"s{CROP}/input/image_0_255"] / np.float32(127.5) - np.float32(1)


def _check_compute_loss(model, io, prefix, y_pred, rtol=2e-4, semantic_rtol=None):
    """`compute_loss` with deeplab2's matching and Gumbel draws replayed:
    every term's metric and the summed loss against `prefix`'s terms
    (`semantic_rtol`: the semantic term's own tolerance, default `rtol`)."""
    semantic_rtol = rtol if semantic_rtol is None else semantic_rtol
    model.compile(instance_discrimination_sample_k=64)
    loss = model.max_deeplab_loss
    draws = sorted(k for k in io.files if k.startswith(f"{prefix}/gumbel_sample_indices/"))
    assert len(draws) == 7
    # A test hook: deeplab2's assignment and pixel draws instead of our own.
    loss.compute_terms = functools.partial(
        type(loss).compute_terms,
        loss,
        permutation=io[f"{prefix}/matching/full_permutation"],
        sample_indices=[io[k] for k in draws],
    )
    assert len(y_pred["auxiliary_outputs"]) == 6
    total = float(keras.ops.convert_to_numpy(model.compute_loss(None, _y_true(io, CROP), y_pred)))
    semantic_slack = (semantic_rtol - rtol) * float(io[f"{prefix}/semantic_loss"][0])
    expected_total = float(io[f"{prefix}/total_loss"][0])
    assert total == pytest.approx(expected_total, rel=rtol, abs=semantic_slack)
    trackers = model.loss_term_trackers
    assert len(trackers) == 6 * 4 + 5
    for term, tracker in trackers.items():
        expected = float(io[f"{prefix}/{term}"][0])
        got = float(keras.ops.convert_to_numpy(tracker.result()))
        tolerance = semantic_rtol if term == "semantic_loss" else rtol
        assert got == pytest.approx(expected, rel=tolerance, abs=1e-5), term


def test_compute_loss_is_deeplab2s_trainer_loss(model, io):
    """deeplab2's trainer loss on the inference forward (README section 7),
    from the model's 6 auxiliary predictions."""
    y_pred = model.outputs_with_auxiliary(_images(io))
    _check_compute_loss(model, io, f"s{CROP}/loss_eval_with_aux", y_pred)


def test_train_mode_forward_and_loss(model, io, monkeypatch):
    """`model(images, training=True)` (batch statistics, drop path with
    deeplab2's drawn masks replayed) gives deeplab2's train-mode outputs and
    trainer loss (`loss_train`)."""
    masks = {
        key.split("/")[-1][3:]: io[key]
        for key in io.files
        if key.startswith(f"s{CROP}/train/drop_path_masks/")
    }
    kinds = {
        "memory_attention_drop_path": "memory_self_attention",
        "kmeans_drop_path": "kmeans_cross_attention",
        "memory_ffn_drop_path": "memory_ffn",
    }
    for block in model.transformer_blocks:
        for attribute, kind in kinds.items():
            mask = keras.ops.convert_to_tensor(masks.pop(f"{block.name}_block1_transformer_{kind}"))
            layer = getattr(block, attribute)
            monkeypatch.setattr(layer, "call", lambda x, training=None, mask=mask: x * mask)
    # deeplab2 draws a (unused) pixel-space mask per block too.
    assert all("pixel_space_unused_in_kmax" in name for name in masks) and len(masks) == 6
    # The train-mode forward moves the BN statistics: restore them after.
    saved = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_weights]
    keras.utils.set_random_seed(0)  # the ASPP dropout draw, the same whatever ran before
    try:
        y_pred = model(_images(io), training=True)
    finally:
        for variable, value in zip(model.non_trainable_weights, saved):
            variable.assign(value)
    for key in io.files:
        if key.startswith(f"s{CROP}/train/pred/"):
            reference = io[key]
            ours = keras.ops.convert_to_numpy(y_pred[key.split("/")[-1]])
            np.testing.assert_allclose(
                ours, reference, rtol=0, atol=5e-5 * np.max(np.abs(reference)), err_msg=key
            )
    # The semantic loss depends on the ASPP's dropout draw, which deeplab2's
    # reference does not record: over 7 draws it was 1.2e-4 to 1.24e-3 below
    # deeplab2's (relative), hence its own tolerance.
    _check_compute_loss(model, io, f"s{CROP}/loss_train", y_pred, rtol=1e-3, semantic_rtol=3e-3)


def test_compile_refuses_too_many_sampled_pixels(model):
    with pytest.raises(ValueError, match="must be in 1..289"):
        model.compile(instance_discrimination_sample_k=4096)


def test_default_compile_is_deeplab2s_kmax_adamw(model):
    from keras_maxdeeplab.optimizers import MaXDeepLabAdam

    model.compile(instance_discrimination_sample_k=64)
    optimizer = model.optimizer
    assert isinstance(optimizer, MaXDeepLabAdam)
    assert optimizer.weight_decay_rate == 0.05
    schedule = optimizer._learning_rate
    assert (schedule.initial_learning_rate, schedule.decay_steps) == (5e-4, 150_000)
    assert schedule.warmup_steps == 5000 and optimizer.learning_rate_multiplier == 0.1
    model.compile(instance_discrimination_sample_k=64, weight_decay_rate=0.0)
    assert model.optimizer.weight_decay_rate == 0.0


def test_predict_panoptic_gives_deeplab2s_maskwise_maps(model, io):
    """The decoded uint8 image through the converter, the compiled network and
    maskwise post-processor: deeplab2's crop-65 maps (tuned thresholds),
    restored to the image's size."""
    image = np.load(shared_path("reference", "max_deeplab_tiny", "io.npz"))["image/decoded_uint8"]
    config = json.load(open(shared_path(*REFERENCE, "config.json")))
    options = dict(config["post_processing"]["tuned_thresholds"][str(CROP)])
    options.pop("transformer_post_processing")
    (result,) = model.predict_panoptic(image, **options)
    converter = model.image_converter
    for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
        expected = converter.restore_original_size(io[f"s{CROP}/postprocess/{key}"][0], (360, 640))
        np.testing.assert_array_equal(result[key], expected, err_msg=key)
    # README section 6: 5 segments (3 thing, 2 stuff) at crop 65.
    assert sorted(s["isthing"] for s in result["segments_info"]) == [False, False, True, True, True]
    for segment in result["segments_info"]:
        assert segment["area"] == (result["segmentation"] == segment["id"]).sum()
    # The same maps at the crop size, straight from the compiled pipeline.
    pipeline = model._panoptic_pipeline({**model.postprocess_options, **options})
    maps = to_numpy(pipeline(_images(io)))
    for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
        np.testing.assert_array_equal(maps[key], io[f"s{CROP}/postprocess/{key}"], err_msg=key)


def test_every_layer_is_built_from_the_start():
    """Weightless layers the network never calls (the preprocessor, drop
    paths) too: Keras' JAX predict_on_batch re-runs the whole model eagerly on
    every call while any layer is unbuilt."""
    fresh = build_kmax_model("kmax_r50_tiny", CROP)
    assert [layer.name for layer in fresh._flatten_layers() if not layer.built] == []


def test_postprocess_options_default_to_kmax_and_refuse_unknown_keys(model):
    assert model.postprocess_options == MASKWISE_POSTPROCESS_OPTIONS
    assert MASKWISE_POSTPROCESS_OPTIONS["stuff_area_limit"] == 6400
    with pytest.raises(ValueError, match="Unknown postprocess options \\['area'\\]"):
        model.predict_panoptic(np.zeros((20, 30, 3), np.uint8), area=1)


def test_panoptic_quality_post_processes_maskwise(model, io):
    """The streaming metric on the model's output dict scores deeplab2's
    maskwise map, not the pixelwise one, both inside `evaluate` and alone."""
    from keras_maxdeeplab.evaluation import PanopticQuality

    metric = model.panoptic_quality()
    assert metric.method == "maskwise"
    assert metric.postprocess_options == MASKWISE_POSTPROCESS_OPTIONS
    assert PanopticQuality.from_config(metric.get_config()).method == "maskwise"
    with pytest.raises(ValueError, match="Unknown post-processing method 'boxwise'"):
        PanopticQuality(method="boxwise")

    config = json.load(open(shared_path(*REFERENCE, "config.json")))
    options = dict(config["post_processing"]["tuned_thresholds"][str(CROP)])
    options.pop("transformer_post_processing")
    y_true = {"panoptic_gt": io[f"s{CROP}/gt/panoptic_gt"], "is_crowd_gt": io[f"s{CROP}/gt/is_crowd_gt"]}

    def score(y_pred, method="maskwise"):
        metric = PanopticQuality(
            num_classes=model.num_classes,
            thing_class_ids=model.thing_class_ids,
            postprocess_options=options,
            method=method,
        )
        metric.update_state(y_true, y_pred)
        return metric

    expected = score(io[f"s{CROP}/postprocess/panoptic_pred"]).results()
    pixelwise = score(io[f"s{CROP}/postprocess_pixelwise/panoptic_pred"]).results()
    assert expected["All"] != pixelwise["All"]  # so the comparison below can fail
    assert score(model(_images(io))).results() == expected

    tuned = score(io[f"s{CROP}/postprocess/panoptic_pred"])
    tuned.reset_state()
    model.compile(loss=None, metrics=[tuned])
    logs = model.evaluate(_images(io), y_true, verbose=0, return_dict=True)
    assert tuned.results() == expected
    assert logs["panoptic_quality"] == pytest.approx(expected["All"]["pq"], abs=1e-6)


def test_new_categories_reinitialise_only_the_class_heads(model, io, tmp_path):
    """`from_preset(categories=...)`: every weight but the final and the six
    auxiliary class heads and the semantic head's last convolution is the
    preset's; those start afresh with the new class count."""
    from keras_maxdeeplab import KMaXDeepLab

    folder = str(tmp_path / "kmax")
    model.save_to_preset(folder)
    categories = [
        {"id": 3, "name": "road", "isthing": 0},
        {"id": 7, "name": "car", "isthing": 1},
        {"id": 9, "name": "sky", "isthing": 0},
    ]
    tuned = KMaXDeepLab.from_preset(folder, categories=categories)
    assert tuned.num_classes == 4 and tuned.thing_class_ids == (2,)
    source = {w.path: to_numpy(w) for w in model.weights}
    weights = {w.path: to_numpy(w) for w in tuned.weights}
    assert sorted(weights) == sorted(source)
    fresh = sorted(p for p in weights if weights[p].shape != source[p].shape)
    assert len(fresh) == 2 * 8  # kernel and bias: 7 class heads, the semantic head's last conv
    assert all("transformer_class_head" in p or p.startswith("semantic_head/final_conv") for p in fresh)
    for path in fresh:
        assert weights[path].shape[-1] == 4, path
    for path in set(weights) - set(fresh):
        np.testing.assert_array_equal(weights[path], source[path], err_msg=path)
    outputs = to_numpy(tuned(_images(io)))
    assert outputs["transformer_class_logits"].shape == (1, model.num_mask_slots, 4)
    assert outputs["semantic_logits"].shape[-1] == 4
    # The preset's own classes: the very same model.
    same = KMaXDeepLab.from_preset(folder, categories=model.categories)
    np.testing.assert_array_equal(
        to_numpy(same(_images(io)))["pixel_space_mask_logits"],
        to_numpy(model(_images(io)))["pixel_space_mask_logits"],
    )
