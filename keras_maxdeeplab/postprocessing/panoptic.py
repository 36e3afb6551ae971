"""deeplab2's MaX-DeepLab panoptic post-processor ('pixelwise'), in keras.ops.

Vectorised over the batch, with no Python loop over pixels or segments, so it
runs eagerly or inside a compiled function on every backend.
"""

from keras import ops

from keras_maxdeeplab import backend_seam
from keras_maxdeeplab.backend_seam import count_by_index
from keras_maxdeeplab.backend_seam import first_argmax
from keras_maxdeeplab.coco.categories import COCO_THING_CLASS_IDS
from keras_maxdeeplab.coco.categories import LABEL_DIVISOR
from keras_maxdeeplab.coco.categories import thing_stuff_class_ids
from keras_maxdeeplab.layers.resize import resize_bilinear_align_corners
from keras_maxdeeplab.layers.resize import interpolate_by_gathers

# deeplab2's logit for undetected slots.
_SMALL_CONSTANT_FOR_SOFTMAX = -99999.0

# deeplab2's post-processing thresholds and area limits (COCO at 641; its 1025
# configs use area limits 256 / 4096): the defaults of `postprocess_panoptic`
# and of every caller that forwards options to it.
DEFAULT_POSTPROCESS_OPTIONS = {
    "transformer_class_confidence_threshold": 0.7,
    "pixel_confidence_threshold": 0.4,
    "thing_area_limit": 100,
    "stuff_area_limit": 1600,
}

# deeplab2's kMaX-DeepLab COCO post-processing (maskwise, at 1281): the
# defaults of `KMaXDeepLab.postprocess_options`, `postprocess_panoptic_maskwise`'s
# keyword arguments.
MASKWISE_POSTPROCESS_OPTIONS = {
    "pixel_confidence_threshold": 0.4,
    "transformer_class_confidence_threshold_thing": 0.7,
    "transformer_class_confidence_threshold_stuff": 0.5,
    "overlapping_threshold": 0.8,
    "thing_area_limit": 400,
    "stuff_area_limit": 6400,
    "reorder_class_weight": 1.0,
    "reorder_mask_weight": 1.0,
}


def _lookup(table, index):
    """`table[index]` for a 1-D table: a row lookup in the `[M, 1]` table,
    which PyTorch exports to ONNX with a symbolic batch size (its flat `take`
    adds a squeeze that ONNX Runtime rejects)."""
    return ops.take(ops.reshape(table, (-1, 1)), index, axis=0)[..., 0]


def _gather(values, index):
    """`values[b, index[b, h, w]]`: `[B, M]` values at `[B, H, W]` indices.

    A lookup in the flattened values at index + b * M: the batch size stays
    symbolic under `torch.export` (`take_along_axis` fixes it there).
    """
    offsets = ops.arange(ops.shape(index)[0], dtype="int32") * values.shape[1]
    return _lookup(values, index + offsets[:, None, None])


def _semantic_pass(top_slot, class_pred, class_ids):
    """deeplab2's "semantic" pass, every threshold 0 so that every slot
    counts: each pixel's class is that of its top slot `[B, H, W]` (the
    argmax of the upsampled logits over all slots), int32 `[B, H, W]`."""
    return ops.cast(_lookup(class_ids, _gather(class_pred, top_slot)), "int32")


def _slot_reductions(logits, detected, axis=-1, confidence_by_sum=False):
    """What the pixelwise post-processor needs of the upsampled logits (the
    slots on `axis`), each with the slot axis reduced: the top logit and its
    slot over all slots (`top_logit`, `top_slot`); over the `[B, N]`
    `detected` slots (the others at -99999), the top logit, its slot
    (`mask_id`) and its softmax probability (`pixel_confidence`): `1 / sum
    exp(logit - top)` where `confidence_by_sum` (the same value: exp(0) = 1;
    PyTorch's softmax kernel is faster, XLA's fused sum where the map is in
    cache)."""
    axis = axis % len(logits.shape)
    for other in range(1, len(logits.shape)):
        if other != axis:
            detected = ops.expand_dims(detected, other)  # [B, N] -> N on `axis`
    detected_logits = ops.where(detected, logits, _SMALL_CONSTANT_FOR_SOFTMAX)
    top_detected_logit = ops.max(detected_logits, axis=axis)
    if confidence_by_sum:
        shifted = detected_logits - ops.expand_dims(top_detected_logit, axis)
        pixel_confidence = 1.0 / ops.sum(ops.exp(shifted), axis=axis)
    else:
        pixel_confidence = ops.max(ops.softmax(detected_logits, axis=axis), axis=axis)
    mask_id = first_argmax(detected_logits, axis=axis, maximum=top_detected_logit)
    top_logit = ops.max(logits, axis=axis)
    top_slot = first_argmax(logits, axis=axis, maximum=top_logit)
    return top_logit, top_slot, top_detected_logit, mask_id, pixel_confidence


