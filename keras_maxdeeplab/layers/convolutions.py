"""deeplab2's convolution wrappers: conv (+ BN) (+ ReLU) with deeplab2 padding.

Sub-layer names (`conv`, `batch_norm`, `depthwise`, `pointwise`, ...) follow the
attribute names deeplab2 checkpoints are keyed by, so weights map one to one.
"""

import keras
from keras import ops

from keras_maxdeeplab import backend_seam
from keras_maxdeeplab.layers.batch_norm import batch_normalization


def _batch_norm(dtype, gamma_initializer="ones"):
    return batch_normalization(gamma_initializer=gamma_initializer, dtype=dtype, name="batch_norm")


def _folded_batch_norm(kernel, batch_norm):
    """The kernel and bias of a convolution that returns `batch_norm`'s
    inference output of the convolution by `kernel` (`[..., filters]`):
    `kernel * scale` and `beta - moving_mean * scale`, with `scale = gamma /
    sqrt(moving_variance + epsilon)`. Differentiable in every variable: the
    gradients reach the kernel (and gamma and beta, where they train) as
    through the two steps, so a frozen batch norm's kernel still trains."""
    scale = batch_norm.gamma * ops.rsqrt(batch_norm.moving_variance + batch_norm.epsilon)
    return kernel * scale, batch_norm.beta - batch_norm.moving_mean * scale


def _runs_batch_norm_in_inference(batch_norm, training):
    # Keras' BatchNormalization uses the batch's statistics only when both hold.
    return not (training and batch_norm.trainable)


# Activations deeplab2's MaX-DeepLab (ReLU) and kMaX-DeepLab (GeLU) use.
ACTIVATIONS = (None, "relu", "gelu")


def check_activation(activation):
    """Raises a ValueError unless `activation` is one of `ACTIVATIONS`."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}.")
    return activation


def activate(x, activation):
    """Applies `activation` (None, "relu" or "gelu") to `x`.

    "gelu" is the exact, erf-based GeLU that deeplab2 uses
    (`tf.keras.activations.gelu(approximate=False)`); Keras' default tanh
    approximation moves kMaX-DeepLab's outputs by ~0.5 %.

    Example:
    >>> y = activate(x, "gelu")
    """
    if activation is None:
        return x
    if activation == "relu":
        return ops.relu(x)
    if activation == "gelu":
        return ops.gelu(x, approximate=False)
    raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}.")


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class ChannelsLastConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` (same weights, options and shapes) convolving
    through `backend_seam.conv`, which keeps PyTorch's convolutions in
    channels-last memory instead of copying to channels-first and back.

    Shapes: `[B, H, W, C] -> [B, H', W', filters]`, as `keras.layers.Conv2D`.

    Example:
    >>> y = ChannelsLastConv2D(64, 3, padding="same")(x)  # x [1, 65, 65, 32] -> [1, 65, 65, 64]
    """

    def convolution_op(self, inputs, kernel):
        return backend_seam.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
        )


