"""MaX-DeepLab's training loss, as deeplab2 computes it (spec section 5).

Terms, each per sample and already multiplied by its weight:
* `pq_style_loss_class_term`: focal-weighted (alpha 0.75 / 0.25) class
  cross-entropy of every slot; matched slots aim at their ground-truth class
  with weight `dice`, unmatched ones at "no object" with weight `void ratio`;
  mean over non-zero terms.
* `pq_style_loss_mask_dice_term`: dice loss of every ground-truth mask against
  its matched slot, weighted by the matched class probability, summed, times
  alpha / N.
* `mask_id_cross_entropy_loss`: per-pixel cross-entropy between the mask
  one-hot and the matched slots' logits.
* `instance_discrimination_loss`: contrastive loss of thing pixels' embeddings
  against every mask's mean embedding (temperature 0.3).
* `semantic_loss`: per-pixel softmax cross-entropy of the auxiliary semantic
  head.
Ground truth is strided-subsampled to the output resolution; matching outputs
carry no gradient.
"""

import numpy as np

import keras
from keras import ops

from keras_maxdeeplab.coco.categories import COCO_THING_CLASS_IDS
from keras_maxdeeplab.coco.categories import thing_stuff_class_ids
from keras_maxdeeplab.layers.heads import l2_normalize
from keras_maxdeeplab.losses.matching import hungarian_matching

_MATCHING_NEGATIVE_CONSTANT = -999.0
_MATCHING_POSITIVE_CONSTANT = 999.0
_SOFTMAX_MASKING_CONSTANT = -99999.0

TERMS = (
    "pq_style_loss_class_term",
    "pq_style_loss_mask_dice_term",
    "mask_id_cross_entropy_loss",
    "instance_discrimination_loss",
    "semantic_loss",
)
GROUND_TRUTH_KEYS = ("semantic_gt", "thing_id_mask_gt", "thing_id_class_gt", "semantic_loss_weight")


def _strided_downsample(x, size):
    """`x[:, ::s, ::s]` with s = (H - 1) / (h - 1), as deeplab2 subsamples targets."""
    height, width = x.shape[1], x.shape[2]
    if (height, width) == tuple(size):
        return x
    stride = (height - 1) // (size[0] - 1)
    if (height - 1) % (size[0] - 1) or (width - 1) != stride * (size[1] - 1):
        raise ValueError(
            f"Targets of size {height}x{width} cannot be strided down to {size[0]}x{size[1]}; "
            "expected (H - 1) to be a multiple of (h - 1)."
        )
    return x[:, ::stride, ::stride]


def _mean_of_non_zero(values):
    """deeplab2's "sum / number of non-zero entries" per sample (0 when none)."""
    values = ops.reshape(values, (ops.shape(values)[0], -1))
    count = ops.sum(ops.cast(values != 0.0, values.dtype), axis=1)
    total = ops.sum(values, axis=1)
    return ops.where(count > 0, total / ops.maximum(count, 1.0), 0.0)


def _soft_cross_entropy(labels, logits):
    """Softmax cross-entropy against (possibly all-zero) soft labels, last axis."""
    return -ops.sum(labels * ops.log_softmax(logits, axis=-1), axis=-1)


