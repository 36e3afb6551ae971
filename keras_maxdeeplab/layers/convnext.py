"""ConvNeXt layers as deeplab2 builds them for kMaX-DeepLab's pixel encoder.

deeplab2's `pixel_encoder/convnext.py` (a translation of the official
ConvNeXt) with `zero_padding_for_downstream=True`, the only way kMaX uses it:
every downsampling pads the bottom/right (and the stem also the top/left) so
that sizes of the form 32k + 1 keep deeplab2's align-corners grid
(1281 -> 321 -> 161 -> 81 -> 41, as ResNet-50's strided convolutions).
"""

import keras
from keras import ops

from keras_maxdeeplab import backend_seam
from keras_maxdeeplab.layers.convolutions import ChannelsLastConv2D
from keras_maxdeeplab.layers.convolutions import activate
from keras_maxdeeplab.layers.drop_path import DropPath

LAYER_NORM_EPSILON = 1e-6


def _truncated_normal():
    # deeplab2's ConvNeXt initialiser for every convolution and dense kernel.
    return keras.initializers.TruncatedNormal(stddev=0.02)


def _layer_norm(dtype, name):
    return keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, dtype=dtype, name=name)


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class ConvNeXtDownsampling(keras.layers.Layer):
    """A ConvNeXt downsampling layer: the stem (4x4/4 conv, then LayerNorm) or
    a stage transition (LayerNorm, then 2x2/2 conv).

    Zero padding comes first, as deeplab2's `zero_padding_for_downstream`:
    the stem pads 1 pixel top/left and 2 bottom/right, a transition 1
    bottom/right. A transition normalises the padded map, so its padding
    pixels enter the convolution as the LayerNorm's beta, not as zeros.

    Args:
        filters: int, output channels.
        stem: bool, the stem (True) or a stage transition.

    Shapes: `[B, H, W, C] -> [B, (H + 3) / 4, (W + 3) / 4, filters]` (stem,
    H = 4k + 1) or `[B, (H + 1) / 2, (W + 1) / 2, filters]` (transition).

    Example:
    >>> ConvNeXtDownsampling(96, stem=True)(images).shape  # images [1, 65, 65, 3]
    (1, 17, 17, 96)
    """

    def __init__(self, filters, stem=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.stem = stem
        stride = 4 if stem else 2
        self.conv = ChannelsLastConv2D(
            filters,
            stride,
            strides=stride,
            kernel_initializer=_truncated_normal(),
            dtype=self.dtype_policy,
            name="conv",
        )
        self.norm = _layer_norm(self.dtype_policy, "norm")
        self._padding = ((1, 2), (1, 2)) if stem else ((0, 1), (0, 1))

    def _padded_shape(self, input_shape):
        batch, height, width, channels = input_shape
        (top, bottom), (left, right) = self._padding
        height = None if height is None else height + top + bottom
        width = None if width is None else width + left + right
        return (batch, height, width, channels)

    def build(self, input_shape):
        padded = self._padded_shape(input_shape)
        self.conv.build(padded)
        if self.stem:
            self.norm.build(self.conv.compute_output_shape(padded))
        else:
            self.norm.build(padded)

    def call(self, inputs):
        x = ops.pad(inputs, ((0, 0), *self._padding, (0, 0)))
        if self.stem:
            return self.norm(self.conv(x))
        return self.conv(self.norm(x))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(self._padded_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "stem": self.stem})
        return config


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class ConvNeXtBlock(keras.layers.Layer):
    """A ConvNeXt block: `x + drop_path(layer_scale * MLP(LN(dwconv7x7(x))))`.

    The 7x7 depthwise convolution keeps deeplab2's grouped-`Conv2D` kernel
    `[7, 7, 1, C]` (checkpoints load as they are) and runs through
    `backend_seam.depthwise_conv_same`. The MLP is Dense(4C), exact GeLU,
    Dense(C); `layer_scale` `[1, 1, 1, C]` starts at 1e-6.

    Args:
        filters: int, channels C.
        drop_path_keep_prob: float in (0, 1]; 1.0: no drop path.

    Shapes: `[B, H, W, C] -> [B, H, W, C]`.

    Example:
    >>> y = ConvNeXtBlock(96)(x)  # x [1, 321, 321, 96]
    """

    def __init__(self, filters, drop_path_keep_prob=1.0, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.drop_path_keep_prob = drop_path_keep_prob
        # Holds the grouped kernel and its bias; the seam runs the convolution.
        self.depthwise_conv = keras.layers.Conv2D(
            filters,
            7,
            padding="same",
            groups=filters,
            kernel_initializer=_truncated_normal(),
            dtype=self.dtype_policy,
            name="depthwise_conv",
        )
        self.norm = _layer_norm(self.dtype_policy, "norm")
        self.pointwise_conv1 = keras.layers.Dense(
            4 * filters,
            kernel_initializer=_truncated_normal(),
            dtype=self.dtype_policy,
            name="pointwise_conv1",
        )
        self.pointwise_conv2 = keras.layers.Dense(
            filters,
            kernel_initializer=_truncated_normal(),
            dtype=self.dtype_policy,
            name="pointwise_conv2",
        )
        self.drop_path = (
            DropPath(drop_path_keep_prob, dtype=self.dtype_policy, name="drop_path")
            if drop_path_keep_prob < 1.0
            else None
        )

    def build(self, input_shape):
        self.depthwise_conv.build(input_shape)
        self.norm.build(input_shape)
        self.pointwise_conv1.build(input_shape)
        self.pointwise_conv2.build((*input_shape[:3], 4 * self.filters))
        self.layer_scale = self.add_weight(
            name="layer_scale",
            shape=(1, 1, 1, self.filters),
            initializer=keras.initializers.Constant(1e-6),
        )
        if self.drop_path is not None:
            self.drop_path.build(input_shape)

    def call(self, inputs, training=None):
        kernel = ops.cast(self.depthwise_conv.kernel, inputs.dtype)
        kernel = ops.reshape(kernel, (7, 7, self.filters, 1))
        x = backend_seam.depthwise_conv_same(inputs, kernel)
        x = x + ops.cast(self.depthwise_conv.bias, x.dtype)
        x = self.pointwise_conv1(self.norm(x))
        x = self.pointwise_conv2(activate(x, "gelu"))
        x = ops.cast(self.layer_scale, x.dtype) * x
        if self.drop_path is not None:
            x = self.drop_path(x, training=training)
        return inputs + x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"filters": self.filters, "drop_path_keep_prob": self.drop_path_keep_prob}
        )
        return config