def _symmetric_padding(kernel_size, atrous_rate):
    effective = kernel_size + (kernel_size - 1) * (atrous_rate - 1)
    begin = (effective - 1) // 2
    return begin, effective - 1 - begin


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class Conv2DSame(keras.layers.Layer):
    """Conv2D + optional BN + optional ReLU, padded like deeplab2.

    Stride 1 uses `'same'` padding. Stride > 1 pads `(k_eff - 1) // 2` zeros on
    each side and runs a `'valid'` conv, so a 3x3 stride-2 conv maps 641 -> 321
    and a 1x1 stride-2 conv samples pixels 0, 2, 4, ... (not Keras'
    bottom/right-padded `'same'`).

    Args:
        filters: int, output channels.
        kernel_size: int.
        strides: int.
        atrous_rate: int, dilation.
        use_bias: bool; must be False when `use_bn`.
        use_bn: bool, BN (momentum 0.99, epsilon 1e-3) after the conv.
        activation: None, "relu" or "gelu" (exact).
        bn_gamma_initializer: "ones", or "zeros" for the last BN of a branch.

    Shapes: `[B, H, W, C] -> [B, (H - 1) // strides + 1, ..., filters]`.

    Example:
    >>> y = Conv2DSame(64, 3, strides=2, use_bn=True, activation="relu")(x)
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        atrous_rate=1,
        use_bias=False,
        use_bn=True,
        activation=None,
        bn_gamma_initializer="ones",
        kernel_initializer="he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if use_bn and use_bias:
            raise ValueError("Conv2DSame: a convolution bias is redundant before batch norm.")
        check_activation(activation)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.atrous_rate = atrous_rate
        self.use_bias = use_bias
        self.use_bn = use_bn
        self.activation = activation
        self.bn_gamma_initializer = bn_gamma_initializer
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self._padding = None
        if strides > 1:
            self._padding = _symmetric_padding(kernel_size, atrous_rate)
        self.conv = ChannelsLastConv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same" if strides == 1 else "valid",
            dilation_rate=atrous_rate,
            use_bias=use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="conv",
        )
        self.batch_norm = _batch_norm(self.dtype_policy, bn_gamma_initializer) if use_bn else None

    def build(self, input_shape):
        shape = list(input_shape)
        if self._padding is not None:
            pad = sum(self._padding)
            shape = [shape[0], shape[1] + pad, shape[2] + pad, shape[3]]
        self.conv.build(shape)
        if self.batch_norm is not None:
            self.batch_norm.build(self.conv.compute_output_shape(shape))

    def call(self, inputs, training=None):
        x = inputs
        if self._padding is not None:
            x = ops.pad(x, [[0, 0], list(self._padding), list(self._padding), [0, 0]])
        if (
            self.batch_norm is not None
            and backend_seam.folds_batch_norm(x)
            and _runs_batch_norm_in_inference(self.batch_norm, training)
        ):
            kernel, bias = _folded_batch_norm(self.conv.kernel, self.batch_norm)
            x = backend_seam.conv(
                x,
                kernel,
                strides=self.conv.strides,
                padding=self.conv.padding,
                dilation_rate=self.conv.dilation_rate,
                bias=bias,
            )
            return activate(x, self.activation)
        x = self.conv(x)
        if self.batch_norm is not None:
            x = self.batch_norm(x, training=training)
        return activate(x, self.activation)

    def compute_output_shape(self, input_shape):
        def out(size):
            return None if size is None else (size - 1) // self.strides + 1

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "atrous_rate": self.atrous_rate,
                "use_bias": self.use_bias,
                "use_bn": self.use_bn,
                "activation": self.activation,
                "bn_gamma_initializer": self.bn_gamma_initializer,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class SeparableConv2DSame(keras.layers.Layer):
    """Depthwise KxK (+BN+act) then pointwise 1x1 (+BN+act), stride 1.

    deeplab2's `SeparableConv2DSame` with `use_bn=True` as the MaX-DeepLab
    heads and decoder use it: ReLU in MaX-DeepLab, (exact) GeLU in kMaX-DeepLab.

    Shapes: `[B, H, W, C] -> [B, H, W, filters]`.

    Example:
    >>> y = SeparableConv2DSame(256, 5)(x)
    """

    def __init__(self, filters, kernel_size, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.activation = check_activation(activation)
        self.depthwise = _DepthwiseConvBN(
            kernel_size, activation=activation, dtype=self.dtype_policy, name="depthwise"
        )
        self.pointwise = Conv2DSame(
            filters, 1, activation=activation, dtype=self.dtype_policy, name="pointwise"
        )

    def build(self, input_shape):
        self.depthwise.build(input_shape)
        self.pointwise.build(input_shape)

    def call(self, inputs, training=None):
        x = self.depthwise(inputs, training=training)
        return self.pointwise(x, training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "activation": self.activation,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class _DepthwiseConvBN(keras.layers.Layer):
    """Depthwise KxK 'same' conv + BN + act (deeplab2 `DepthwiseConv2DSame`)."""

    def __init__(self, kernel_size, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.activation = check_activation(activation)
        self.depthwise_conv = keras.layers.DepthwiseConv2D(
            kernel_size,
            padding="same",
            use_bias=False,
            dtype=self.dtype_policy,
            name="depthwise_conv",
        )
        self.batch_norm = _batch_norm(self.dtype_policy)

    def build(self, input_shape):
        self.depthwise_conv.build(input_shape)
        self.batch_norm.build(input_shape)

    def call(self, inputs, training=None):
        # The sub-layer holds the kernel (its checkpoint name); the seam runs
        # the convolution, fast on every engine.
        if backend_seam.folds_batch_norm(inputs) and _runs_batch_norm_in_inference(
            self.batch_norm, training
        ):
            # [kh, kw, C, 1]: the scale goes on the channel axis.
            kernel, bias = _folded_batch_norm(
                ops.swapaxes(self.depthwise_conv.kernel, 2, 3), self.batch_norm
            )
            x = backend_seam.depthwise_conv_same(inputs, ops.swapaxes(kernel, 2, 3), bias)
            return activate(x, self.activation)
        kernel = ops.cast(self.depthwise_conv.kernel, inputs.dtype)
        x = backend_seam.depthwise_conv_same(inputs, kernel)
        return activate(self.batch_norm(x, training=training), self.activation)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size, "activation": self.activation})
        return config


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class Conv1D(keras.layers.Layer):
    """deeplab2's 1x1 `Conv1D` (+ BN) (+ ReLU) on `[B, L, C]` sequences.

    The kernel keeps TF's Conv1D layout `[1, C_in, C_out]` (checkpoints load
    as they are) but runs as a matrix product.

    Args:
        filters: int, output channels.
        use_bias: bool; must be False when `use_bn`.
        use_bn: bool.
        activation: None, "relu" or "gelu" (exact).
        bn_gamma_initializer: "ones" or "zeros".
        kernel_initializer: initializer of the kernel.

    Shapes: `[B, L, C] -> [B, L, filters]`.

    Example:
    >>> y = Conv1D(256, activation="relu")(memory)  # memory: [B, 128, 256]
    """

    def __init__(
        self,
        filters,
        use_bias=False,
        use_bn=True,
        activation=None,
        bn_gamma_initializer="ones",
        kernel_initializer="he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if use_bn and use_bias:
            raise ValueError("Conv1D: a convolution bias is redundant before batch norm.")
        check_activation(activation)
        self.filters = filters
        self.use_bias = use_bias
        self.use_bn = use_bn
        self.activation = activation
        self.bn_gamma_initializer = bn_gamma_initializer
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.conv = _PointwiseKernel(
            filters, use_bias, self.kernel_initializer, dtype=self.dtype_policy, name="conv"
        )
        self.batch_norm = _batch_norm(self.dtype_policy, bn_gamma_initializer) if use_bn else None

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.batch_norm is not None:
            self.batch_norm.build((*input_shape[:-1], self.filters))

    def call(self, inputs, training=None):
        x = self.conv(inputs)
        if self.batch_norm is not None:
            x = self.batch_norm(x, training=training)
        return activate(x, self.activation)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "use_bias": self.use_bias,
                "use_bn": self.use_bn,
                "activation": self.activation,
                "bn_gamma_initializer": self.bn_gamma_initializer,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class _PointwiseKernel(keras.layers.Layer):
    """`x @ kernel[0] (+ bias)` with a `[1, C_in, C_out]` kernel."""

    def __init__(self, filters, use_bias, kernel_initializer, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(1, input_shape[-1], self.filters),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")

    def call(self, inputs):
        x = backend_seam.pointwise(inputs, ops.cast(self.kernel[0], self.compute_dtype))
        if self.bias is not None:
            x = x + ops.cast(self.bias, self.compute_dtype)
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
