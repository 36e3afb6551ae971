"""KMaXDeepLabBackbone: kMaX-DeepLab's pixel encoder (ResNet-50, Axial-ResNet-50
or ConvNeXt) and pixel decoder."""

import keras
import numpy as np
from keras_hub.models import Backbone
from keras_hub.src.utils.python_utils import classproperty

from keras_maxdeeplab.layers.blocks import BlockGroup
from keras_maxdeeplab.layers.blocks import InceptionStem
from keras_maxdeeplab.layers.convolutions import Conv2DSame
from keras_maxdeeplab.layers.convolutions import activate
from keras_maxdeeplab.layers.convolutions import check_activation
from keras_maxdeeplab.layers.convnext import ConvNeXtBlock
from keras_maxdeeplab.layers.convnext import ConvNeXtDownsampling
from keras_maxdeeplab.layers.kmax_pixel_decoder import KMaXPixelDecoder
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import listed_kmax_presets
from keras_maxdeeplab.models.max_deeplab.input_checks import check_images
from keras_maxdeeplab.models.max_deeplab.max_deeplab_backbone import stage_layout

OUTPUT_STRIDE = 32
BACKBONE_TYPES = ("resnet", "resnet_beta", "convnext")


def check_kmax_image_shape(image_shape):
    """Validates `(H, W, 3)` with H, W of the form 32k + 1 (65, 129, ..., 1281)."""
    image_shape = tuple(image_shape)
    if len(image_shape) != 3 or image_shape[-1] != 3:
        raise ValueError(f"image_shape must be (height, width, 3); got {image_shape}.")
    for size in image_shape[:2]:
        if size is None or not 33 <= int(size) <= 4097 or (int(size) - 1) % OUTPUT_STRIDE:
            raise ValueError(
                "kMaX-DeepLab (output stride 32, align-corners resizing) needs a fixed image "
                f"size of the form 32k + 1 (65, 129, ..., 1281); got image_shape={image_shape}."
            )
    return (int(image_shape[0]), int(image_shape[1]), 3)


def resnet_endpoints(
    images,
    num_blocks,
    backbone_type,
    stem_width_multiplier,
    backbone_width_multiplier,
    backbone_layer_multiplier,
    use_axial_beyond_stride,
    activation,
    drop_path_keep_prob,
    dtype=None,
):
    """deeplab2's kMaX ResNet-50 / Axial-ResNet-50 encoder on `images`:
    endpoints `stage1..5` (pre-activation) and `res1..5` (activated).

    Example:
    >>> endpoints = resnet_endpoints(keras.Input((65, 65, 3)), (3, 4, 6, 3), "resnet",
    ...     1.0, 1.0, 1.0, 0, "relu", 1.0)
    >>> endpoints["stage5"].shape
    (None, 3, 3, 2048)
    """
    filters, block_counts, strides, total_strides, first_stage = stage_layout(
        num_blocks,
        backbone_type,
        stem_width_multiplier,
        backbone_width_multiplier,
        backbone_layer_multiplier,
    )
    if backbone_type == "resnet":
        stem = Conv2DSame(
            int(round(64 * stem_width_multiplier)), 7, strides=2, dtype=dtype, name="stem"
        )
    else:
        stem = InceptionStem(stem_width_multiplier, activation, dtype=dtype, name="stem")
    x = stem(images)
    endpoints = {"stage1": x, "res1": activate(x, activation)}
    for index in range(first_stage, 5):
        x = BlockGroup(
            filters[index],
            block_counts[index],
            original_resnet_stride=strides[index],
            original_resnet_input_stride=total_strides[index],
            output_stride=OUTPUT_STRIDE,
            backbone_type=backbone_type,
            use_axial_beyond_stride=use_axial_beyond_stride,
            use_transformer_beyond_stride=0,
            drop_path_keep_prob=drop_path_keep_prob,
            drop_path_beyond_stride=16,
            drop_path_schedule="linear",
            activation=activation,
            dtype=dtype,
            name=f"stage{index + 1}",
        )(x)
        endpoints[f"stage{index + 1}"] = x
        endpoints[f"res{index + 1}"] = activate(x, activation)
    return endpoints