def _upsampled_slot_reductions(mask_logits, detected, image_size):
    """`_slot_reductions` of the `[B, h, w, N]` mask logits upsampled to
    `image_size` (bilinear, aligned corners), each `[B, H, W]`.

    Where `backend_seam.reduces_rows_in_blocks`, a block of upsampled rows at
    a time, slot-major (`[B, k, N, W]`: the reductions over the slots then
    run along the vectors of a row, not across each pixel's 128 values):
    the same values up to float rounding of the confidence's sum. The
    reductions at 641 on JAX: 310 ms whole, 126 ms by rows, 92 ms slot-major
    with the confidence as a sum.
    """
    height, width = image_size
    num_slots = mask_logits.shape[-1]
    if not backend_seam.reduces_rows_in_blocks((height, width, num_slots)):
        logits = resize_bilinear_align_corners(mask_logits, image_size)
        return _slot_reductions(logits, detected)
    slot_major = ops.transpose(mask_logits, (0, 1, 3, 2))  # [B, h, N, w]
    wide = interpolate_by_gathers(slot_major, 3, width)  # [B, h, N, W]

    def rows(index):
        logits = interpolate_by_gathers(wide, 1, height, index)  # [B, k, N, W]
        return _slot_reductions(logits, detected, axis=2, confidence_by_sum=True)

    return backend_seam.map_row_blocks(rows, height, num_slots * width)


def postprocess_panoptic(
    pixel_space_mask_logits,
    transformer_class_logits,
    image_size,
    thing_class_ids=COCO_THING_CLASS_IDS,
    void_label=0,
    label_divisor=LABEL_DIVISOR,
    transformer_class_confidence_threshold=DEFAULT_POSTPROCESS_OPTIONS[
        "transformer_class_confidence_threshold"
    ],
    pixel_confidence_threshold=DEFAULT_POSTPROCESS_OPTIONS["pixel_confidence_threshold"],
    thing_area_limit=DEFAULT_POSTPROCESS_OPTIONS["thing_area_limit"],
    stuff_area_limit=DEFAULT_POSTPROCESS_OPTIONS["stuff_area_limit"],
):
    """Turns mask and class logits into panoptic maps, exactly as deeplab2.

    1. A slot is detected iff its top non-void class probability (softmax over
       all channels, void dropped without renormalising) is
       `>= transformer_class_confidence_threshold`.
    2. Mask logits are upsampled (bilinear, aligned corners) to `image_size`;
       undetected slots get -99999. A pixel is confident iff its top slot
       probability is `> pixel_confidence_threshold` and its argmax over all
       slots is a detected slot.
    3. Stuff segments are merged per class and dropped below
       `stuff_area_limit` pixels; thing segments (one per slot) below
       `thing_area_limit`.
    4. `panoptic = semantic * label_divisor + instance`, instance = slot + 1
       for things, 0 for stuff; void pixels are `void_label * label_divisor`.

    Args:
        pixel_space_mask_logits: `[B, h, w, N]`.
        transformer_class_logits: `[B, N, K]` (last channel "no object").
        image_size: `(H, W)` to upsample to (the model's input size).
        thing_class_ids: dataset ids of thing classes.

    Returns:
        dict of `[B, H, W]` maps: `panoptic_pred`, `semantic_pred` (from a
        pass with every threshold 0), `instance_pred` (slot + 1 per pixel; all
        1 when nothing is detected, as deeplab2), `instance_scores`,
        `semantic_scores`.

    Example:
    >>> out = model.predict(images)
    >>> maps = postprocess_panoptic(out["pixel_space_mask_logits"],
    ...                             out["transformer_class_logits"], (641, 641))
    """
    mask_logits = ops.cast(ops.convert_to_tensor(pixel_space_mask_logits), "float32")
    class_logits = ops.cast(ops.convert_to_tensor(transformer_class_logits), "float32")
    num_channels = class_logits.shape[2]
    class_ids = thing_stuff_class_ids(num_channels, thing_class_ids, void_label)
    num_things = len(tuple(thing_class_ids))
    class_ids = ops.convert_to_tensor(class_ids, dtype="int32")

    probs = ops.softmax(class_logits, axis=-1)[..., :-1]
    class_confidence = ops.max(probs, axis=-1)  # [B, N]
    class_pred = first_argmax(probs)  # [B, N]
    detected = class_confidence >= transformer_class_confidence_threshold
    any_detected = ops.any(detected, axis=-1)[:, None, None]  # [B, 1, 1]

    top_logit, top_slot, top_detected_logit, mask_id, pixel_confidence = (
        _upsampled_slot_reductions(mask_logits, detected, image_size)
    )  # [B, H, W] each
    confident = ops.logical_and(
        pixel_confidence > pixel_confidence_threshold, top_logit == top_detected_logit
    )
    confident = ops.logical_and(confident, any_detected)

    def per_pixel(values):  # [B, N] slot values -> [B, H, W] at each pixel's slot.
        return _gather(values, mask_id)

    panoptic = _filtered_panoptic(
        mask_id,
        confident,
        class_pred,
        class_ids,
        num_things,
        num_channels - 1,
        void_label,
        label_divisor,
        thing_area_limit,
        stuff_area_limit,
    )

    return {
        "panoptic_pred": panoptic,
        "semantic_pred": _semantic_pass(top_slot, class_pred, class_ids),
        "instance_pred": ops.where(any_detected, mask_id + 1, 1),
        "instance_scores": ops.where(any_detected, pixel_confidence, 0.0),
        "semantic_scores": ops.where(any_detected, per_pixel(class_confidence), 0.0),
    }


