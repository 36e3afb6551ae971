import json

import keras
import numpy as np
import pytest

from keras_maxdeeplab import backend_seam
from keras_maxdeeplab.postprocessing import postprocess_panoptic
from keras_maxdeeplab.postprocessing import thing_stuff_class_ids
from tests.helpers import shared_path
from tests.helpers import to_numpy


@pytest.mark.parametrize("in_row_blocks", [False, True], ids=["whole", "row_blocks"])
@pytest.mark.parametrize(
    "case", ["model_default", "synthetic_default", "synthetic_zero_thresholds"]
)
def test_matches_deeplab2_post_processor(case, in_row_blocks, monkeypatch):
    data = np.load(shared_path("reference", "max_deeplab_s", "postprocess_cases.npz"))
    if in_row_blocks:
        if keras.backend.backend() != "jax":
            pytest.skip("row blocks are JAX's (backend_seam.reduces_rows_in_blocks)")
        # 129 output rows of 129 x 128 values: blocks of 5 rows, then 4 rows.
        monkeypatch.setattr(backend_seam, "_ROW_LOOP_MIN_VALUES", 0)
        monkeypatch.setattr(backend_seam, "_ROW_BLOCK_VALUES", 5 * 129 * 128)
    config = json.loads(str(data[f"{case}/config"]))
    maps = to_numpy(
        postprocess_panoptic(
            data[f"{case}/in/pixel_space_mask_logits"],
            data[f"{case}/in/transformer_class_logits"],
            config["eval_crop_size"],
            transformer_class_confidence_threshold=config["transformer_class_confidence_threshold"],
            pixel_confidence_threshold=config["pixel_confidence_threshold"],
            thing_area_limit=config["thing_area_limit"],
            stuff_area_limit=config["stuff_area_limit"],
        )
    )
    for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
        np.testing.assert_array_equal(maps[key], data[f"{case}/out/{key}"], err_msg=key)
    for key in ("instance_scores", "semantic_scores"):
        np.testing.assert_allclose(maps[key], data[f"{case}/out/{key}"], atol=1e-5, err_msg=key)


def _logits(slot_classes, slot_masks, num_channels=6):
    """Confident class logits and mask logits from per-slot class ids and masks."""
    num_slots = len(slot_classes)
    class_logits = np.full((1, num_slots, num_channels), -10.0, "float32")
    for slot, channel in enumerate(slot_classes):
        class_logits[0, slot, channel] = 10.0
    mask_logits = np.stack([np.where(m, 20.0, -20.0) for m in slot_masks], -1)[None]
    return mask_logits.astype("float32"), class_logits


def test_hand_made_scene():
    # 6 class-head channels: ids 1, 2 are things, 3, 4, 5 stuff, channel 5 "no object".
    # A 9x9 image (the logits are already at full size).
    grid = np.zeros((9, 9), bool)
    thing_a = grid.copy()
    thing_a[:3, :3] = True  # 9 px, class 1
    thing_b = grid.copy()
    thing_b[:2, 7:] = True  # 4 px, class 1 (too small)
    stuff_1 = grid.copy()
    stuff_1[3:, :4] = True  # class 3, 24 px
    stuff_2 = grid.copy()
    stuff_2[3:, 4:] = True  # class 3 again: merged with stuff_1
    rest = ~(thing_a | thing_b | stuff_1 | stuff_2)  # class 4, 18 px (too small)
    void_slot = grid.copy()  # "no object" slot
    mask_logits, class_logits = _logits(
        [0, 0, 2, 2, 3, 5], [thing_a, thing_b, stuff_1, stuff_2, rest, void_slot]
    )
    maps = to_numpy(
        postprocess_panoptic(
            mask_logits,
            class_logits,
            (9, 9),
            thing_class_ids=(1, 2),
            label_divisor=100,
            thing_area_limit=5,
            stuff_area_limit=20,
        )
    )
    expected = np.zeros((9, 9), int)
    expected[thing_a] = 1 * 100 + 1
    expected[stuff_1 | stuff_2] = 3 * 100  # merged stuff: 48 px >= 20
    np.testing.assert_array_equal(maps["panoptic_pred"][0], expected)
    semantic = np.select([thing_a | thing_b, stuff_1 | stuff_2, rest], [1, 3, 4], 0)
    np.testing.assert_array_equal(maps["semantic_pred"][0], semantic)


def test_thing_stuff_class_ids():
    assert thing_stuff_class_ids(134, range(1, 81)) == list(range(1, 134))
    # Cityscapes-like: 19 classes, void 255, things 11..18 come first.
    ids = thing_stuff_class_ids(20, range(11, 19), void_label=255)
    assert ids == list(range(11, 19)) + list(range(11))
    with pytest.raises(ValueError, match="do not fit"):
        thing_stuff_class_ids(5, range(1, 9))
