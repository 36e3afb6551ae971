"""MaX-DeepLab's heads: the auxiliary semantic decoder (ASPP + low-level fusion),
the 5x5-separable prediction heads, the memory-side class head, and the mask
logits."""

import math

import keras
from keras import ops

from keras_maxdeeplab.layers.batch_norm import batch_normalization
from keras_maxdeeplab.layers.convolutions import ChannelsLastConv2D
from keras_maxdeeplab.layers.convolutions import Conv1D
from keras_maxdeeplab.layers.convolutions import Conv2DSame
from keras_maxdeeplab.layers.convolutions import SeparableConv2DSame
from keras_maxdeeplab.layers.convolutions import check_activation
from keras_maxdeeplab.layers.resize import resize_bilinear_align_corners


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class SeparableConvBlock(keras.layers.Layer):
    """One 5x5 depthwise-separable conv (deeplab2 `StackedConv2DSame`, 1 layer).

    Shapes: `[B, H, W, C] -> [B, H, W, filters]`.

    Example:
    >>> y = SeparableConvBlock(256)(x)
    """

    def __init__(self, filters, kernel_size=5, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.activation = check_activation(activation)
        self.conv1_bn_act = SeparableConv2DSame(
            filters,
            kernel_size,
            activation=activation,
            dtype=self.dtype_policy,
            name="conv1_bn_act",
        )

    def build(self, input_shape):
        self.conv1_bn_act.build(input_shape)

    def call(self, inputs, training=None):
        return self.conv1_bn_act(inputs, training=training)

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
class PredictionHead(keras.layers.Layer):
    """5x5 separable conv block then a 1x1 conv with bias (`final_conv`).

    deeplab2's `PanopticDeepLabSingleHead`, used for the pixel-space
    embedding (128 outputs) and the auxiliary semantic logits (C + 1 outputs).
    `activation`: "relu" (MaX-DeepLab) or "gelu" (exact; kMaX-DeepLab).

    Shapes: `[B, H, W, C] -> [B, H, W, output_channels]`.

    Example:
    >>> logits = PredictionHead(256, 134, dtype=self.dtype_policy, name="semantic_head")(features)
    """

    def __init__(self, head_channels, output_channels, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.head_channels = head_channels
        self.output_channels = output_channels
        self.activation = check_activation(activation)
        self.conv_block = SeparableConvBlock(
            head_channels, activation=activation, dtype=self.dtype_policy, name="conv_block"
        )
        self.final_conv = ChannelsLastConv2D(
            output_channels,
            1,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
            dtype=self.dtype_policy,
            name="final_conv",
        )

    def build(self, input_shape):
        self.conv_block.build(input_shape)
        self.final_conv.build((*input_shape[:3], self.head_channels))

    def call(self, inputs, training=None):
        return self.final_conv(self.conv_block(inputs, training=training))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.output_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "head_channels": self.head_channels,
                "output_channels": self.output_channels,
                "activation": self.activation,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class _ASPPConv(keras.layers.Layer):
    """An ASPP branch holding one `conv_bn_act` (deeplab2's naming level)."""

    def __init__(self, filters, kernel_size, atrous_rate=1, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.atrous_rate = atrous_rate
        self.activation = check_activation(activation)
        self.conv_bn_act = Conv2DSame(
            filters,
            kernel_size,
            atrous_rate=atrous_rate,
            activation=activation,
            dtype=self.dtype_policy,
            name="conv_bn_act",
        )

    def build(self, input_shape):
        self.conv_bn_act.build(input_shape)

    def call(self, inputs, training=None):
        return self.conv_bn_act(inputs, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "atrous_rate": self.atrous_rate,
                "activation": self.activation,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class ASPP(keras.layers.Layer):
    """Atrous spatial pyramid pooling: 1x1, three atrous 3x3, image pooling.

    The pooling branch averages over the whole stride-16 feature map (deeplab2
    pools with the train-crop size, which is the model's input size here),
    projects with 1x1 + BN + ReLU and broadcasts back. The five branches are
    concatenated, projected to `filters` (1x1 + BN + ReLU), with dropout 0.1.
    `activation="gelu"` (exact) replaces every ReLU (kMaX-DeepLab).

    Shapes: `[B, h, w, C] -> [B, h, w, filters]`.

    Example:
    >>> y = ASPP(256, (6, 12, 18))(res5)
    """

    def __init__(self, filters, atrous_rates=(6, 12, 18), activation="relu", **kwargs):
        super().__init__(**kwargs)
        if len(atrous_rates) != 3:
            raise ValueError(f"ASPP needs exactly 3 atrous rates; got {atrous_rates}.")
        self.filters = filters
        self.atrous_rates = tuple(atrous_rates)
        self.activation = check_activation(activation)
        self.conv_bn_act = Conv2DSame(
            filters, 1, activation=activation, dtype=self.dtype_policy, name="conv_bn_act"
        )
        self.aspp_convs = [
            _ASPPConv(
                filters,
                3,
                rate,
                activation=activation,
                dtype=self.dtype_policy,
                name=f"aspp_conv{i + 1}",
            )
            for i, rate in enumerate(atrous_rates)
        ]
        self.aspp_pool = _ASPPConv(
            filters, 1, activation=activation, dtype=self.dtype_policy, name="aspp_pool"
        )
        self.proj_conv_bn_act = Conv2DSame(
            filters, 1, activation=activation, dtype=self.dtype_policy, name="proj_conv_bn_act"
        )
        self.proj_drop = keras.layers.Dropout(0.1, dtype=self.dtype_policy, name="proj_drop")

    def build(self, input_shape):
        self.conv_bn_act.build(input_shape)
        for conv in self.aspp_convs:
            conv.build(input_shape)
        self.aspp_pool.build((input_shape[0], 1, 1, input_shape[-1]))
        self.proj_conv_bn_act.build((*input_shape[:3], 5 * self.filters))

    def call(self, inputs, training=None):
        branches = [self.conv_bn_act(inputs, training=training)]
        branches += [conv(inputs, training=training) for conv in self.aspp_convs]
        pooled = ops.mean(inputs, axis=(1, 2), keepdims=True)
        pooled = self.aspp_pool(pooled, training=training)
        branches.append(ops.broadcast_to(pooled, ops.shape(branches[0])))
        x = self.proj_conv_bn_act(ops.concatenate(branches, axis=-1), training=training)
        return self.proj_drop(x, training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "atrous_rates": self.atrous_rates,
                "activation": self.activation,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class SemanticDecoder(keras.layers.Layer):
    """The auxiliary semantic decoder of MaX-DeepLab-S (Panoptic-DeepLab style).

    ASPP on the stride-16 feature, then for each low-level feature (res3,
    res2): 1x1 projection + BN + ReLU, align-corners upsampling of the
    running feature to its size, concatenation, 5x5 separable conv.

    Args:
        aspp_channels: int.
        decoder_channels: int.
        low_level_channels: list of int, projections of `res3` then `res2`.
        atrous_rates: 3 ints.
        activation: "relu" (MaX-DeepLab) or "gelu" (exact; kMaX-DeepLab).

    Shapes: `[feature_semantic [B,h,w,C], res3 [B,2h-1,..], res2 [B,4h-3,..]]
    -> [B, 4h-3, 4w-3, decoder_channels]`.

    Example:
    >>> y = SemanticDecoder(256, 256, (64, 32))([res5, res3, res2])
    """

    def __init__(
        self,
        aspp_channels,
        decoder_channels,
        low_level_channels,
        atrous_rates=(6, 12, 18),
        activation="relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.aspp_channels = aspp_channels
        self.decoder_channels = decoder_channels
        self.low_level_channels = tuple(low_level_channels)
        self.atrous_rates = tuple(atrous_rates)
        self.activation = check_activation(activation)
        self.aspp = ASPP(
            aspp_channels, atrous_rates, activation, dtype=self.dtype_policy, name="aspp"
        )
        self.low_level_convs = [
            Conv2DSame(
                c, 1, activation=activation, dtype=self.dtype_policy, name=f"low_level_conv{i + 1}"
            )
            for i, c in enumerate(self.low_level_channels)
        ]
        self.fusion_convs = [
            SeparableConvBlock(
                decoder_channels,
                activation=activation,
                dtype=self.dtype_policy,
                name=f"fusion_conv{i + 1}",
            )
            for i in range(len(self.low_level_channels))
        ]

    def build(self, input_shapes):
        semantic_shape, *low_level_shapes = input_shapes
        self.aspp.build(semantic_shape)
        channels = self.aspp_channels
        for conv, fusion, shape, projected in zip(
            self.low_level_convs, self.fusion_convs, low_level_shapes, self.low_level_channels
        ):
            conv.build(shape)
            fusion.build((*shape[:3], channels + projected))
            channels = self.decoder_channels

    def call(self, inputs, training=None):
        feature_semantic, *low_level_features = inputs
        if len(low_level_features) != len(self.low_level_convs):
            raise ValueError(
                f"SemanticDecoder expects {len(self.low_level_convs)} low-level features; "
                f"got {len(low_level_features)}."
            )
        x = self.aspp(feature_semantic, training=training)
        for conv, fusion, low in zip(self.low_level_convs, self.fusion_convs, low_level_features):
            low = conv(low, training=training)
            x = resize_bilinear_align_corners(x, low.shape[1:3])
            x = fusion(ops.concatenate([x, low], axis=-1), training=training)
        return x

    def compute_output_shape(self, input_shapes):
        return (*input_shapes[-1][:3], self.decoder_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "aspp_channels": self.aspp_channels,
                "decoder_channels": self.decoder_channels,
                "low_level_channels": self.low_level_channels,
                "atrous_rates": self.atrous_rates,
                "activation": self.activation,
            }
        )
        return config


def void_prior_logit(num_class_head_channels, void_prior_prob=0.9):
    """deeplab2's constant void bias: `log((K - 1) * p / (1 - p))` (7.0876 for K=134)."""
    return math.log((num_class_head_channels - 1) * void_prior_prob / (1 - void_prior_prob))


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class TransformerClassHead(Conv1D):
    """Memory-side class logits: 1x1 Conv1D with bias, plus a constant void prior.

    The last channel is "no object" (void); `void_prior_logit` is added to it
    on every call and is not a weight (deeplab2 does the same).

    Shapes: `[B, N, C] -> [B, N, num_classes]`.

    Example:
    >>> logits = TransformerClassHead(134)(class_feature)  # [B, 128, 134]
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(
            num_classes,
            use_bias=True,
            use_bn=False,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
            **kwargs,
        )
        self.num_classes = num_classes

    def call(self, inputs):
        logits = super().call(inputs)
        bias = [0.0] * (self.num_classes - 1) + [void_prior_logit(self.num_classes)]
        return logits + ops.convert_to_tensor(bias, dtype=logits.dtype)

    def get_config(self):
        config = keras.layers.Layer.get_config(self)
        config.update({"num_classes": self.num_classes})
        return config


def l2_normalize(x):
    """`x / sqrt(max(sum(x^2), 1e-12))` over the last axis, as tf.math.l2_normalize."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class L2Normalize(keras.layers.Layer):
    """`x / sqrt(max(sum(x^2), 1e-12))` over the last axis (tf.math.l2_normalize).

    Example:
    >>> y = L2Normalize()(x)
    """

    def call(self, inputs):
        return l2_normalize(inputs)


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class MaskLogits(keras.layers.Layer):
    """Mask logits: pixel embedding . mask kernel, then a scalar batch norm.

    `logits[b,h,w,i] = sum_d f[b,h,w,d] * k[b,i,d]`, normalised by one scalar
    BN (gamma initialised to 0.1) over every element, deeplab2's
    "batch norm on an extra axis".

    Shapes: `(features [B,H,W,D], kernels [B,N,D]) -> [B,H,W,N]`.

    Example:
    >>> logits = MaskLogits()(pixel_feature, mask_kernel)
    """

    def build(self, features_shape, kernels_shape):
        self.batch_norm = batch_normalization(
            gamma_initializer=keras.initializers.Constant(0.1),
            dtype=self.dtype_policy,
            name="batch_norm",
        )
        self.batch_norm.build((None, None, None, None, 1))

    def call(self, features, kernels, training=None):
        logits = ops.einsum("bhwd,bid->bhwi", features, kernels)
        logits = self.batch_norm(ops.expand_dims(logits, -1), training=training)
        return ops.squeeze(logits, -1)

    def compute_output_shape(self, features_shape, kernels_shape):
        return (*features_shape[:3], kernels_shape[1])


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class MaskPredictor(keras.layers.Layer):
    """MaX-DeepLab's mask predictor without the semantic branch.

    deeplab2's `MaXDeepLab` head with `use_auxiliary_semantic_head=False`, as
    kMaX-DeepLab uses it for its final prediction and for the auxiliary
    prediction inside every k-means block:
    * pixel-space head (`PredictionHead`) -> BN -> L2 normalisation:
      `pixel_space_normalized_feature`;
    * class head (Conv1D with bias + void prior) on the class feature;
    * mask head (Conv1D + BN) on the mask feature, then mask logits
      (embedding . mask kernel + scalar BN).

    Args:
        pixel_space_head_channels: int.
        pixel_space_output_channels: int, D (the embedding width).
        num_classes: int, class-head channels (the last is "no object").
        activation: "relu" or "gelu" (exact) in the pixel-space head.

    Shapes: `(pixel_features [B, H, W, C], class_features [B, N, Cc],
    mask_features [B, N, Cm])` -> dict of `pixel_space_normalized_feature`
    `[B, H, W, D]`, `transformer_class_logits` `[B, N, num_classes]`,
    `pixel_space_mask_logits` `[B, H, W, N]`.

    Example:
    >>> predictor = MaskPredictor(256, 128, 134, activation="gelu")
    >>> outputs = predictor(pixels, centers, centers)
    """

    def __init__(
        self,
        pixel_space_head_channels,
        pixel_space_output_channels,
        num_classes,
        activation="relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.pixel_space_head_channels = pixel_space_head_channels
        self.pixel_space_output_channels = pixel_space_output_channels
        self.num_classes = num_classes
        self.activation = check_activation(activation)
        self.pixel_space_head = PredictionHead(
            pixel_space_head_channels,
            pixel_space_output_channels,
            activation=activation,
            dtype=self.dtype_policy,
            name="pixel_space_head",
        )
        self.pixel_space_feature_batch_norm = batch_normalization(
            dtype=self.dtype_policy, name="pixel_space_feature_batch_norm"
        )
        self.transformer_mask_head = Conv1D(
            pixel_space_output_channels, dtype=self.dtype_policy, name="transformer_mask_head"
        )
        self.transformer_class_head = TransformerClassHead(
            num_classes, dtype=self.dtype_policy, name="transformer_class_head"
        )
        self.pixel_space_mask_logits = MaskLogits(
            dtype=self.dtype_policy, name="pixel_space_mask_logits"
        )

    def build(self, pixel_features_shape, class_features_shape, mask_features_shape):
        self.pixel_space_head.build(pixel_features_shape)
        feature_shape = self.pixel_space_head.compute_output_shape(pixel_features_shape)
        self.pixel_space_feature_batch_norm.build(feature_shape)
        self.transformer_class_head.build(class_features_shape)
        self.transformer_mask_head.build(mask_features_shape)
        kernel_shape = self.transformer_mask_head.compute_output_shape(mask_features_shape)
        self.pixel_space_mask_logits.build(feature_shape, kernel_shape)

    def call(self, pixel_features, class_features, mask_features, training=None):
        feature = self.pixel_space_head(pixel_features, training=training)
        feature = l2_normalize(self.pixel_space_feature_batch_norm(feature, training=training))
        kernel = self.transformer_mask_head(mask_features, training=training)
        return {
            "pixel_space_normalized_feature": feature,
            "transformer_class_logits": self.transformer_class_head(class_features),
            "pixel_space_mask_logits": self.pixel_space_mask_logits(
                feature, kernel, training=training
            ),
        }

    def compute_output_shape(self, pixel_features_shape, class_features_shape, mask_features_shape):
        spatial = tuple(pixel_features_shape[:3])
        return {
            "pixel_space_normalized_feature": (*spatial, self.pixel_space_output_channels),
            "transformer_class_logits": (*class_features_shape[:2], self.num_classes),
            "pixel_space_mask_logits": (*spatial, mask_features_shape[1]),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pixel_space_head_channels": self.pixel_space_head_channels,
                "pixel_space_output_channels": self.pixel_space_output_channels,
                "num_classes": self.num_classes,
                "activation": self.activation,
            }
        )
        return config
