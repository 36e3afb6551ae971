"""Stem, residual blocks and block groups of deeplab2's Axial-ResNet.

Tensors passed between blocks are pre-activation: every block applies ReLU to
its input first, takes the shortcut from that, and returns `branch + shortcut`
with no final ReLU (numerically a standard post-activation ResNet).
"""

import keras

from keras_maxdeeplab.layers.axial_attention import AxialAttention2D
from keras_maxdeeplab.layers.convolutions import Conv2DSame
from keras_maxdeeplab.layers.convolutions import activate
from keras_maxdeeplab.layers.convolutions import check_activation
from keras_maxdeeplab.layers.drop_path import DropPath
from keras_maxdeeplab.layers.drop_path import drop_path_keep_prob
from keras_maxdeeplab.layers.dual_path_transformer import DualPathTransformer


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class InceptionStem(keras.layers.Layer):
    """ResNet-50-beta stem: 3x3/2 + BN + ReLU, 3x3 + BN + ReLU, 3x3 + BN.

    Channels `64w, 64w, 128w` for `width_multiplier` w. The output is not
    activated (endpoint `stage1`). `activation="gelu"` (exact) replaces the
    ReLUs (kMaX-DeepLab's Axial-ResNet-50).

    Shapes: `[B, H, W, 3] -> [B, (H - 1) / 2 + 1, (W - 1) / 2 + 1, 128w]`.

    Example:
    >>> y = InceptionStem()(images)  # [B, 641, 641, 3] -> [B, 321, 321, 128]
    """

    def __init__(self, width_multiplier=1.0, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.width_multiplier = width_multiplier
        self.activation = check_activation(activation)
        narrow, wide = int(64 * width_multiplier), int(128 * width_multiplier)
        self.conv1_bn_act = Conv2DSame(
            narrow,
            3,
            strides=2,
            activation=activation,
            dtype=self.dtype_policy,
            name="conv1_bn_act",
        )
        self.conv2_bn_act = Conv2DSame(
            narrow, 3, activation=activation, dtype=self.dtype_policy, name="conv2_bn_act"
        )
        self.conv3_bn = Conv2DSame(wide, 3, dtype=self.dtype_policy, name="conv3_bn")

    def build(self, input_shape):
        self.conv1_bn_act.build(input_shape)
        shape = self.conv1_bn_act.compute_output_shape(input_shape)
        self.conv2_bn_act.build(shape)
        self.conv3_bn.build(shape)

    def call(self, inputs, training=None):
        x = self.conv1_bn_act(inputs, training=training)
        x = self.conv2_bn_act(x, training=training)
        return self.conv3_bn(x, training=training)

    def compute_output_shape(self, input_shape):
        shape = self.conv1_bn_act.compute_output_shape(input_shape)
        return (*shape[:3], int(128 * self.width_multiplier))

    def get_config(self):
        config = super().get_config()
        config.update({"width_multiplier": self.width_multiplier, "activation": self.activation})
        return config


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class AxialBlock(keras.layers.Layer):
    """A residual block: bottleneck, axial-attention bottleneck or basic block.

    * 3 filters, no attention (bottleneck): 1x1 + BN + ReLU, 3x3 (strided,
      atrous) + BN + ReLU, 1x1 + BN(gamma 0).
    * 3 filters, `attention_type='axial'`: 1x1 + BN + ReLU,
      `AxialAttention2D(filters[1])`, ReLU, 1x1 + BN(gamma 0).
    * 2 filters (basic, wide ResNet): 3x3 (strided) + BN + ReLU, 3x3 + BN(gamma 0).

    The shortcut is `ReLU(x)`, or a 1x1 (strided) conv + BN of it when the
    channel count changes. Output `drop_path(branch) + shortcut`.
    `activation="gelu"` (exact) replaces every ReLU (kMaX-DeepLab).

    Shapes: `[B, H, W, C] -> [B, H / s, W / s, filters[-1]]`.

    Example:
    >>> y = AxialBlock([512, 256, 1024], attention_type="axial")(x)
    """

    def __init__(
        self,
        filters,
        strides=1,
        atrous_rate=1,
        basic_block_second_conv_atrous_rate=None,
        attention_type=None,
        key_expansion=1,
        value_expansion=2,
        num_heads=8,
        drop_path_keep_prob=1.0,
        activation="relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.activation = check_activation(activation)
        self.filters = list(filters)
        self.strides = strides
        self.atrous_rate = atrous_rate
        self.basic_block_second_conv_atrous_rate = basic_block_second_conv_atrous_rate
        self.attention_type = attention_type
        self.key_expansion = key_expansion
        self.value_expansion = value_expansion
        self.num_heads = num_heads
        self.drop_path_keep_prob = drop_path_keep_prob
        if attention_type not in (None, "axial"):
            raise ValueError(f"attention_type must be None or 'axial'; got {attention_type!r}.")
        if len(self.filters) == 3:
            self.conv1_bn_act = Conv2DSame(
                self.filters[0],
                1,
                activation=activation,
                dtype=self.dtype_policy,
                name="conv1_bn_act",
            )
            if attention_type == "axial":
                self.attention = AxialAttention2D(
                    self.filters[1],
                    key_expansion=key_expansion,
                    value_expansion=value_expansion,
                    num_heads=num_heads,
                    strides=strides,
                    dtype=self.dtype_policy,
                    name="attention",
                )
            else:
                self.conv2_bn_act = Conv2DSame(
                    self.filters[1],
                    3,
                    strides=strides,
                    atrous_rate=atrous_rate,
                    activation=activation,
                    dtype=self.dtype_policy,
                    name="conv2_bn_act",
                )
            self.conv3_bn = Conv2DSame(
                self.filters[2],
                1,
                bn_gamma_initializer="zeros",
                dtype=self.dtype_policy,
                name="conv3_bn",
            )
        elif len(self.filters) == 2:
            if attention_type is not None:
                raise ValueError("Basic (2-conv) blocks cannot use attention.")
            second_rate = basic_block_second_conv_atrous_rate or atrous_rate
            self.conv1_bn_act = Conv2DSame(
                self.filters[0],
                3,
                strides=strides,
                atrous_rate=atrous_rate,
                activation=activation,
                dtype=self.dtype_policy,
                name="conv1_bn_act",
            )
            self.conv2_bn = Conv2DSame(
                self.filters[1],
                3,
                atrous_rate=second_rate,
                bn_gamma_initializer="zeros",
                dtype=self.dtype_policy,
                name="conv2_bn",
            )
        else:
            raise ValueError(f"filters must have 2 or 3 entries; got {self.filters}.")
        self.drop_path = DropPath(drop_path_keep_prob, dtype=self.dtype_policy, name="drop_path")

    def _branch_layers(self):
        if len(self.filters) == 2:
            return [self.conv1_bn_act, self.conv2_bn]
        middle = self.attention if self.attention_type == "axial" else self.conv2_bn_act
        return [self.conv1_bn_act, middle, self.conv3_bn]

    def build(self, input_shape):
        shape = input_shape
        for layer in self._branch_layers():
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.shortcut = None
        if input_shape[-1] != self.filters[-1]:
            self.shortcut = Conv2DSame(
                self.filters[-1], 1, strides=self.strides, dtype=self.dtype_policy, name="shortcut"
            )
            self.shortcut.build(input_shape)

    def call(self, inputs, training=None):
        x = activate(inputs, self.activation)
        if self.shortcut is not None:
            shortcut = self.shortcut(x, training=training)
        elif self.strides > 1:
            shortcut = x[:, :: self.strides, :: self.strides]
        else:
            shortcut = x
        branch = x
        for layer in self._branch_layers():
            branch = layer(branch, training=training)
            if layer is getattr(self, "attention", None):
                branch = activate(branch, self.activation)
        return self.drop_path(branch, training=training) + shortcut

    def compute_output_shape(self, input_shape):
        def out(size):
            return (size - 1) // self.strides + 1

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.filters[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "strides": self.strides,
                "atrous_rate": self.atrous_rate,
                "basic_block_second_conv_atrous_rate": self.basic_block_second_conv_atrous_rate,
                "attention_type": self.attention_type,
                "key_expansion": self.key_expansion,
                "value_expansion": self.value_expansion,
                "num_heads": self.num_heads,
                "drop_path_keep_prob": self.drop_path_keep_prob,
                "activation": self.activation,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class BlockGroup(keras.layers.Layer):
    """A stage of residual blocks, each optionally followed by a dual-path transformer.

    A port of deeplab2's `BlockGroup`: the block type, stride, atrous rate,
    drop-path keep probability and transformer placement of every block are
    derived from the "original ResNet" strides exactly as deeplab2 derives
    them (see `block_plan`).

    Args:
        filters: int, the stage's base filters F.
        num_blocks: int.
        original_resnet_stride: int, 2 for a downsampling stage else 1.
        original_resnet_input_stride: int, the stage's nominal input stride.
        output_stride: int (16 for MaX-DeepLab, 32 for kMaX-DeepLab).
        backbone_type: 'resnet' (kMaX's ResNet-50; blocks as 'resnet_beta'),
            'resnet_beta' or 'wider_resnet'.
        use_axial_beyond_stride: int.
        use_transformer_beyond_stride: int, 0 for none.
        transformer_expansion: float, DPT filters = int(128 * it).
        attention_bottleneck_expansion: int.
        axial_key_expansion, axial_value_expansion: float.
        dual_path_feed_forward_network_channels: int.
        drop_path_keep_prob, drop_path_beyond_stride, drop_path_schedule.
        activation: "relu", or "gelu" (exact) in kMaX-DeepLab's blocks.

    Call: `group(features)` or `group(features, memory)`; returns the new
    features, or `(features, memory)` when a memory is passed.

    Example:
    >>> features, memory = BlockGroup(512, 3, 1, 16, use_transformer_beyond_stride=32,
    ...                               dtype=self.dtype_policy, name="stage5")(features, memory)
    """

    def __init__(
        self,
        filters,
        num_blocks,
        original_resnet_stride,
        original_resnet_input_stride,
        output_stride=16,
        backbone_type="resnet_beta",
        use_axial_beyond_stride=16,
        use_transformer_beyond_stride=32,
        transformer_expansion=1.0,
        attention_bottleneck_expansion=2,
        axial_key_expansion=1,
        axial_value_expansion=2,
        dual_path_feed_forward_network_channels=2048,
        drop_path_keep_prob=0.8,
        drop_path_beyond_stride=16,
        drop_path_schedule="linear",
        activation="relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.activation = check_activation(activation)
        self.filters = filters
        self.num_blocks = num_blocks
        self.original_resnet_stride = original_resnet_stride
        self.original_resnet_input_stride = original_resnet_input_stride
        self.output_stride = output_stride
        self.backbone_type = backbone_type
        self.use_axial_beyond_stride = use_axial_beyond_stride
        self.use_transformer_beyond_stride = use_transformer_beyond_stride
        self.transformer_expansion = transformer_expansion
        self.attention_bottleneck_expansion = attention_bottleneck_expansion
        self.axial_key_expansion = axial_key_expansion
        self.axial_value_expansion = axial_value_expansion
        self.dual_path_feed_forward_network_channels = dual_path_feed_forward_network_channels
        self.drop_path_keep_prob = drop_path_keep_prob
        self.drop_path_beyond_stride = drop_path_beyond_stride
        self.drop_path_schedule = drop_path_schedule
        self.blocks = []
        self.transformers = []
        for index, plan in enumerate(self.block_plan()):
            block = AxialBlock(
                plan["filters"],
                strides=plan["strides"],
                atrous_rate=plan["atrous_rate"],
                basic_block_second_conv_atrous_rate=plan["second_atrous_rate"],
                attention_type=plan["attention_type"],
                key_expansion=axial_key_expansion,
                value_expansion=axial_value_expansion,
                drop_path_keep_prob=plan["keep_prob"],
                activation=activation,
                dtype=self.dtype_policy,
                name=f"block{index + 1}",
            )
            transformer = None
            if plan["transformer"]:
                transformer = DualPathTransformer(
                    int(128 * transformer_expansion),
                    feed_forward_network_channels=dual_path_feed_forward_network_channels,
                    drop_path_keep_prob=plan["keep_prob"],
                    dtype=self.dtype_policy,
                    name=f"block{index + 1}_transformer",
                )
            self.blocks.append(block)
            self.transformers.append(transformer)

    @property
    def has_transformer(self):
        return any(t is not None for t in self.transformers)

    def block_plan(self):
        """Per block: filters, stride, atrous rates, attention, keep prob, transformer."""
        plans = []
        input_stride = self.original_resnet_input_stride
        current_stride = input_stride
        stride = self.original_resnet_stride
        for index in range(self.num_blocks):
            strides = stride if index == 0 and input_stride < self.output_stride else 1
            atrous_rate = max(current_stride // self.output_stride, 1)
            second_rate = atrous_rate
            if index == 0 and input_stride * stride > self.output_stride:
                second_rate = input_stride * stride // self.output_stride
            keep_prob = drop_path_keep_prob(
                self.drop_path_keep_prob,
                self.drop_path_schedule,
                current_stride,
                self.drop_path_beyond_stride,
            )
            f = self.filters
            attention_type = None
            if current_stride >= self.use_axial_beyond_stride > 0:
                attention_type = "axial"
                filters = [f * self.attention_bottleneck_expansion, f, f * 4]
            elif self.backbone_type in ("resnet", "resnet_beta"):
                filters = [f, f, f * 4]
            elif self.backbone_type == "wider_resnet":
                if input_stride * stride < 32:
                    filters = [f * 4, f * 4]
                else:
                    filters = [f, f * 2, f * 4]
            else:
                raise ValueError(
                    f"backbone_type must be 'resnet', 'resnet_beta' or 'wider_resnet'; got "
                    f"{self.backbone_type!r}."
                )
            if index == 0 and stride > 1:
                current_stride *= stride
            transformer = current_stride >= self.use_transformer_beyond_stride > 0
            plans.append(
                {
                    "filters": [int(x) for x in filters],
                    "strides": strides,
                    "atrous_rate": atrous_rate,
                    "second_atrous_rate": second_rate,
                    "attention_type": attention_type,
                    "keep_prob": keep_prob,
                    "transformer": transformer,
                }
            )
        return plans

    def build(self, features_shape, memory_shape=None):
        shape = features_shape
        for block, transformer in zip(self.blocks, self.transformers):
            block.build(shape)
            shape = block.compute_output_shape(shape)
            if transformer is not None:
                if memory_shape is None:
                    raise ValueError(f"{self.name} has dual-path transformers but got no memory.")
                transformer.build(shape, memory_shape)

    def call(self, features, memory=None, training=None):
        for block, transformer in zip(self.blocks, self.transformers):
            features = block(features, training=training)
            if transformer is not None:
                features, memory = transformer(features, memory, training=training)
        if memory is None:
            return features
        return features, memory

    def compute_output_shape(self, features_shape, memory_shape=None):
        shape = features_shape
        for block in self.blocks:
            shape = block.compute_output_shape(shape)
        if memory_shape is None:
            return shape
        return shape, memory_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "num_blocks": self.num_blocks,
                "original_resnet_stride": self.original_resnet_stride,
                "original_resnet_input_stride": self.original_resnet_input_stride,
                "output_stride": self.output_stride,
                "backbone_type": self.backbone_type,
                "use_axial_beyond_stride": self.use_axial_beyond_stride,
                "use_transformer_beyond_stride": self.use_transformer_beyond_stride,
                "transformer_expansion": self.transformer_expansion,
                "attention_bottleneck_expansion": self.attention_bottleneck_expansion,
                "axial_key_expansion": self.axial_key_expansion,
                "axial_value_expansion": self.axial_value_expansion,
                "dual_path_feed_forward_network_channels": (
                    self.dual_path_feed_forward_network_channels
                ),
                "drop_path_keep_prob": self.drop_path_keep_prob,
                "drop_path_beyond_stride": self.drop_path_beyond_stride,
                "drop_path_schedule": self.drop_path_schedule,
                "activation": self.activation,
            }
        )
        return config
