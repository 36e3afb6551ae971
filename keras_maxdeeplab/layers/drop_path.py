"""Drop path (stochastic depth) with deeplab2's linear keep-probability schedule."""

import math

import keras
from keras import ops


def drop_path_keep_prob(keep_prob_for_last_stage, schedule, current_stride, beyond_stride):
    """Keep probability of a block running at `current_stride` (deeplab2 rule).

    `stage = log2(current_stride) - 1`; blocks below `beyond_stride` keep all
    paths. `'linear'` interpolates 1 -> `keep_prob_for_last_stage` over 4
    stages; `'constant'` uses it everywhere.

    Example:
    >>> drop_path_keep_prob(0.8, "linear", 16, 16)  # 0.85 (MaX-S stage 4)
    """
    if current_stride < beyond_stride:
        return 1.0
    stage = int(round(math.log2(current_stride) - 1))
    if schedule == "constant":
        return keep_prob_for_last_stage
    if schedule == "linear":
        return 1.0 - (1.0 - keep_prob_for_last_stage) * stage / 4
    raise ValueError(f"Unknown drop path schedule {schedule!r}; expected 'linear' or 'constant'.")


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class DropPath(keras.layers.Layer):
    """Drops a residual branch per sample in training, scaling kept ones by 1/keep.

    The mask is `floor(keep + U[0, 1)) / keep`, one draw per sample.

    Args:
        keep_prob: float in (0, 1].
        seed: optional int.

    Shapes: any `[B, ...]` tensor -> same shape.

    Example:
    >>> branch = DropPath(0.85)(branch, training=True)
    """

    def __init__(self, keep_prob=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"DropPath keep_prob must be in (0, 1]; got {keep_prob}.")
        self.keep_prob = keep_prob
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if keep_prob < 1.0 else None

    def call(self, inputs, training=None):
        if not training or self.keep_prob == 1.0:
            return inputs
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        noise = keras.random.uniform(shape, dtype=inputs.dtype, seed=self.seed_generator)
        mask = ops.floor(self.keep_prob + noise) / self.keep_prob
        return inputs * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"keep_prob": self.keep_prob, "seed": self.seed})
        return config