def convnext_endpoints(images, depths, dims, drop_path_keep_prob, dtype=None):
    """deeplab2's ConvNeXt encoder (`zero_padding_for_downstream=True`) on
    `images`: endpoints `stage1` (the stem's output), `stage2..5` (the
    stages') and `res1..5` (their exact GeLU).

    Drop path keep probabilities fall linearly over all blocks, from 1.0 at
    the first to `drop_path_keep_prob` at the last (deeplab2 computes them
    with `tf.linspace` in float32; so does this).

    Example:
    >>> endpoints = convnext_endpoints(keras.Input((65, 65, 3)), (3, 3, 9, 3), (96, 192, 384, 768), 0.7)
    >>> endpoints["stage5"].shape
    (None, 3, 3, 768)
    """
    keep_probs = np.linspace(1.0, drop_path_keep_prob, sum(depths), dtype=np.float32)
    x = images
    endpoints = {}
    for stage, (depth, filters) in enumerate(zip(depths, dims)):
        name = "stem" if stage == 0 else f"downsampling_block_{stage - 1}"
        x = ConvNeXtDownsampling(filters, stem=stage == 0, dtype=dtype, name=name)(x)
        if stage == 0:
            endpoints["stage1"] = x
            endpoints["res1"] = activate(x, "gelu")
        for block in range(depth):
            keep_prob = float(keep_probs[sum(depths[:stage]) + block])
            x = ConvNeXtBlock(
                filters, keep_prob, dtype=dtype, name=f"convnext_block_{stage}_{block}"
            )(x)
        endpoints[f"stage{stage + 2}"] = x
        endpoints[f"res{stage + 2}"] = activate(x, "gelu")
    return endpoints


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class KMaXDeepLabBackbone(Backbone):
    """The kMaX-DeepLab pixel encoder and pixel decoder (deeplab2
    `kmax_resnet50` / `kmax_axial_resnet50` / `kmax_convnext_*`).

    Encoder, `backbone_type="resnet"`: deeplab2's ResNet-50 as kMaX builds
    it: a 7x7 stride-2 `Conv2DSame` + BN stem (no activation, no max-pool),
    then four stages of bottleneck blocks whose first block strides in its
    3x3 conv; output stride 32. `backbone_type="resnet_beta"` with
    `use_axial_beyond_stride=16` and `activation="gelu"`: Axial-ResNet-50
    (MaX-DeepLab-S's encoder with exact GeLU: Inception stem, axial blocks
    from stride 16, the stride-32 one striding by subsampling).
    `backbone_type="convnext"` with `convnext_dims`: ConvNeXt with
    `num_blocks` blocks per stage (`convnext_endpoints`; T: (3, 3, 9, 3) x
    (96, 192, 384, 768), S: (3, 3, 27, 3) x the same, B: (3, 3, 27, 3) x
    (128, 256, 512, 1024), L: (3, 3, 27, 3) x (192, 384, 768, 1536)). Decoder:
    `KMaXPixelDecoder` on the pre-activation encoder endpoints `stage5..stage2`.

    Inputs are images normalised to [-1, 1] (`x / 127.5 - 1`) of a fixed size
    `32k + 1`.

    Args:
        image_shape: `(H, W, 3)`, H and W of the form 32k + 1.
        num_blocks: blocks of stages 2-5 before `backbone_layer_multiplier`.
        backbone_type: "resnet", "resnet_beta" or "convnext".
        stem_width_multiplier, backbone_width_multiplier,
        backbone_layer_multiplier: deeplab2's shrinking knobs (ResNets).
        convnext_dims: ConvNeXt's channels of stages 2-5 (ConvNeXt only).
        use_axial_beyond_stride: axial blocks from this stride (0: none).
        activation: the encoder's "relu" or "gelu" (exact).
        drop_path_keep_prob: encoder stochastic depth (ResNets: linear
            schedule from stride 16, 1.0 for ResNet-50, 0.8 for
            Axial-ResNet-50; ConvNeXt: linear over all blocks).
        pixel_decoder_dims, pixel_decoder_num_blocks,
        pixel_decoder_block_types: `KMaXPixelDecoder`'s 4 stages (stride
            32 to 4), or 5 (deeplab2's Cityscapes models: down to the
            stem's stride, 2 for the ResNets, 4 for ConvNeXt).

    Outputs: a dict of endpoints: `stage1..5` (pre-activation), `res1..5`
    (activated), `decoder_stage1..3` (strides 32, 16, 8; with 5 decoder
    stages also `decoder_stage4`, stride 4) and `decoder_output` (stride 4,
    or the stem's with 5 stages), `[B, (H - 1) / s + 1, (W - 1) / s + 1, C]`.

    Example:
    >>> backbone = KMaXDeepLabBackbone(image_shape=(65, 65, 3),
    ...     **KMAX_DEEPLAB_CONFIGS["kmax_r50"])
    >>> backbone(keras.random.uniform((1, 65, 65, 3), -1, 1))["decoder_output"].shape
    (1, 17, 17, 256)
    """

    def __init__(
        self,
        image_shape,
        num_blocks,
        backbone_type,
        pixel_decoder_dims,
        pixel_decoder_num_blocks,
        pixel_decoder_block_types,
        stem_width_multiplier=1.0,
        backbone_width_multiplier=1.0,
        backbone_layer_multiplier=1.0,
        use_axial_beyond_stride=0,
        activation="relu",
        drop_path_keep_prob=1.0,
        convnext_dims=None,
        dtype=None,
        **kwargs,
    ):
        image_shape = check_kmax_image_shape(image_shape)
        check_activation(activation)
        if backbone_type not in BACKBONE_TYPES:
            raise ValueError(
                f"backbone_type must be one of {BACKBONE_TYPES}; got {backbone_type!r}."
            )
        if len(num_blocks) != 4:
            raise ValueError(f"num_blocks needs 4 entries (stages 2-5); got {num_blocks}.")
        if (backbone_type == "convnext") != (convnext_dims is not None):
            raise ValueError(
                "convnext_dims (4 channel counts) is needed by, and only by, "
                f"backbone_type='convnext'; got backbone_type={backbone_type!r}, "
                f"convnext_dims={convnext_dims}."
            )
        if convnext_dims is not None and len(convnext_dims) != 4:
            raise ValueError(f"convnext_dims needs 4 entries (stages 2-5); got {convnext_dims}.")

        # === Functional model ===
        images = keras.Input(shape=image_shape, name="images")
        if backbone_type == "convnext":
            endpoints = convnext_endpoints(
                images, num_blocks, convnext_dims, drop_path_keep_prob, dtype
            )
        else:
            endpoints = resnet_endpoints(
                images,
                num_blocks,
                backbone_type,
                stem_width_multiplier,
                backbone_width_multiplier,
                backbone_layer_multiplier,
                use_axial_beyond_stride,
                activation,
                drop_path_keep_prob,
                dtype,
            )
        # deeplab2 feeds its decoder stage i the encoder's stage{5 - i}.
        num_stages = len(pixel_decoder_dims)
        decoded = KMaXPixelDecoder(
            pixel_decoder_dims,
            pixel_decoder_num_blocks,
            pixel_decoder_block_types,
            dtype=dtype,
            name="pixel_decoder",
        )([endpoints[f"stage{5 - i}"] for i in range(num_stages)])
        for i, value in enumerate(decoded[:-1]):
            endpoints[f"decoder_stage{i + 1}"] = value
        endpoints["decoder_output"] = decoded[-1]

        super().__init__(inputs=images, outputs=endpoints, dtype=dtype, **kwargs)

        # === Config ===
        self.image_shape = image_shape
        self.num_blocks = tuple(num_blocks)
        self.backbone_type = backbone_type
        self.stem_width_multiplier = stem_width_multiplier
        self.backbone_width_multiplier = backbone_width_multiplier
        self.backbone_layer_multiplier = backbone_layer_multiplier
        self.use_axial_beyond_stride = use_axial_beyond_stride
        self.activation = activation
        self.drop_path_keep_prob = drop_path_keep_prob
        self.convnext_dims = None if convnext_dims is None else tuple(convnext_dims)
        self.pixel_decoder_dims = tuple(pixel_decoder_dims)
        self.pixel_decoder_num_blocks = tuple(pixel_decoder_num_blocks)
        self.pixel_decoder_block_types = tuple(pixel_decoder_block_types)

    def __call__(self, inputs, *args, **kwargs):
        check_images(inputs, self.image_shape)
        return super().__call__(inputs, *args, **kwargs)

    @classproperty
    def presets(cls):
        """The kMaX-DeepLab presets whose backbone this loads (`KMAX_DEEPLAB_PRESETS`)."""
        return listed_kmax_presets()

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Loads the backbone (pixel encoder + pixel decoder) of a kMaX-DeepLab preset.

        Args:
            preset: a name of `KMaXDeepLabBackbone.presets` (fetched as
                `KMaXDeepLab.from_preset` does), a local preset folder, or
                a keras-hub handle.
            load_weights: False builds the architecture alone.
            checkpoint_base_url: for a name, a mirror of deeplab2's checkpoint folder.
            **kwargs: constructor overrides (`image_shape`, `dtype`).

        Example:
        >>> backbone = KMaXDeepLabBackbone.from_preset("kmax_r50_coco")
        >>> backbone(images)["decoder_output"].shape  # images [1, 1281, 1281, 3]
        (1, 321, 321, 256)
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
                "activation": self.activation,
                "drop_path_keep_prob": self.drop_path_keep_prob,
                "convnext_dims": self.convnext_dims,
                "pixel_decoder_dims": self.pixel_decoder_dims,
                "pixel_decoder_num_blocks": self.pixel_decoder_num_blocks,
                "pixel_decoder_block_types": self.pixel_decoder_block_types,
            }
        )
        return config
