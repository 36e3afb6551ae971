"""kMaX-DeepLab's training loss, as deeplab2 computes it.

The MaX-DeepLab loss (`MaXDeepLabLoss`) with two differences:
* instance discrimination is CMT-DeepLab's pixel-contrastive variant: k
  stride-4 pixels are drawn by Gumbel top-k with logits
  `log(P / area of the pixel's mask) * sample_temperature` (void pixels
  excluded); the target similarity of two sampled pixels is 1 when they share
  a ground-truth mask (rows normalised to sum 1), the predicted one their
  embeddings' dot product / temperature; softmax cross-entropy per sampled
  pixel, mean over the non-zero ones;
* the auxiliary predictions of the k-means blocks get their own PQ-style,
  mask-ID and instance-discrimination terms (`aux_<i><term>`), every weight
  and the matching taken from the final prediction.
"""

import numpy as np

import keras
from keras import ops

from keras_maxdeeplab.layers.resize import resize_bilinear_align_corners
from keras_maxdeeplab.losses.max_deeplab_loss import _SOFTMAX_MASKING_CONSTANT
from keras_maxdeeplab.losses.max_deeplab_loss import MaXDeepLabLoss
from keras_maxdeeplab.losses.max_deeplab_loss import _mean_of_non_zero
from keras_maxdeeplab.losses.max_deeplab_loss import _soft_cross_entropy

AUXILIARY_OUTPUTS = "auxiliary_outputs"
# The terms every prediction (final and auxiliary) gets.
PER_OUTPUT_TERMS = (
    "pq_style_loss_class_term",
    "pq_style_loss_mask_dice_term",
    "mask_id_cross_entropy_loss",
    "instance_discrimination_loss",
)


def _take_rows(values, indices):
    """`values[b, indices[b, k]]` for `[B, P, C]` values and `[B, k]` indices."""
    return ops.take_along_axis(values, ops.cast(indices, "int32")[:, :, None], axis=1)


