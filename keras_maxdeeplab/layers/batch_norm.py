"""deeplab2's batch normalisation: synchronised across replicas in training,
statistics in float32.

deeplab2 trains with `SyncBatchNormalization`: the statistics are those of the
global batch whatever the number of replicas. `batch_normalization` builds
Keras' layer that way (as `BatchNormalization`, whose training runs on
PyTorch's gradient kernel or JAX's block-by-block sums there);
`MultiAxisBatchNormalization` does the same for parameters spanning several
axes. Keras 3's `BatchNormalization` normalises one axis. deeplab2 normalises
stacked attention terms per (term, head) or (term, head, channel), and stores the
parameters in broadcast shape (e.g. `[3, 1, 8, 1, 1]`). This layer keeps that
exact parameter shape, so checkpoints load without reshaping.

Both compute the statistics and the normalisation in float32 under mixed
precision (a bfloat16 variance of un-normalised activations loses most of its
digits, and float16 overflows), and return the compute dtype.
"""

import keras
from keras import ops

from keras_maxdeeplab import backend_seam


def batch_normalization(axis=-1, gamma_initializer="ones", dtype=None, name=None):
    """Keras' `BatchNormalization` with deeplab2's settings: momentum 0.99,
    epsilon 1e-3, and statistics of the global batch when training on several
    replicas (`backend_seam.synchronized_batch_norm`, decided when the layer is
    built: inside a `tf.distribute` strategy scope on TensorFlow).

    Shapes: any input; output the same shape.

    Example:
    >>> bn = batch_normalization(name="batch_norm")
    >>> y = bn(keras.random.normal((2, 5, 5, 8)), training=True)
    """
    return BatchNormalization(
        axis=axis,
        momentum=0.99,
        epsilon=1e-3,
        gamma_initializer=gamma_initializer,
        synchronized=backend_seam.synchronized_batch_norm(),
        dtype=dtype,
        name=name,
    )


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' `BatchNormalization` whose training runs as
    `backend_seam.batch_norm_training` where the engine runs Keras' formula
    slowly (`backend_seam.runs_batch_norm_training`: PyTorch's batch-norm
    gradient kernel, with outputs, statistics and moving averages Keras' bit
    for bit; JAX's sums over large maps block by block, Keras' values up to
    float rounding); everything else is Keras' own.

    Shapes: any input; output the same shape.

    Example:
    >>> bn = BatchNormalization(momentum=0.99, epsilon=1e-3)
    >>> y = bn(keras.random.normal((2, 5, 5, 8)), training=True)
    """

    def call(self, inputs, training=None, mask=None):
        if not (
            training
            and self.trainable
            and mask is None
            and self.center
            and self.scale
            and not (self.renorm or self.synchronized)
            and self.compute_dtype == "float32"
            and backend_seam.runs_batch_norm_training(inputs, self.axis)
        ):
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = backend_seam.batch_norm_training(
            inputs, self.gamma, self.beta, self.axis, self.epsilon
        )
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            moving.assign(moving * self.momentum + batch * (1.0 - self.momentum))
        return outputs


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class MultiAxisBatchNormalization(keras.layers.Layer):
    """Batch normalisation whose parameters span several axes.

    Statistics are reduced over every axis *not* listed in `axis`; the
    parameters have the input's rank with size 1 on the reduced axes.
    Momentum 0.99 and epsilon 1e-3 as in deeplab2. In training on several
    replicas the statistics are the global batch's, as `batch_normalization`.

    Args:
        axis: list of int, the axes that keep their own parameters.
        momentum: float, moving-average momentum.
        epsilon: float, added to the variance.

    Shapes:
        input: any rank-R tensor; output: same shape.

    Example:
    >>> bn = MultiAxisBatchNormalization(axis=[0, 2])
    >>> y = bn(keras.random.normal((3, 2, 8, 5, 5)))  # gamma shape [3,1,8,1,1]
    """

    def __init__(self, axis, momentum=0.99, epsilon=1e-3, gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.axis = [int(a) for a in axis]
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        # A property of where the layer runs, not of the architecture: not in the config.
        self.synchronized = backend_seam.synchronized_batch_norm()

    def build(self, input_shape):
        rank = len(input_shape)
        self._axis = sorted(a % rank for a in self.axis)
        if any(input_shape[a] is None for a in self._axis):
            raise ValueError(
                f"MultiAxisBatchNormalization needs static sizes on axes {self.axis}; "
                f"got input shape {input_shape}."
            )
        shape = [input_shape[a] if a in self._axis else 1 for a in range(rank)]
        self._reduction_axes = [a for a in range(rank) if a not in self._axis]
        self.gamma = self.add_weight(shape=shape, name="gamma", initializer=self.gamma_initializer)
        self.beta = self.add_weight(shape=shape, name="beta", initializer="zeros")
        self.moving_mean = self.add_weight(
            shape=shape, name="moving_mean", initializer="zeros", trainable=False
        )
        self.moving_variance = self.add_weight(
            shape=shape, name="moving_variance", initializer="ones", trainable=False
        )

    def call(self, inputs, training=None):
        # Statistics in float32 even under mixed precision, as keras' own BN.
        x = ops.cast(inputs, "float32")
        if training:
            mean, variance = ops.moments(
                x, axes=self._reduction_axes, keepdims=True, synchronized=self.synchronized
            )
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(
                    ops.cast(moving, "float32") * self.momentum + batch * (1.0 - self.momentum)
                )
        else:
            mean = ops.cast(self.moving_mean, "float32")
            variance = ops.cast(self.moving_variance, "float32")
        # Variables may be autocast to the compute dtype inside call: read as float32.
        inv = ops.rsqrt(variance + self.epsilon) * ops.cast(self.gamma, "float32")
        outputs = x * inv + (ops.cast(self.beta, "float32") - mean * inv)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "axis": self.axis,
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
            }
        )
        return config
