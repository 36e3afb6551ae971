"""deeplab2's optimisation recipes: warm-up + poly decay, Adam with a 0.1x
learning rate on the pretrained backbone variables, and (kMaX-DeepLab) AdamW's
decoupled weight decay on kernels."""

import re

import keras
from keras import ops

from keras_maxdeeplab import backend_seam

# deeplab2 trains with a second, 0.1x-learning-rate Adam on encoder variables
# whose names contain none of these (the ImageNet-pretrained part).
NOT_PRETRAINED_NAME_PARTS = ("transformer", "extra", "memory_feature")
# deeplab2's AdamW decays convolution and dense kernels only (its
# `include_in_weight_decay=[r'.*(kernel|weight):0$']`, everything else excluded):
# not biases, batch-norm parameters, position embeddings or cluster centres.
# (TensorFlow's update step sees the backend variable, named "kernel:0".)
WEIGHT_DECAYED_NAME = re.compile(r"(kernel|weight)(:\d+)?$")


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class WarmUpPolynomialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then polynomial decay to 0 (deeplab2's schedule).

    `lr(step) = base * step / warmup_steps` while `step < warmup_steps`, else
    `base * (1 - min(step, decay_steps) / decay_steps) ** power` (the decay
    is evaluated at the absolute step, as deeplab2 does).

    Example:
    >>> schedule = WarmUpPolynomialDecay(1e-3, decay_steps=100_000)
    >>> float(schedule(5000))  # 1e-3 * (1 - 0.05) ** 0.9
    """

    def __init__(self, initial_learning_rate, decay_steps, warmup_steps=5000, power=0.9):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.warmup_steps = warmup_steps
        self.power = power

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.initial_learning_rate * step / max(self.warmup_steps, 1)
        progress = ops.minimum(step, float(self.decay_steps)) / float(self.decay_steps)
        decay = self.initial_learning_rate * ops.power(1.0 - progress, self.power)
        return ops.where(step < self.warmup_steps, warmup, decay)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "warmup_steps": self.warmup_steps,
            "power": self.power,
        }


def is_pretrained_backbone_variable(variable):
    """True for backbone variables deeplab2 initialises from ImageNet."""
    return not any(part in variable.path for part in NOT_PRETRAINED_NAME_PARTS)


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class MaXDeepLabAdam(keras.optimizers.Adam):
    """Adam whose learning rate is multiplied for a subset of variables, with
    deeplab2's optional decoupled weight decay (its `AdamWeightDecay`).

    deeplab2 runs two Adam optimizers; since Adam's step does not scale with
    the gradient, the multiplier must act on the learning rate. Variables
    listed through `set_multiplied_variables` (by path) use
    `learning_rate * learning_rate_multiplier`; the others the full rate.

    With `weight_decay_rate` (kMaX-DeepLab trains with 0.05), every kernel
    (a variable whose name ends in `kernel` or `weight`) first decays as
    deeplab2's AdamW does, `kernel -= rate * weight_decay_rate * kernel`,
    `rate` being that variable's (multiplied, not bias-corrected) learning
    rate; then Adam steps. This differs from Keras' `weight_decay=`, which
    decays every variable at the unmultiplied rate.

    Example:
    >>> optimizer = MaXDeepLabAdam(1e-3, learning_rate_multiplier=0.1)
    >>> optimizer.set_multiplied_variables(backbone_variables)
    >>> adamw = MaXDeepLabAdam(5e-4, weight_decay_rate=0.05)  # kMaX-DeepLab's
    """

    def __init__(
        self,
        learning_rate=1e-3,
        learning_rate_multiplier=0.1,
        multiplied_paths=(),
        weight_decay_rate=0.0,
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, **kwargs)
        if weight_decay_rate < 0:
            raise ValueError(f"weight_decay_rate must be >= 0; got {weight_decay_rate}.")
        self.learning_rate_multiplier = learning_rate_multiplier
        self.multiplied_paths = tuple(multiplied_paths)
        self.weight_decay_rate = weight_decay_rate

    def set_multiplied_variables(self, variables):
        self.multiplied_paths = tuple(v.path for v in variables)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        paths = set(self.multiplied_paths)
        groups = {True: ([], []), False: ([], [])}
        for grad, variable in zip(grads, trainable_variables):
            group = groups[variable.path in paths]
            group[0].append(grad)
            group[1].append(variable)
        for multiplied, (group_grads, group_variables) in groups.items():
            if group_variables:
                rate = (
                    learning_rate * self.learning_rate_multiplier if multiplied else learning_rate
                )
                decayed = [bool(WEIGHT_DECAYED_NAME.search(v.name)) for v in group_variables]
                if not backend_seam.adam_step_in_place(
                    self, group_grads, group_variables, rate, decayed, self.weight_decay_rate
                ):
                    super()._backend_update_step(group_grads, group_variables, rate)

    def update_step(self, gradient, variable, learning_rate):
        if self.weight_decay_rate and WEIGHT_DECAYED_NAME.search(variable.name):
            rate = ops.cast(learning_rate, variable.dtype) * self.weight_decay_rate
            self.assign_sub(variable, rate * variable)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "learning_rate_multiplier": self.learning_rate_multiplier,
                "multiplied_paths": list(self.multiplied_paths),
                "weight_decay_rate": self.weight_decay_rate,
            }
        )
        return config
