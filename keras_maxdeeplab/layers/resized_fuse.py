"""deeplab2's `ResizedFuse`: bring several features to one size and sum them."""

import keras

from keras_maxdeeplab.layers.convolutions import Conv2DSame
from keras_maxdeeplab.layers.convolutions import activate
from keras_maxdeeplab.layers.convolutions import check_activation
from keras_maxdeeplab.layers.resize import resize_bilinear_align_corners


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class ResizedFuse(keras.layers.Layer):
    """Sums a list of features after bringing each to `(height, width, channels)`.

    Per input (index k, 1-based):
    * already `channels` wide: align-corners bilinear resize, no conv, no ReLU;
    * exactly twice the size (`(h + 1) // 2 == height`): ReLU, 1x1 stride-2
      conv + BN (`strided_conv_bn{k}`);
    * otherwise: ReLU, 1x1 conv + BN (`resized_conv_bn{k}`), then resize.

    `activation="gelu"` (exact) replaces the ReLU (kMaX-DeepLab's pixel decoder).

    Shapes: list of `[B, h_k, w_k, c_k]` -> `[B, height, width, channels]`.

    Example:
    >>> y = ResizedFuse(81, 81, 512)([stage5_out, stage3])
    """

    def __init__(self, height, width, channels, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.activation = check_activation(activation)
        self.height = height
        self.width = width
        self.channels = channels

    def _kind(self, shape):
        if shape[-1] == self.channels:
            return "identity"
        if (shape[1] + 1) // 2 == self.height and (shape[2] + 1) // 2 == self.width:
            return "strided"
        return "resized"

    def build(self, input_shapes):
        self.convs = []
        for index, shape in enumerate(input_shapes):
            kind = self._kind(shape)
            conv = None
            if kind == "strided":
                conv = Conv2DSame(
                    self.channels,
                    1,
                    strides=2,
                    dtype=self.dtype_policy,
                    name=f"strided_conv_bn{index + 1}",
                )
            elif kind == "resized":
                conv = Conv2DSame(
                    self.channels, 1, dtype=self.dtype_policy, name=f"resized_conv_bn{index + 1}"
                )
            if conv is not None:
                conv.build(shape)
            self.convs.append(conv)

    def call(self, inputs, training=None):
        outputs = []
        size = (self.height, self.width)
        for feature, conv in zip(inputs, self.convs):
            kind = self._kind(feature.shape)
            if kind == "identity":
                outputs.append(resize_bilinear_align_corners(feature, size))
            elif kind == "strided":
                outputs.append(conv(activate(feature, self.activation), training=training))
            else:
                x = conv(activate(feature, self.activation), training=training)
                outputs.append(resize_bilinear_align_corners(x, size))
        total = outputs[0]
        for x in outputs[1:]:
            total = total + x
        return total

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], self.height, self.width, self.channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "height": self.height,
                "width": self.width,
                "channels": self.channels,
                "activation": self.activation,
            }
        )
        return config
