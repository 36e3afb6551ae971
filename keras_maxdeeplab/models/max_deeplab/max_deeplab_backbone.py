"""MaXDeepLabBackbone: deeplab2's Axial-ResNet encoder with dual-path transformers."""

import keras
from keras import ops
from keras_hub.models import Backbone
from keras_hub.src.utils.python_utils import classproperty

from keras_maxdeeplab.layers.blocks import BlockGroup
from keras_maxdeeplab.layers.blocks import InceptionStem
from keras_maxdeeplab.layers.convolutions import Conv1D
from keras_maxdeeplab.layers.convolutions import Conv2DSame
from keras_maxdeeplab.layers.dual_path_transformer import MemoryFeature
from keras_maxdeeplab.layers.dual_path_transformer import recording_attention
from keras_maxdeeplab.layers.resized_fuse import ResizedFuse
from keras_maxdeeplab.models.max_deeplab.input_checks import check_architecture
from keras_maxdeeplab.models.max_deeplab.input_checks import check_image_shape
from keras_maxdeeplab.models.max_deeplab.input_checks import check_images
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import listed_presets

OUTPUT_STRIDE = 16
HIGH_RESOLUTION_OUTPUT_STRIDE = 4


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class MaXDeepLabBackbone(Backbone):
    """The MaX-DeepLab encoder: pixel path (Axial-ResNet) and memory path.

    A port of deeplab2's `AxialResNet` (`max_deeplab_s` / `max_deeplab_l`),
    with every knob deeplab2 uses to build or shrink it and the same layer
    names, so deeplab2 checkpoints map onto it one to one. The output stride
    is 16; the decoder returns to stride 4.

    Inputs are images normalised to [-1, 1] (`x / 127.5 - 1`, see
    `MaXDeepLabImageConverter`) of a fixed size `16k + 1` (641, 1025, ...):
    axial attention and the relative position tables are built for it.

    The architecture arguments have no defaults: `MAX_DEEPLAB_CONFIGS` holds
    deeplab2's values (S, L and the tiny test model), as keras-hub's backbones
    take theirs from presets.

    Args:
        image_shape: `(H, W, 3)`, H and W of the form 16k + 1.
        num_blocks: blocks of stages 2-5 before `backbone_layer_multiplier`.
        backbone_type: `"resnet_beta"` (S: Inception stem, bottlenecks) or
            `"wider_resnet"` (L: one-conv stem, basic blocks).
        stem_width_multiplier, backbone_width_multiplier,
        backbone_layer_multiplier: deeplab2's shrinking knobs.
        use_axial_beyond_stride: blocks at this stride and beyond are axial.
        backbone_use_transformer_beyond_stride,
        extra_decoder_use_transformer_beyond_stride: where dual-path
            transformers follow the blocks (0 = nowhere).
        backbone_decoder_num_stacks, extra_decoder_num_stacks: hourglass
            decoder stacks (0 for S, 1 and 1 for L).
        backbone_decoder_blocks_per_stage, extra_decoder_blocks_per_stage.
        num_mask_slots: N, the memory size.
        memory_channels: memory width.
        base_transformer_expansion: DPT filters = 128 * this * stride / 16.
        global_feed_forward_network_channels: width of the class/mask features.
        dual_path_feed_forward_network_channels: DPT memory FFN width.
        attention_bottleneck_expansion, axial_key_expansion,
        axial_value_expansion: axial block widths.
        drop_path_keep_prob, drop_path_beyond_stride, drop_path_schedule:
            stochastic depth (deeplab2: 0.8, 16 for S / 4 for L, "linear").

    Outputs: a dict of endpoints: `stage1..5` (pre-activation), `res1..5`
    (ReLU), `backbone_output`, `feature_semantic` `[B, H/16 or H/4, ..]`,
    `feature_panoptic` `[B, (H-1)/4+1, .., 256]` (S),
    `transformer_class_feature`, `transformer_mask_feature` `[B, N, 256]`.

    Example:
    >>> backbone = MaXDeepLabBackbone(image_shape=(65, 65, 3),
    ...     **MAX_DEEPLAB_CONFIGS["max_deeplab_s"])
    >>> features = backbone(keras.random.uniform((1, 65, 65, 3), -1, 1))
    >>> features["feature_panoptic"].shape  # (1, 17, 17, 256)
    """

    def __init__(
        self,
        image_shape,
        num_blocks,
        backbone_type,
        backbone_use_transformer_beyond_stride,
        extra_decoder_use_transformer_beyond_stride,
        backbone_decoder_num_stacks,
        extra_decoder_num_stacks,
        extra_decoder_blocks_per_stage,
        num_mask_slots,
        memory_channels,
        base_transformer_expansion,
        global_feed_forward_network_channels,
        dual_path_feed_forward_network_channels,
        attention_bottleneck_expansion,
        axial_key_expansion,
        axial_value_expansion,
        drop_path_keep_prob,
        drop_path_beyond_stride,
        drop_path_schedule,
        # deeplab2's shrinking knobs: neutral unless a config shrinks the model.
        stem_width_multiplier=1.0,
        backbone_width_multiplier=1.0,
        backbone_layer_multiplier=1.0,
        use_axial_beyond_stride=16,
        backbone_decoder_blocks_per_stage=1,
        dtype=None,
        **kwargs,
    ):
        image_shape = check_image_shape(image_shape)
        check_architecture(
            num_blocks=num_blocks,
            backbone_use_transformer_beyond_stride=backbone_use_transformer_beyond_stride,
            extra_decoder_use_transformer_beyond_stride=extra_decoder_use_transformer_beyond_stride,
            backbone_decoder_num_stacks=backbone_decoder_num_stacks,
            extra_decoder_num_stacks=extra_decoder_num_stacks,
            extra_decoder_blocks_per_stage=extra_decoder_blocks_per_stage,
            num_mask_slots=num_mask_slots,
            memory_channels=memory_channels,
            base_transformer_expansion=base_transformer_expansion,
            global_feed_forward_network_channels=global_feed_forward_network_channels,
            dual_path_feed_forward_network_channels=dual_path_feed_forward_network_channels,
            attention_bottleneck_expansion=attention_bottleneck_expansion,
            axial_key_expansion=axial_key_expansion,
            axial_value_expansion=axial_value_expansion,
            drop_path_keep_prob=drop_path_keep_prob,
            drop_path_beyond_stride=drop_path_beyond_stride,
            stem_width_multiplier=stem_width_multiplier,
            backbone_width_multiplier=backbone_width_multiplier,
            backbone_layer_multiplier=backbone_layer_multiplier,
            use_axial_beyond_stride=use_axial_beyond_stride,
            backbone_decoder_blocks_per_stage=backbone_decoder_blocks_per_stage,
        )
        if backbone_type not in ("resnet_beta", "wider_resnet"):
            raise ValueError(
                f"backbone_type must be 'resnet_beta' (MaX-DeepLab-S) or 'wider_resnet' "
                f"(MaX-DeepLab-L); got {backbone_type!r}."
            )
        if not (
            backbone_use_transformer_beyond_stride or extra_decoder_use_transformer_beyond_stride
        ):
            raise ValueError("MaX-DeepLab needs dual-path transformers somewhere.")
        if extra_decoder_blocks_per_stage <= 0:
            raise ValueError("extra_decoder_blocks_per_stage must be positive.")
        group_options = dict(
            output_stride=OUTPUT_STRIDE,
            backbone_type=backbone_type,
            use_axial_beyond_stride=use_axial_beyond_stride,
            attention_bottleneck_expansion=attention_bottleneck_expansion,
            axial_key_expansion=axial_key_expansion,
            axial_value_expansion=axial_value_expansion,
            dual_path_feed_forward_network_channels=dual_path_feed_forward_network_channels,
            drop_path_keep_prob=drop_path_keep_prob,
            drop_path_beyond_stride=drop_path_beyond_stride,
            drop_path_schedule=drop_path_schedule,
            dtype=dtype,
        )

        # === Functional model ===
        images = keras.Input(shape=image_shape, name="images")
        memory = MemoryFeature(num_mask_slots, memory_channels, dtype=dtype, name="memory_feature")(
            images
        )
        endpoints, memory = apply_encoder(
            images,
            memory,
            num_blocks=num_blocks,
            backbone_type=backbone_type,
            stem_width_multiplier=stem_width_multiplier,
            backbone_width_multiplier=backbone_width_multiplier,
            backbone_layer_multiplier=backbone_layer_multiplier,
            use_transformer_beyond_stride=backbone_use_transformer_beyond_stride,
            base_transformer_expansion=base_transformer_expansion,
            group_options=group_options,
        )
        decoded, memory = apply_hourglass_decoder(
            endpoints,
            memory,
            image_shape,
            width_multiplier=backbone_width_multiplier,
            stacks=(backbone_decoder_num_stacks, extra_decoder_num_stacks),
            blocks_per_stage=(backbone_decoder_blocks_per_stage, extra_decoder_blocks_per_stage),
            use_transformer_beyond_stride=(
                backbone_use_transformer_beyond_stride,
                extra_decoder_use_transformer_beyond_stride,
            ),
            base_transformer_expansion=base_transformer_expansion,
            group_options=group_options,
        )
        for name in ("class", "mask"):
            feature = Conv1D(
                global_feed_forward_network_channels,
                activation="relu",
                dtype=dtype,
                name=f"{name}_feature_extra",
            )(memory)
            endpoints[f"transformer_{name}_feature"] = feature
        endpoints.update(decoded)

        super().__init__(inputs=images, outputs=endpoints, dtype=dtype, **kwargs)

        # === Config ===
        self.image_shape = image_shape
        self.num_blocks = tuple(num_blocks)
        self.backbone_type = backbone_type
        self.stem_width_multiplier = stem_width_multiplier
        self.backbone_width_multiplier = backbone_width_multiplier
        self.backbone_layer_multiplier = backbone_layer_multiplier
        self.use_axial_beyond_stride = use_axial_beyond_stride
        self.backbone_use_transformer_beyond_stride = backbone_use_transformer_beyond_stride
        self.extra_decoder_use_transformer_beyond_stride = (
            extra_decoder_use_transformer_beyond_stride
        )
        self.backbone_decoder_num_stacks = backbone_decoder_num_stacks
        self.extra_decoder_num_stacks = extra_decoder_num_stacks
        self.backbone_decoder_blocks_per_stage = backbone_decoder_blocks_per_stage
        self.extra_decoder_blocks_per_stage = extra_decoder_blocks_per_stage
        self.num_mask_slots = num_mask_slots
        self.memory_channels = memory_channels
        self.base_transformer_expansion = base_transformer_expansion
        self.global_feed_forward_network_channels = global_feed_forward_network_channels
        self.dual_path_feed_forward_network_channels = dual_path_feed_forward_network_channels
        self.attention_bottleneck_expansion = attention_bottleneck_expansion
        self.axial_key_expansion = axial_key_expansion
        self.axial_value_expansion = axial_value_expansion
        self.drop_path_keep_prob = drop_path_keep_prob
        self.drop_path_beyond_stride = drop_path_beyond_stride
        self.drop_path_schedule = drop_path_schedule

    def __call__(self, inputs, *args, **kwargs):
        check_images(inputs, self.image_shape)
        return super().__call__(inputs, *args, **kwargs)

    def dual_path_attention(self, images):
        """The attention weights of every dual-path transformer on `images`.

        The memory path's softmax runs over `[pixels ; memory]`; it is returned
        split into `memory_to_pixel` and `memory_to_memory` (for each slot and
        head, the two sum to 1). `pixel_to_memory` is each pixel's softmax over
        the slots. Inference mode (`training=False`), run eagerly.

        Args:
            images: `[B, H, W, 3]` at `image_shape`, normalised to [-1, 1] as
                the backbone takes them (`MaXDeepLab.preprocessor(raw)`).

        Returns:
            `{name: weights}` in the network's order, `name` as
            `"stage5/block1_transformer"` (`"<group>/<block>_transformer"`),
            `weights` a dict of NumPy arrays: `memory_to_pixel`
            `[B, heads, N, h, w]`, `memory_to_memory` `[B, heads, N, N]`,
            `pixel_to_memory` `[B, heads, h, w, N]`, at the block's own
            feature size `h, w` (stride 16 for MaX-DeepLab-S, 4 to 32 for L).

        Example:
        >>> attention = model.backbone.dual_path_attention(model.preprocessor(images))
        >>> attention["stage5/block1_transformer"]["memory_to_pixel"].shape
        (1, 8, 128, 41, 41)  # MaX-DeepLab-S at 641
        """
        names = {}
        for group in self.layers:
            for transformer in getattr(group, "transformers", ()):
                if transformer is not None:
                    names[id(transformer)] = f"{group.name}/{transformer.name}"
        with recording_attention() as records:
            self(images, training=False)
        return {
            names[id(layer)]: {k: ops.convert_to_numpy(v) for k, v in weights.items()}
            for layer, weights in records
        }

    @classproperty
    def presets(cls):
        """MaX-DeepLab's presets, `{name: {"metadata": {...}, "handle": "hf://..."}}`.

        The backbone of every preset: ImageNet-1K ones and those of the COCO models.
        """
        return listed_presets()

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Loads a MaX-DeepLab backbone from a preset.

        Args:
            preset: a name of `MaXDeepLabBackbone.presets` (its architecture is
                built from this package's configs; its weights come from the
                local cache, else its Hugging Face repository once published,
                else deeplab2's published checkpoint, downloaded and
                converted once: see `keras_maxdeeplab.hub.fetch_preset`), a
                local preset folder, or a keras-hub handle (`hf://org/name`, ...).
            load_weights: False builds the architecture alone.
            checkpoint_base_url: for a name, a mirror of deeplab2's checkpoint
                folder (default: `$KERAS_MAXDEEPLAB_CHECKPOINT_URL`, else
                deeplab2's own).
            **kwargs: constructor overrides, e.g. `image_shape=(1025, 1025, 3)`
                (the weights do not depend on the input size) or `dtype`.

        Raises:
            ValueError: an unknown name (the known ones are listed), a preset
                whose weights are nowhere to be had (offline with nothing
                cached: the message names the places tried), a corrupt
                download, missing or unreadable files, or a preset of another
                model.

        Example:
        >>> backbone = MaXDeepLabBackbone.from_preset("max_deeplab_s_imagenet")
        >>> features = backbone(images)  # [B, 641, 641, 3] in [-1, 1]
        """
        from keras_maxdeeplab.hub import load_backbone  # hub sits above the models.

        return load_backbone(cls, super().from_preset, preset, load_weights, kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_shape": self.image_shape,
                "num_blocks": self.num_blocks,
                "backbone_type": self.backbone_type,
                "stem_width_multiplier": self.stem_width_multiplier,
                "backbone_width_multiplier": self.backbone_width_multiplier,
                "backbone_layer_multiplier": self.backbone_layer_multiplier,
                "use_axial_beyond_stride": self.use_axial_beyond_stride,
                "backbone_use_transformer_beyond_stride": (
                    self.backbone_use_transformer_beyond_stride
                ),
                "extra_decoder_use_transformer_beyond_stride": (
                    self.extra_decoder_use_transformer_beyond_stride
                ),
                "backbone_decoder_num_stacks": self.backbone_decoder_num_stacks,
                "extra_decoder_num_stacks": self.extra_decoder_num_stacks,
                "backbone_decoder_blocks_per_stage": self.backbone_decoder_blocks_per_stage,
                "extra_decoder_blocks_per_stage": self.extra_decoder_blocks_per_stage,
                "num_mask_slots": self.num_mask_slots,
                "memory_channels": self.memory_channels,
                "base_transformer_expansion": self.base_transformer_expansion,
                "global_feed_forward_network_channels": (self.global_feed_forward_network_channels),
                "dual_path_feed_forward_network_channels": (
                    self.dual_path_feed_forward_network_channels
                ),
                "attention_bottleneck_expansion": self.attention_bottleneck_expansion,
                "axial_key_expansion": self.axial_key_expansion,
                "axial_value_expansion": self.axial_value_expansion,
                "drop_path_keep_prob": self.drop_path_keep_prob,
                "drop_path_beyond_stride": self.drop_path_beyond_stride,
                "drop_path_schedule": self.drop_path_schedule,
            }
        )
        return config


def _apply_group(group, features, memory):
    """Runs a `BlockGroup`; only groups with dual-path transformers touch the memory."""
    if group.has_transformer:
        return group(features, memory)
    return group(features), memory


def stage_layout(
    num_blocks,
    backbone_type,
    stem_width_multiplier,
    backbone_width_multiplier,
    backbone_layer_multiplier,
):
    """deeplab2's stage plan: per stage 1-5 its filters, block count, stride
    and input stride, and the first stage built by a `BlockGroup` (stage 1 is
    the stem for `resnet_beta`)."""
    total_strides = [1, 2, 4, 8, 16]
    strides = [2] * 5
    block_counts = [3] + [int(n * backbone_layer_multiplier) for n in num_blocks]
    filters = []
    for index, stride in enumerate(total_strides):
        multiplier = stem_width_multiplier
        if not (backbone_type == "wider_resnet" and index == 0):
            multiplier = backbone_width_multiplier
        filters.append(int(round(stride * 32 * multiplier)))
    first_stage = 1
    if backbone_type == "wider_resnet":
        first_stage = 0
        strides[0] = 1
        total_strides[0] = 2
    return filters, block_counts, strides, total_strides, first_stage


def apply_stem(images, backbone_type, stem_width_multiplier, dtype):
    """The stem: Inception-style for `resnet_beta` (S), one stride-2 conv for
    `wider_resnet` (L). `[B, H, W, 3]` -> `[B, H/2, W/2, C]`."""
    if backbone_type == "resnet_beta":
        stem = InceptionStem(stem_width_multiplier, dtype=dtype, name="stem")
    else:
        stem = Conv2DSame(
            int(round(64 * stem_width_multiplier)), 3, strides=2, dtype=dtype, name="stem"
        )
    return stem(images)


def apply_encoder(
    images,
    memory,
    num_blocks,
    backbone_type,
    stem_width_multiplier,
    backbone_width_multiplier,
    backbone_layer_multiplier,
    use_transformer_beyond_stride,
    base_transformer_expansion,
    group_options,
):
    """Stem and stages 1-5 down to stride 16 (the memory path alongside).

    Returns `({"stage1".."stage5" (pre-activation), "res1".."res5" (ReLU)}, memory)`.
    """
    filters, block_counts, strides, total_strides, first_stage = stage_layout(
        num_blocks,
        backbone_type,
        stem_width_multiplier,
        backbone_width_multiplier,
        backbone_layer_multiplier,
    )
    endpoints = {}
    x = apply_stem(images, backbone_type, stem_width_multiplier, group_options["dtype"])
    endpoints["stage1"], endpoints["res1"] = x, ops.relu(x)
    for index in range(first_stage, 5):
        group = BlockGroup(
            filters[index],
            block_counts[index],
            original_resnet_stride=strides[index],
            original_resnet_input_stride=total_strides[index],
            use_transformer_beyond_stride=use_transformer_beyond_stride,
            transformer_expansion=base_transformer_expansion * total_strides[index] / 16.0,
            name=f"stage{index + 1}",
            **group_options,
        )
        x, memory = _apply_group(group, x, memory)
        endpoints[f"stage{index + 1}"], endpoints[f"res{index + 1}"] = x, ops.relu(x)
    return endpoints, memory


def apply_hourglass_decoder(
    endpoints,
    memory,
    image_shape,
    width_multiplier,
    stacks,
    blocks_per_stage,
    use_transformer_beyond_stride,
    base_transformer_expansion,
    group_options,
):
    """The hourglass decoder, stride 16 -> 4 (-> 16 -> 4 for each more stack),
    fusing the encoder's stride-2/4/8 features on the way up.

    `stacks`, `blocks_per_stage` and `use_transformer_beyond_stride` are
    `(backbone decoder, extra decoder)` pairs: the first stacks belong to the
    backbone (L); the rest, and S's extra stride-32 group, are deeplab2's
    "extra" decoder.

    Returns `({"feature_panoptic", "feature_semantic", "backbone_output"}, memory)`.
    """
    backbone_decoder_num_stacks, extra_decoder_num_stacks = stacks
    backbone_decoder_blocks_per_stage, extra_decoder_blocks_per_stage = blocks_per_stage
    (
        backbone_use_transformer_beyond_stride,
        extra_decoder_use_transformer_beyond_stride,
    ) = use_transformer_beyond_stride
    filters = int(round(16 * 32 * width_multiplier))  # stage 5's width
    height, width = image_shape[:2]
    x = endpoints["stage5"]
    in_backbone = backbone_decoder_num_stacks > 0
    backbone_output = None
    if not in_backbone:
        backbone_output = endpoints["res5"]
        group = BlockGroup(
            filters,
            extra_decoder_blocks_per_stage,
            original_resnet_stride=1,
            original_resnet_input_stride=32,
            use_transformer_beyond_stride=extra_decoder_use_transformer_beyond_stride,
            transformer_expansion=base_transformer_expansion,
            name="stage5_extra",
            **group_options,
        )
        x, memory = _apply_group(group, x, memory)
    stride_to_features = {
        2: [endpoints["stage1"]],
        4: [endpoints["stage2"]],
        8: [endpoints["stage3"]],
        16: [x],
    }
    total_stacks = backbone_decoder_num_stacks + extra_decoder_num_stacks
    high_resolution_outputs = []
    stack, stride, going_up, stage = 0, OUTPUT_STRIDE, False, 0
    while stack < total_stacks or stride > HIGH_RESOLUTION_OUTPUT_STRIDE:
        stage += 1
        stride = stride * 2 if going_up else stride // 2
        if stride == OUTPUT_STRIDE:
            stack += 1
            going_up = False
            input_stride = 32
        else:
            input_stride = stride
        channels = int(round(input_stride * 64 * width_multiplier))
        suffix = "" if in_backbone else "_extra"
        fuse = ResizedFuse(
            (height - 1) // stride + 1,
            (width - 1) // stride + 1,
            channels,
            dtype=group_options["dtype"],
            name=f"decoder_stage{stage}{suffix}_resized_fuse",
        )
        x = fuse([x] + stride_to_features[stride][-2:])
        decoder_options = dict(
            filters=int(input_stride * 64 * width_multiplier // 4),
            original_resnet_stride=1,
            original_resnet_input_stride=input_stride,
            transformer_expansion=base_transformer_expansion * stride / 16.0,
            **group_options,
        )
        if in_backbone:
            group = BlockGroup(
                num_blocks=backbone_decoder_blocks_per_stage,
                use_transformer_beyond_stride=backbone_use_transformer_beyond_stride,
                name=f"decoder_stage{stage}",
                **decoder_options,
            )
            x, memory = _apply_group(group, x, memory)
        if stride == OUTPUT_STRIDE and stack == backbone_decoder_num_stacks and in_backbone:
            backbone_output = ops.relu(x)
            in_backbone = False
        if not in_backbone:
            group = BlockGroup(
                num_blocks=extra_decoder_blocks_per_stage,
                use_transformer_beyond_stride=extra_decoder_use_transformer_beyond_stride,
                name=f"decoder_stage{stage}_extra",
                **decoder_options,
            )
            x, memory = _apply_group(group, x, memory)
        stride_to_features[stride].append(x)
        if stride == HIGH_RESOLUTION_OUTPUT_STRIDE:
            high_resolution_outputs.append(ops.relu(x))
            going_up = True
    if extra_decoder_num_stacks:
        feature_semantic = high_resolution_outputs[backbone_decoder_num_stacks]
    else:
        feature_semantic = backbone_output
    outputs = {
        "feature_panoptic": high_resolution_outputs[-1],
        "feature_semantic": feature_semantic,
        "backbone_output": backbone_output,
    }
    return outputs, memory