def _stable_descending_order(scores):
    """`[B, N, N]` one-hot matrices `P[b, s, r] = 1` iff slot s has rank r when
    sorting `scores` `[B, N]` descending, ties in slot order (`tf.argsort(...,
    'DESCENDING', stable=True)`), without a backend's sort."""
    size = scores.shape[-1]
    higher = ops.cast(scores[:, None, :] > scores[:, :, None], "int32")
    earlier = ops.arange(size)[None, :] < ops.arange(size)[:, None]  # [s, t]: t < s
    tied = ops.logical_and(scores[:, None, :] == scores[:, :, None], earlier[None])
    rank = ops.sum(higher + ops.cast(tied, "int32"), axis=-1)  # [B, N]
    return ops.one_hot(rank, size, dtype="float32")


def postprocess_panoptic_maskwise(
    pixel_space_mask_logits,
    transformer_class_logits,
    image_size,
    pixel_confidence_threshold,
    transformer_class_confidence_threshold_thing,
    transformer_class_confidence_threshold_stuff,
    overlapping_threshold,
    thing_area_limit,
    stuff_area_limit,
    reorder_class_weight=1.0,
    reorder_mask_weight=1.0,
    thing_class_ids=COCO_THING_CLASS_IDS,
    void_label=0,
    label_divisor=LABEL_DIVISOR,
):
    """deeplab2's 'maskwise' panoptic post-processing (kMaX-DeepLab), exactly.

    1. Per slot: class probabilities (softmax, "no object" dropped), `pred` =
       argmax, `conf` = max; mask score = mean probability (softmax over
       slots of the raw, stride-4 logits) over the pixels where it exceeds
       `pixel_confidence_threshold` (0 if none).
    2. Slots sorted by `conf ** reorder_class_weight * score **
       reorder_mask_weight`, descending, ties in slot order.
    3. Mask logits upsampled (bilinear, aligned corners) to `image_size`;
       binary mask = probability `> pixel_confidence_threshold`.
    4. In that order, a mask is pasted on the pixels not yet taken if its
       `conf` reaches the thing or stuff threshold (by `pred`) and it keeps
       more than `overlapping_threshold` of its pixels; they get id
       rank + 1 (rank among all slots).
    5. Area filters and panoptic ids as `postprocess_panoptic` (thing
       instance = rank + 1). Nothing above either class threshold: all void.

    Args:
        pixel_space_mask_logits: `[B, h, w, N]`.
        transformer_class_logits: `[B, N, K]` (last channel "no object").
        image_size: `(H, W)` to upsample to (the model's input size).
        The thresholds and weights: deeplab2's `maskwise_postprocessing`
        options (kMaX COCO: pixel 0.4, thing 0.7, stuff 0.5, overlap 0.8,
        area limits 400 / 6400 at 1281).

    Returns:
        dict of `[B, H, W]` maps: `panoptic_pred`, `semantic_pred` (from a
        pixelwise pass with every threshold 0), `instance_pred` (rank + 1
        of the pasted mask, 1 where none), `instance_scores` (max mask
        probability over all slots), `semantic_scores` (`conf` of the pasted
        mask, 0 elsewhere).

    Example:
    >>> out = model.predict(images)
    >>> maps = postprocess_panoptic_maskwise(out["pixel_space_mask_logits"],
    ...     out["transformer_class_logits"], (1281, 1281), 0.4, 0.7, 0.5, 0.8, 400, 6400)
    """
    mask_logits = ops.cast(ops.convert_to_tensor(pixel_space_mask_logits), "float32")
    class_logits = ops.cast(ops.convert_to_tensor(transformer_class_logits), "float32")
    num_slots, num_channels = class_logits.shape[1], class_logits.shape[2]
    class_ids = thing_stuff_class_ids(num_channels, thing_class_ids, void_label)
    num_things = len(tuple(thing_class_ids))
    class_ids = ops.convert_to_tensor(class_ids, dtype="int32")

    probs = ops.softmax(class_logits, axis=-1)[..., :-1]
    class_confidence = ops.max(probs, axis=-1)  # [B, N]
    class_pred = first_argmax(probs)  # [B, N]
    any_detected = ops.any(
        ops.logical_or(
            class_confidence >= transformer_class_confidence_threshold_thing,
            class_confidence >= transformer_class_confidence_threshold_stuff,
        ),
        axis=-1,
    )[:, None, None]

    # Mask scores at the logits' resolution.
    low_probs = ops.softmax(mask_logits, axis=-1)
    low_detected = ops.cast(low_probs > pixel_confidence_threshold, "float32")
    detected_count = ops.sum(low_detected, axis=(1, 2))
    mask_score = ops.sum(low_probs * low_detected, axis=(1, 2))
    mask_score = ops.where(detected_count > 0, mask_score / ops.maximum(detected_count, 1.0), 0.0)
    reorder_score = (class_confidence**reorder_class_weight) * (mask_score**reorder_mask_weight)
    order = _stable_descending_order(reorder_score)  # [B, slot, rank]

    def by_rank(values):  # [B, N] slot values -> [B, N] in sorted order (exact).
        return ops.einsum("bs,bsr->br", ops.cast(values, "float32"), order)

    sorted_confidence = by_rank(class_confidence)
    sorted_pred = ops.cast(by_rank(class_pred), "int32")
    threshold = ops.where(
        sorted_pred < num_things,
        transformer_class_confidence_threshold_thing,
        transformer_class_confidence_threshold_stuff,
    )
    sorted_confident = sorted_confidence >= threshold

    logits = resize_bilinear_align_corners(mask_logits, image_size)  # [B, H, W, N]
    probs_full = ops.softmax(logits, axis=-1)
    instance_scores = ops.max(probs_full, axis=-1)
    binary = ops.cast(probs_full > pixel_confidence_threshold, "float32")
    binary = ops.einsum("bhws,bsr->bhwr", binary, order)  # exact 0/1 in rank order
    mask_area = ops.sum(binary, axis=(1, 2))  # [B, rank]

    # Pasting is sequential: each mask keeps the pixels its predecessors left
    # free, and is kept if they are more than `overlapping_threshold` of it.
    free = ops.ones_like(instance_scores)  # [B, H, W]
    kept = []
    for rank in range(num_slots):
        new = binary[..., rank] * free
        keep = ops.logical_and(
            ops.sum(new, axis=(1, 2)) > mask_area[:, rank] * overlapping_threshold,
            sorted_confident[:, rank],
        )
        kept.append(keep)
        free = free - new * ops.cast(keep, "float32")[:, None, None]
    # A pixel shows the first kept mask (in rank order) that covers it.
    pasted = binary * ops.cast(ops.stack(kept, axis=1), "float32")[:, None, None, :]
    top_pasted = ops.max(pasted, axis=-1)
    covered = top_pasted > 0  # [B, H, W]
    mask_id = ops.where(covered, first_argmax(pasted, maximum=top_pasted), 0)
    semantic_scores = ops.where(covered, _gather(sorted_confidence, mask_id), 0.0)

    confident = ops.logical_and(covered, any_detected)
    panoptic = _filtered_panoptic(
        mask_id,
        confident,
        sorted_pred,
        class_ids,
        num_things,
        num_channels - 1,
        void_label,
        label_divisor,
        thing_area_limit,
        stuff_area_limit,
    )
    return {
        "panoptic_pred": panoptic,
        "semantic_pred": _semantic_pass(first_argmax(logits), class_pred, class_ids),
        "instance_pred": ops.where(any_detected, mask_id + 1, 1),
        "instance_scores": ops.where(any_detected, instance_scores, 0.0),
        "semantic_scores": ops.where(any_detected, semantic_scores, 0.0),
    }