class KMaXDeepLabLoss(MaXDeepLabLoss):
    """The kMaX-DeepLab loss (deeplab2's `MaXDeepLabLoss` with
    `instance_discrimination_sample_k > 0` and auxiliary outputs).

    Args:
        instance_discrimination_sample_k: pixels sampled per output (COCO: 4096;
            at most the stride-4 pixel count).
        instance_discrimination_sample_temperature: 1.5 (COCO); > 1 favours
            pixels of small masks.
        seed: optional int, the Gumbel sampling's seed.
        **kwargs: `MaXDeepLabLoss`'s arguments (weights, classes, ...).

    `y_pred` is the final prediction dict (as `MaXDeepLabLoss`), optionally
    with `auxiliary_outputs`: a list of dicts holding
    `pixel_space_mask_logits`, `pixel_space_normalized_feature` (any stride;
    resized to the final one with aligned corners, as deeplab2) and
    `transformer_class_logits`.

    Example:
    >>> loss = KMaXDeepLabLoss(instance_discrimination_sample_k=4096)
    >>> terms = loss.compute_terms(y_true, {**outputs, "auxiliary_outputs": auxiliary})
    >>> terms["aux_0pq_style_loss_class_term"]  # [B]
    """

    def __init__(
        self,
        instance_discrimination_sample_k=4096,
        instance_discrimination_sample_temperature=1.5,
        seed=None,
        name="kmax_deeplab_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if instance_discrimination_sample_k <= 0:
            raise ValueError(
                "instance_discrimination_sample_k must be positive; got "
                f"{instance_discrimination_sample_k}."
            )
        self.instance_discrimination_sample_k = instance_discrimination_sample_k
        self.instance_discrimination_sample_temperature = instance_discrimination_sample_temperature
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def sample_pixels(self, t):
        """Gumbel top-k pixel indices `[B, k]`, favouring small masks, never void."""
        pixels = t["mask_one_hot"].shape[1]
        area = ops.einsum("bpr,br->bp", t["mask_one_hot"], t["area"])
        logits = ops.log(pixels / ops.maximum(area, 1.0))
        logits = logits * self.instance_discrimination_sample_temperature
        logits = ops.where(t["non_void"] > 0, logits, _SOFTMAX_MASKING_CONSTANT)
        uniform = keras.random.uniform(
            ops.shape(logits),
            minval=float(np.finfo(np.float32).tiny),
            maxval=1.0,
            seed=self.seed_generator,
        )
        gumbel = -ops.log(-ops.log(uniform))
        _, indices = ops.top_k(logits + gumbel, self.instance_discrimination_sample_k)
        return ops.stop_gradient(indices)

    def _pixel_contrastive(self, feature, t, indices):
        ground_truth = _take_rows(t["mask_one_hot"], indices)  # [B, k, R]
        similarity = ops.einsum("bki,bji->bkj", ground_truth, ground_truth)
        similarity = similarity / ops.maximum(ops.sum(similarity, axis=-1, keepdims=True), 1.0)
        sampled = _take_rows(feature, indices)  # [B, k, D]
        logits = ops.einsum("bki,bji->bkj", sampled, sampled)
        logits = logits / self.instance_discrimination_temperature
        loss = _soft_cross_entropy(similarity, logits)
        return _mean_of_non_zero(loss) * self.instance_discrimination_loss_weight

    def compute_terms(self, y_true, y_pred, permutation=None, sample_indices=None):
        """Every loss term per sample, plus their sum `total_loss`.

        Args:
            y_true: the ground-truth dict (see `MaXDeepLabLoss`).
            y_pred: the final prediction dict, optionally with `auxiliary_outputs`.
            permutation: optional `[B, F, F]` matching to use instead of
                solving one; a test hook to replay deeplab2's assignment.
            sample_indices: optional list of `[B, k]` pixel indices, one per
                prediction (final first, then the auxiliary ones), used
                instead of drawing them; a test hook to replay deeplab2's draws.

        Returns:
            dict of `[B]` tensors keyed by deeplab2's term names
            (`aux_<i><term>` for auxiliary prediction i).
        """
        self._check(y_true, y_pred)
        feature = ops.cast(y_pred["pixel_space_normalized_feature"], "float32")
        _, height, width, _ = feature.shape
        batch = ops.shape(feature)[0]
        t = self._targets(y_true, height, width)
        predictions = [y_pred] + list(y_pred.get(AUXILIARY_OUTPUTS, ()))
        if sample_indices is not None and len(sample_indices) != len(predictions):
            raise ValueError(
                f"sample_indices needs one entry per prediction ({len(predictions)}); got "
                f"{len(sample_indices)}."
            )

        def flat(prediction, key):
            value = ops.cast(prediction[key], "float32")
            if key != "transformer_class_logits":
                value = resize_bilinear_align_corners(value, (height, width))
                value = ops.reshape(value, (batch, height * width, value.shape[-1]))
            return value

        mask_logits = flat(y_pred, "pixel_space_mask_logits")
        class_logits = flat(y_pred, "transformer_class_logits")
        matching = self.match(mask_logits, class_logits, t, permutation)
        terms = {}
        for index, prediction in enumerate(predictions):
            prefix = "" if index == 0 else f"aux_{index - 1}"
            indices = None if sample_indices is None else sample_indices[index]
            if indices is None:
                indices = self.sample_pixels(t)
            output_terms = self.matched_terms(
                flat(prediction, "pixel_space_mask_logits"),
                flat(prediction, "transformer_class_logits"),
                t,
                matching,
            )
            output_terms["instance_discrimination_loss"] = self._pixel_contrastive(
                flat(prediction, "pixel_space_normalized_feature"), t, indices
            )
            for key in PER_OUTPUT_TERMS:
                terms[prefix + key] = output_terms[key]
        return self._with_semantic_and_total(terms, y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "instance_discrimination_sample_k": self.instance_discrimination_sample_k,
                "instance_discrimination_sample_temperature": (
                    self.instance_discrimination_sample_temperature
                ),
                "seed": self.seed,
            }
        )
        return config