class MaXDeepLabLoss(keras.losses.Loss):
    """The MaX-DeepLab loss with Hungarian matching (deeplab2's `MaXDeepLabLoss`).

    Args:
        num_classes: semantic channels including void (134 for COCO).
        thing_class_ids: dataset ids of thing classes (COCO: 1..80).
        ignore_label: the void id (0).
        pq_style_loss_weight, mask_id_cross_entropy_loss_weight,
        instance_discrimination_loss_weight, semantic_loss_weight: deeplab2's
            COCO weights 3.0, 0.3, 1.0, 1.0.
        focal_loss_alpha: 0.75.
        instance_discrimination_temperature: 0.3.
        jit_compile: whether the loss runs under XLA (selects the
            `keras.ops` matcher on TensorFlow).

    `y_true` is a dict with deeplab2's keys: `semantic_gt` `[B, H, W]` int
    (0 = void), `thing_id_mask_gt` `[B, H, W]` int (-1 = no thing),
    `thing_id_class_gt` `[B, T]` (class of each thing id, -1 padding) and
    `semantic_loss_weight` `[B, H, W]`. `y_pred` is the `MaXDeepLab` output
    dict.

    Example:
    >>> loss = MaXDeepLabLoss()
    >>> terms = loss.compute_terms(y_true, model(images, training=True))
    >>> terms["total_loss"]  # [B]
    """

    def __init__(
        self,
        num_classes=134,
        thing_class_ids=COCO_THING_CLASS_IDS,
        ignore_label=0,
        pq_style_loss_weight=3.0,
        mask_id_cross_entropy_loss_weight=0.3,
        instance_discrimination_loss_weight=1.0,
        semantic_loss_weight=1.0,
        focal_loss_alpha=0.75,
        instance_discrimination_temperature=0.3,
        jit_compile=False,
        name="max_deeplab_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.num_classes = num_classes
        self.thing_class_ids = tuple(int(i) for i in thing_class_ids)
        self.ignore_label = ignore_label
        self.pq_style_loss_weight = pq_style_loss_weight
        self.mask_id_cross_entropy_loss_weight = mask_id_cross_entropy_loss_weight
        self.instance_discrimination_loss_weight = instance_discrimination_loss_weight
        self.semantic_loss_weight = semantic_loss_weight
        self.focal_loss_alpha = focal_loss_alpha
        self.instance_discrimination_temperature = instance_discrimination_temperature
        self.jit_compile = jit_compile
        ids = thing_stuff_class_ids(num_classes, self.thing_class_ids, ignore_label)
        self._thing_stuff_class_ids = ids
        self._stuff_class_ids = ids[len(self.thing_class_ids) :]

    # ------------------------------------------------------------------ targets
    def _check(self, y_true, y_pred):
        missing = [k for k in GROUND_TRUTH_KEYS if k not in y_true]
        if missing:
            raise ValueError(f"y_true lacks {missing}; expected keys {list(GROUND_TRUTH_KEYS)}.")
        channels = y_pred["transformer_class_logits"].shape[-1]
        if channels != self.num_classes:
            raise ValueError(
                f"The model predicts {channels} classes (incl. 'no object') but the loss was "
                f"built for num_classes={self.num_classes}."
            )
        semantic = y_true["semantic_gt"]
        if len(semantic.shape) != 3 or tuple(semantic.shape) != tuple(
            y_true["thing_id_mask_gt"].shape
        ):
            raise ValueError(
                f"semantic_gt and thing_id_mask_gt must both be [B, H, W]; got "
                f"{tuple(semantic.shape)} and {tuple(y_true['thing_id_mask_gt'].shape)}."
            )
        # Values can only be checked when they are concrete (not inside a compiled step).
        for key, high in (
            ("semantic_gt", self.num_classes - 1),
            ("thing_id_class_gt", self.num_classes - 1),
        ):
            value = y_true[key]
            if (
                isinstance(value, np.ndarray)
                and value.size
                and (value.max() > high or value.min() < -1)
            ):
                raise ValueError(
                    f"{key} has ids out of range [{-1 if key == 'thing_id_class_gt' else 0}, {high}]: "
                    f"min {value.min()}, max {value.max()}."
                )

    def _targets(self, y_true, height, width):
        size = (height, width)
        pixels = height * width
        semantic = ops.cast(_strided_downsample(y_true["semantic_gt"], size), "int32")
        batch = ops.shape(semantic)[0]
        semantic = ops.reshape(semantic, (batch, pixels))
        non_void = ops.cast(semantic != self.ignore_label, "float32")
        stuff_ids = ops.convert_to_tensor(self._stuff_class_ids, "int32")
        stuff_one_hot = ops.cast(semantic[:, :, None] == stuff_ids, "float32")
        thing_id = ops.cast(_strided_downsample(y_true["thing_id_mask_gt"], size), "int32")
        thing_id = ops.reshape(thing_id, (batch, pixels))
        thing_mask = ops.cast(thing_id != -1, "float32")
        thing_classes = ops.cast(y_true["thing_id_class_gt"], "int32")
        max_thing_id = thing_classes.shape[-1]
        thing_one_hot = ops.cast(
            thing_id[:, :, None] == ops.arange(max_thing_id, dtype="int32"), "float32"
        )
        mask_one_hot = ops.concatenate([thing_one_hot, stuff_one_hot], axis=-1)  # [B, P, R]
        area = ops.sum(mask_one_hot, axis=1)  # [B, R]
        mask_semantic = ops.concatenate(
            [thing_classes, ops.broadcast_to(stuff_ids[None], (batch, len(self._stuff_class_ids)))],
            axis=-1,
        )
        # Masks with no pixel at the output resolution become void (-1).
        mask_semantic = ops.where(area > 0.5, mask_semantic, -1)
        class_ids = ops.convert_to_tensor(self._thing_stuff_class_ids, "int32")
        mask_class_one_hot = ops.cast(mask_semantic[:, :, None] == class_ids, "float32")
        mask_non_void = ops.cast(mask_semantic > -1, "float32")
        return dict(
            non_void=non_void,
            thing_mask=thing_mask,
            mask_one_hot=mask_one_hot,
            area=area,
            mask_class_one_hot=mask_class_one_hot,
            mask_non_void=mask_non_void,
        )

    # ------------------------------------------------------------------ terms
    def _instance_discrimination(self, feature, t):
        mean_feature = ops.einsum("bpd,bpi->bid", feature, t["mask_one_hot"])
        mean_feature = l2_normalize(mean_feature / ops.maximum(t["area"], 1.0)[:, :, None])
        logits = ops.einsum("bpd,bid->bpi", feature, mean_feature)
        logits = logits / self.instance_discrimination_temperature
        valid = t["mask_non_void"][:, None, :]
        logits = valid * logits + (1.0 - valid) * _SOFTMAX_MASKING_CONSTANT
        loss = _soft_cross_entropy(t["mask_one_hot"], logits) * t["thing_mask"]
        return _mean_of_non_zero(loss) * self.instance_discrimination_loss_weight

    def _semantic(self, logits, y_true):
        size = logits.shape[1:3]
        labels = ops.cast(_strided_downsample(y_true["semantic_gt"], size), "int32")
        weights = ops.cast(_strided_downsample(y_true["semantic_loss_weight"], size), "float32")
        weights = weights * ops.cast(labels != self.ignore_label, "float32")
        one_hot = ops.one_hot(ops.clip(labels, 0, self.num_classes - 1), self.num_classes)
        loss = _soft_cross_entropy(one_hot, logits) * weights
        return _mean_of_non_zero(loss) * self.semantic_loss_weight

    def matching_costs(self, mask_probs, class_logits, t):
        """Hungarian costs `-dice * p(class)` `[B, R, N]` and the two similarities."""
        mask_probs = ops.convert_to_tensor(mask_probs, "float32")
        class_logits = ops.convert_to_tensor(class_logits, "float32")
        masked_probs = mask_probs * t["non_void"][:, :, None]
        intersection = ops.einsum("bpi,bpj->bij", t["mask_one_hot"], masked_probs)
        denominator = (t["area"][:, :, None] + ops.sum(masked_probs, axis=1)[:, None, :]) / 2.0
        dice = intersection / (denominator + 1e-5)
        class_probs = ops.softmax(class_logits, axis=-1)[:, :, :-1]
        class_similarity = ops.einsum("bij,bkj->bik", t["mask_class_one_hot"], class_probs)
        costs = -dice * class_similarity
        num_masks, num_slots = costs.shape[1], costs.shape[2]
        fill = (
            _MATCHING_NEGATIVE_CONSTANT if num_slots >= num_masks else _MATCHING_POSITIVE_CONSTANT
        )
        valid = t["mask_non_void"][:, :, None]
        costs = costs * valid + (1.0 - valid) * fill
        return costs, dice, class_similarity

    def compute_terms(self, y_true, y_pred, permutation=None):
        """Every loss term per sample, plus their sum `total_loss`.

        Args:
            y_true: the ground-truth dict (see the class docstring).
            y_pred: the model's output dict.
            permutation: optional `[B, F, F]` matching to use instead of
                solving one (F = max(masks, slots)); a test hook to replay
                deeplab2's own assignment.

        Returns:
            dict of `[B]` tensors keyed by deeplab2's term names.
        """
        self._check(y_true, y_pred)
        feature = ops.cast(y_pred["pixel_space_normalized_feature"], "float32")
        _, height, width, depth = feature.shape
        pixels = height * width
        batch = ops.shape(feature)[0]
        feature = ops.reshape(feature, (batch, pixels, depth))
        t = self._targets(y_true, height, width)
        mask_logits = ops.cast(y_pred["pixel_space_mask_logits"], "float32")
        num_slots = mask_logits.shape[-1]
        mask_logits = ops.reshape(mask_logits, (batch, pixels, num_slots))
        class_logits = ops.cast(y_pred["transformer_class_logits"], "float32")

        terms = {"instance_discrimination_loss": self._instance_discrimination(feature, t)}
        matching = self.match(mask_logits, class_logits, t, permutation)
        terms.update(self.matched_terms(mask_logits, class_logits, t, matching))

        return self._with_semantic_and_total(terms, y_true, y_pred)

    def _with_semantic_and_total(self, terms, y_true, y_pred):
        """`terms` plus the semantic loss (once, on the final output) and `total_loss`."""
        if "semantic_logits" in y_pred and self.semantic_loss_weight:
            terms["semantic_loss"] = self._semantic(
                ops.cast(y_pred["semantic_logits"], "float32"), y_true
            )
        total = 0.0
        for value in terms.values():
            total = total + value
        terms["total_loss"] = total
        return terms

    def match(self, mask_logits, class_logits, t, permutation=None):
        """The Hungarian matching of `[B, P, N]` mask logits and `[B, N, K]` class
        logits to the targets `t`, and every loss weight that depends on it.

        Returns a dict: `permutation` `[B, F, F]`, the padded targets and the
        (gradient-free) weights of the dice, mask-ID and class terms, which
        `matched_terms` applies to these or to other (auxiliary) logits.
        """
        num_slots = mask_logits.shape[-1]
        num_masks = t["mask_one_hot"].shape[-1]
        full = max(num_masks, num_slots)
        mask_probs = ops.softmax(mask_logits, axis=-1)
        costs, dice, class_similarity = self.matching_costs(mask_probs, class_logits, t)
        if permutation is None:
            padded = ops.pad(
                ops.stop_gradient(costs),
                [[0, 0], [0, full - num_masks], [0, full - num_slots]],
                constant_values=_MATCHING_NEGATIVE_CONSTANT,
            )
            permutation = hungarian_matching(padded, jit_compile=self.jit_compile)
        permutation = ops.stop_gradient(ops.cast(permutation, "float32"))
        matched = permutation[:, :num_masks, :num_slots] * t["mask_non_void"][:, :, None]
        matched_dice = ops.stop_gradient(ops.max(dice * matched, axis=-2))  # [B, N]
        matched_class_prob = ops.stop_gradient(ops.max(class_similarity * matched, axis=-1))
        matched_slot = ops.argmax(permutation[:, :num_masks, :num_slots], axis=-1)  # [B, R]

        full_one_hot = ops.pad(t["mask_one_hot"], [[0, 0], [0, 0], [0, full - num_masks]])
        dice_weight = ops.pad(t["mask_non_void"], [[0, 0], [0, full - num_masks]])
        dice_weight = dice_weight * ops.maximum(
            ops.pad(matched_class_prob, [[0, 0], [0, full - num_masks]]), 1e-5
        )

        # PQ-style class term. deeplab2 scatter-adds every mask's class onto its
        # slot, so a slot that received two masks is not a positive.
        slot_one_hot = ops.one_hot(matched_slot, num_slots, dtype="float32")  # [B, R, N]
        slot_class = ops.einsum("brn,brk->bnk", slot_one_hot, t["mask_class_one_hot"])
        positive = ops.cast(ops.max(slot_class, axis=-1) == 1.0, "float32")
        negative = 1.0 - positive
        void = 1.0 - t["non_void"]
        void_ratio = ops.stop_gradient(
            ops.einsum("bp,bpj->bj", void, mask_probs) / (ops.sum(mask_probs, axis=1) + 1e-5)
        )
        class_weight = positive * ops.maximum(matched_dice, 1e-5) + negative * ops.maximum(
            void_ratio, 1e-5
        )
        class_target = ops.concatenate([slot_class, negative[:, :, None]], axis=-1)
        return {
            "permutation": permutation,
            "full_one_hot": full_one_hot,
            "dice_weight": dice_weight,
            "class_weight": class_weight,
            "class_target": class_target,
        }

    def matched_terms(self, mask_logits, class_logits, t, matching):
        """The PQ-style dice and class terms and the mask-ID cross-entropy of
        `[B, P, N]` mask logits and `[B, N, K]` class logits under `matching`
        (`match`'s result, possibly of another output's logits)."""
        num_slots = mask_logits.shape[-1]
        permutation, full_one_hot = matching["permutation"], matching["full_one_hot"]
        full = permutation.shape[-1]
        terms = {}
        # Column j of the permuted logits holds the slot matched to mask j.
        full_logits = ops.pad(
            mask_logits,
            [[0, 0], [0, 0], [0, full - num_slots]],
            constant_values=_SOFTMAX_MASKING_CONSTANT,
        )
        permuted_logits = ops.einsum("bpi,bji->bpj", full_logits, permutation)

        # PQ-style mask term: dice over pixels that belong to some mask (+1 smoothing).
        probs = ops.softmax(permuted_logits, axis=-1)
        probs = probs * ops.sum(full_one_hot, axis=-1, keepdims=True)
        intersection = 2.0 * ops.sum(probs * full_one_hot, axis=1) + 1.0
        denominator = ops.sum(probs, axis=1) + ops.sum(full_one_hot, axis=1) + 1.0
        dice_loss = 1.0 - intersection / denominator
        terms["pq_style_loss_mask_dice_term"] = ops.sum(
            dice_loss * matching["dice_weight"], axis=-1
        ) * (self.pq_style_loss_weight * self.focal_loss_alpha / num_slots)

        mask_id_loss = _soft_cross_entropy(full_one_hot, permuted_logits) * t["non_void"]
        terms["mask_id_cross_entropy_loss"] = (
            _mean_of_non_zero(mask_id_loss) * self.mask_id_cross_entropy_loss_weight
        )

        target = matching["class_target"]
        alpha = (
            self.focal_loss_alpha * (1.0 - target[..., -1])
            + (1.0 - self.focal_loss_alpha) * target[..., -1]
        )
        class_loss = alpha * _soft_cross_entropy(target, class_logits) * matching["class_weight"]
        terms["pq_style_loss_class_term"] = (
            _mean_of_non_zero(class_loss) * self.pq_style_loss_weight
        )
        return terms

    def call(self, y_true, y_pred):
        return self.compute_terms(y_true, y_pred)["total_loss"]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "thing_class_ids": self.thing_class_ids,
                "ignore_label": self.ignore_label,
                "pq_style_loss_weight": self.pq_style_loss_weight,
                "mask_id_cross_entropy_loss_weight": self.mask_id_cross_entropy_loss_weight,
                "instance_discrimination_loss_weight": self.instance_discrimination_loss_weight,
                "semantic_loss_weight": self.semantic_loss_weight,
                "focal_loss_alpha": self.focal_loss_alpha,
                "instance_discrimination_temperature": self.instance_discrimination_temperature,
                "jit_compile": self.jit_compile,
            }
        )
        return config