def _filtered_panoptic(
    mask_id,
    confident,
    class_pred,
    class_ids,
    num_things,
    num_classes,
    void_label,
    label_divisor,
    thing_area_limit,
    stuff_area_limit,
):
    """deeplab2's merge of mask ids and classes into a panoptic map.

    `mask_id` `[B, H, W]` indexes the `[B, M]` per-mask `class_pred`
    (contiguous classes, things first); `confident` marks the assigned
    pixels. Thing segments (one per mask id) below `thing_area_limit` pixels
    and stuff segments (merged per class) below `stuff_area_limit` become
    void; `panoptic = semantic * label_divisor + instance`, instance = mask
    id + 1 for things, 0 for stuff.
    """
    num_slots = class_pred.shape[1]
    pixel_class = _gather(class_pred, mask_id)
    is_thing = pixel_class < num_things
    thing_mask = ops.logical_and(is_thing, confident)
    stuff_mask = ops.logical_and(ops.logical_not(is_thing), confident)
    semantic = _lookup(class_ids, pixel_class)

    # Area filters: pixels per slot for things, per class for stuff. A slot
    # has one class, so its confident pixels are all thing or all stuff.
    slot_area = count_by_index(mask_id, confident, num_slots)  # [B, N]
    slot_is_thing = class_pred < num_things
    thing_slot_area = ops.where(slot_is_thing, slot_area, 0.0)
    stuff_slot_area = ops.where(slot_is_thing, 0.0, slot_area)
    class_one_hot = ops.one_hot(class_pred, num_classes, dtype="float32")  # [B, N, K-1]
    stuff_class_area = ops.sum(stuff_slot_area[..., None] * class_one_hot, axis=1)
    stuff_area = _gather(stuff_class_area, pixel_class)
    thing_area = _gather(thing_slot_area, mask_id)
    thing_keep = ops.logical_and(thing_mask, thing_area > thing_area_limit - 0.5)
    stuff_keep = ops.logical_and(stuff_mask, stuff_area > stuff_area_limit - 0.5)

    kept = ops.logical_or(thing_keep, stuff_keep)
    semantic_kept = ops.where(kept, semantic, void_label)
    instance = ops.where(thing_keep, mask_id + 1, 0)
    return ops.cast(semantic_kept * label_divisor + instance, "int32")


# deeplab2's post-processors by its `transformer_post_processing` name
# (MaX-DeepLab: pixelwise, kMaX-DeepLab: maskwise).
POST_PROCESSORS = {"pixelwise": postprocess_panoptic, "maskwise": postprocess_panoptic_maskwise}


def check_post_processing_method(method):
    """Raises a ValueError naming the choices unless `method` is a key of
    `POST_PROCESSORS`."""
    if method not in POST_PROCESSORS:
        raise ValueError(
            f"Unknown post-processing method {method!r}; expected one of "
            f"{sorted(POST_PROCESSORS)}."
        )
