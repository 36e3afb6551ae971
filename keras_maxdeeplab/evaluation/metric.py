"""A streaming panoptic-quality metric for `evaluate` and custom loops."""

import functools

import numpy as np

import keras
from keras import ops

from keras_maxdeeplab import backend_seam
from keras_maxdeeplab.coco.categories import COCO_THING_CLASS_IDS
from keras_maxdeeplab.coco.categories import LABEL_DIVISOR
from keras_maxdeeplab.coco.categories import prediction_label_divisor
from keras_maxdeeplab.evaluation.panoptic_quality import PQStat
from keras_maxdeeplab.postprocessing.panoptic import POST_PROCESSORS
from keras_maxdeeplab.postprocessing.panoptic import check_post_processing_method

_STATS = ("iou", "tp", "fp", "fn")


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class PanopticQuality(keras.metrics.Metric):
    """Streaming PQ over `semantic * label_divisor + instance` label maps.

    Accumulates, per class, the IoU sum and TP/FP/FN counts of every batch
    (computed on the host with `PQStat.add_label_maps`, the official COCO
    rules by default or deeplab2's with `rules="deeplab2"`); `result()` is
    the PQ averaged over classes seen so far (TP + FP + FN > 0), and
    `results()` gives PQ/SQ/RQ for All/Things/Stuff and per class.

    `update_state(y_true, y_pred)`: `y_true` is a dict with `panoptic_gt`
    `[B, H, W]` (and optionally `is_crowd_gt`), or the map itself; `y_pred`
    is a panoptic map `[B, H, W]` or a model's output dict, which is
    post-processed at the size of `panoptic_gt` by deeplab2's `method`.

    Args:
        num_classes: classes including void (134 for COCO).
        thing_class_ids: ids of thing classes.
        label_divisor: 256 (deeplab2's COCO maps).
        rules: `"coco"` or `"deeplab2"`.
        postprocess_options: keyword arguments of the post-processor
            (thresholds, area limits) for output dicts; for `"pixelwise"`,
            deeplab2's defaults where left out; `"maskwise"` needs them all.
        method: the post-processor of output dicts: `"pixelwise"`
            (`postprocess_panoptic`, MaX-DeepLab) or `"maskwise"`
            (`postprocess_panoptic_maskwise`, kMaX-DeepLab).
            `model.panoptic_quality()` sets it and the options for a model.

    Example:
    >>> metric = PanopticQuality()
    >>> metric.update_state({"panoptic_gt": gt}, model.predict(images))
    >>> float(metric.result()), metric.results()["Things"]["pq"]
    """

    def __init__(
        self,
        num_classes=134,
        thing_class_ids=COCO_THING_CLASS_IDS,
        label_divisor=LABEL_DIVISOR,
        rules="coco",
        void_label=0,
        postprocess_options=None,
        method="pixelwise",
        name="panoptic_quality",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if rules not in ("coco", "deeplab2"):
            raise ValueError(f"rules must be 'coco' or 'deeplab2'; got {rules!r}.")
        check_post_processing_method(method)
        self.method = method
        self.num_classes = num_classes
        self.thing_class_ids = tuple(int(i) for i in thing_class_ids)
        self.label_divisor = label_divisor
        self.rules = rules
        self.void_label = void_label
        self.postprocess_options = dict(postprocess_options or {})
        self.stats = self.add_variable(
            shape=(len(_STATS), num_classes), initializer="zeros", name="stats", dtype="float32"
        )

    def _batch_stats(self, gt, pred, crowd, pred_label_divisor):
        stat = PQStat().add_label_maps(
            gt,
            pred,
            label_divisor=self.label_divisor,
            gt_is_crowd=crowd,
            void_label=self.void_label,
            rules=self.rules,
            pred_label_divisor=pred_label_divisor,
        )
        table = np.zeros((len(_STATS), self.num_classes), np.float32)
        for row, name in enumerate(_STATS):
            for category, value in getattr(stat, name).items():
                if not 0 <= category < self.num_classes:
                    raise ValueError(
                        f"Class {category} is outside [0, {self.num_classes}) (label_divisor "
                        f"{self.label_divisor})."
                    )
                table[row, category] = value
        return table

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("PanopticQuality does not take sample weights.")
        crowd = None
        if isinstance(y_true, dict):
            crowd = y_true.get("is_crowd_gt")
            y_true = y_true["panoptic_gt"]
        gt = ops.cast(y_true, "int32")
        pred_label_divisor = self.label_divisor
        if isinstance(y_pred, dict):
            pred_label_divisor = prediction_label_divisor(
                y_pred["transformer_class_logits"].shape[1], self.label_divisor
            )
            y_pred = POST_PROCESSORS[self.method](
                y_pred["pixel_space_mask_logits"],
                y_pred["transformer_class_logits"],
                tuple(gt.shape[1:3]),
                thing_class_ids=self.thing_class_ids,
                void_label=self.void_label,
                label_divisor=pred_label_divisor,
                **self.postprocess_options,
            )["panoptic_pred"]
        pred = ops.cast(y_pred, "int32")
        crowd = ops.zeros_like(gt, "bool") if crowd is None else ops.cast(crowd, "bool")
        table = backend_seam.host_call(
            functools.partial(self._batch_stats, pred_label_divisor=pred_label_divisor),
            [gt, pred, crowd],
            self.stats.shape,
            "float32",
        )
        self.stats.assign_add(table)

    def result(self):
        iou, tp, fp, fn = (self.stats[i] for i in range(len(_STATS)))
        counted = (tp + fp + fn) > 0
        pq = ops.where(counted, iou / ops.maximum(tp + 0.5 * fp + 0.5 * fn, 1e-9), 0.0)
        return ops.sum(pq) / ops.maximum(ops.sum(ops.cast(counted, "float32")), 1.0)

    def results(self):
        """PQ/SQ/RQ for All/Things/Stuff and per class, like `pq_compute`."""
        table = ops.convert_to_numpy(self.stats)
        stat = PQStat()
        for row, name in enumerate(_STATS):
            for category in np.nonzero(table[row])[0].tolist():
                value = float(table[row, category])
                getattr(stat, name)[category] = value if name == "iou" else int(round(value))
        categories = {
            c: {"isthing": int(c in self.thing_class_ids)}
            for c in range(self.num_classes)
            if c != self.void_label
        }
        return stat.summary(categories)

    def reset_state(self):
        self.stats.assign(ops.zeros(self.stats.shape, "float32"))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "thing_class_ids": self.thing_class_ids,
                "label_divisor": self.label_divisor,
                "rules": self.rules,
                "void_label": self.void_label,
                "postprocess_options": self.postprocess_options,
                "method": self.method,
            }
        )
        return config
