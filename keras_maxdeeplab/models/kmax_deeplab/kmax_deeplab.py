"""KMaXDeepLab: the panoptic segmentation task (kMaX transformer decoder + heads)."""

import keras
from keras_hub.models import ImageSegmenter
from keras_hub.src.utils.python_utils import classproperty

from keras_maxdeeplab.layers.convolutions import Conv1D
from keras_maxdeeplab.layers.dual_path_transformer import MemoryFeature
from keras_maxdeeplab.layers.heads import MaskPredictor
from keras_maxdeeplab.layers.heads import PredictionHead
from keras_maxdeeplab.layers.heads import SemanticDecoder
from keras_maxdeeplab.layers.kmeans_cross_attention import KMeansTransformerBlock
from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab_backbone import KMaXDeepLabBackbone
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import listed_kmax_presets
from keras_maxdeeplab.models.max_deeplab.input_checks import check_images

_COCO_HEADS = KMAX_DEEPLAB_HEAD_CONFIGS["kmax_r50"]
# deeplab2 hard-codes the width of the cluster centers and their projections.
CLUSTER_CENTER_CHANNELS = 256
# The transformer decoder's strides, coarsest first, and their decoder endpoints.
DECODER_STRIDES = ((32, "decoder_stage1"), (16, "decoder_stage2"), (8, "decoder_stage3"))
OUTPUT_KEYS = (
    "semantic_logits",
    "pixel_space_normalized_feature",
    "pixel_space_mask_logits",
    "transformer_class_logits",
)


def transformer_block_names(transformer_num_blocks):
    """`blockK_osS_J` of every k-means block, in call order (deeplab2's naming).

    Example:
    >>> transformer_block_names((2, 2, 2))[:3]
    ['block0_os32_0', 'block1_os32_1', 'block2_os16_0']
    """
    names = []
    for (stride, _), count in zip(DECODER_STRIDES, transformer_num_blocks):
        for j in range(count):
            names.append(f"block{len(names)}_os{stride}_{j}")
    return names


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class KMaXDeepLab(ImageSegmenter):
    """kMaX-DeepLab: panoptic segmentation with k-means mask transformers.

    Wraps a `KMaXDeepLabBackbone` (pixel encoder + pixel decoder) with
    deeplab2's kMaX transformer decoder and heads:
    * learned cluster centers `[N, 256]`, updated by `KMeansTransformerBlock`s
      on the pixel decoder's stride-32, 16 and 8 features (each block's
      auxiliary predictor assigns every pixel to its argmax cluster);
    * class and mask embedding projections (Conv1D + BN + exact GeLU) of the
      final centers;
    * the final `MaskPredictor` (GeLU) on `decoder_output` (stride 4);
    * the auxiliary semantic decoder (ASPP on the pre-activation `stage5`,
      res3/res2 fusion, GeLU) and head, trained by the auxiliary semantic loss.

    Class layout (deeplab2): the semantic head's channel c is dataset class c
    (0 = void); the class head's channel k < C-1 is class k + 1 and C - 1 is
    "no object".

    Args:
        backbone: a `KMaXDeepLabBackbone`.
        num_classes: int, dataset classes including void (134 for COCO).
        num_mask_slots: N, the number of cluster centers.
        transformer_num_blocks: k-means blocks at strides 32, 16, 8.
        transformer_expansion: block filters = `int(128 * it)`.
        feed_forward_network_channels: the blocks' memory FFN width.
        transformer_drop_path_keep_prob: drop path of the blocks' updates
            (deeplab2: 0.8 for COCO).
        pixel_space_head_channels, pixel_space_output_channels,
        semantic_head_channels, aspp_channels, decoder_channels,
        low_level_channels, atrous_rates: head widths (deeplab2's proto).
        use_auxiliary_semantic_head: bool, build the semantic branch.
        preprocessor: optional preprocessor.

    Inputs: `[B, H, W, 3]` images normalised to [-1, 1] at the backbone's
    size. Outputs: a dict of `pixel_space_mask_logits` `[B, H/4, W/4, N]`,
    `transformer_class_logits` `[B, N, num_classes]`,
    `pixel_space_normalized_feature` `[B, H/4, W/4, D]` and `semantic_logits`
    `[B, H/4, W/4, num_classes]` (H/4 meaning (H - 1) / 4 + 1).
    `intermediate_outputs` gives every block's centers and auxiliary outputs.

    Example:
    >>> backbone = KMaXDeepLabBackbone(image_shape=(65, 65, 3),
    ...     **KMAX_DEEPLAB_CONFIGS["kmax_r50"])
    >>> model = KMaXDeepLab(backbone, **KMAX_DEEPLAB_HEAD_CONFIGS["kmax_r50"])
    >>> model(keras.random.uniform((1, 65, 65, 3), -1, 1))["transformer_class_logits"].shape
    (1, 128, 134)
    """

    backbone_cls = KMaXDeepLabBackbone

    def __init__(
        self,
        backbone,
        num_classes=134,
        num_mask_slots=_COCO_HEADS["num_mask_slots"],
        transformer_num_blocks=_COCO_HEADS["transformer_num_blocks"],
        transformer_expansion=_COCO_HEADS["transformer_expansion"],
        feed_forward_network_channels=_COCO_HEADS["feed_forward_network_channels"],
        transformer_drop_path_keep_prob=_COCO_HEADS["transformer_drop_path_keep_prob"],
        pixel_space_head_channels=_COCO_HEADS["pixel_space_head_channels"],
        pixel_space_output_channels=_COCO_HEADS["pixel_space_output_channels"],
        semantic_head_channels=_COCO_HEADS["semantic_head_channels"],
        aspp_channels=_COCO_HEADS["aspp_channels"],
        decoder_channels=_COCO_HEADS["decoder_channels"],
        low_level_channels=_COCO_HEADS["low_level_channels"],
        atrous_rates=_COCO_HEADS["atrous_rates"],
        use_auxiliary_semantic_head=True,
        preprocessor=None,
        **kwargs,
    ):
        if len(transformer_num_blocks) != len(DECODER_STRIDES):
            raise ValueError(
                f"transformer_num_blocks needs 3 entries (strides 32, 16, 8); got "
                f"{transformer_num_blocks}."
            )
        dtype = backbone.dtype_policy
        block_names = transformer_block_names(transformer_num_blocks)
        # === Layers ===
        self.cluster_centers = MemoryFeature(
            num_mask_slots, CLUSTER_CENTER_CHANNELS, dtype=dtype, name="cluster_centers"
        )
        self.transformer_blocks = [
            KMeansTransformerBlock(
                int(128 * transformer_expansion),
                feed_forward_network_channels,
                pixel_space_head_channels,
                pixel_space_output_channels,
                num_classes,
                drop_path_keep_prob=transformer_drop_path_keep_prob,
                dtype=dtype,
                name=f"kmax_transformer_decoder_{name.split('_', 1)[1]}",
            )
            for name in block_names
        ]
        self.class_embedding_projection = Conv1D(
            CLUSTER_CENTER_CHANNELS,
            activation="gelu",
            dtype=dtype,
            name="class_embedding_projection",
        )
        self.mask_embedding_projection = Conv1D(
            CLUSTER_CENTER_CHANNELS,
            activation="gelu",
            dtype=dtype,
            name="mask_embedding_projection",
        )
        self.predictor = MaskPredictor(
            pixel_space_head_channels,
            pixel_space_output_channels,
            num_classes,
            activation="gelu",
            dtype=dtype,
            name="predictor",
        )
        self.semantic_decoder = None
        self.semantic_head = None
        if use_auxiliary_semantic_head:
            self.semantic_decoder = SemanticDecoder(
                aspp_channels,
                decoder_channels,
                low_level_channels,
                atrous_rates,
                activation="gelu",
                dtype=dtype,
                name="semantic_decoder",
            )
            self.semantic_head = PredictionHead(
                semantic_head_channels,
                num_classes,
                activation="gelu",
                dtype=dtype,
                name="semantic_head",
            )

        # === Functional model ===
        images = backbone.input
        features = backbone(images)
        intermediates = {}
        for key, value in features.items():
            group = "pixel_decoder" if key.startswith("decoder") else "encoder"
            intermediates[f"{group}/{key}"] = value
        centers = self.cluster_centers(images)
        blocks = iter(zip(block_names, self.transformer_blocks))
        for (_, feature_key), count in zip(DECODER_STRIDES, transformer_num_blocks):
            for _ in range(count):
                name, block = next(blocks)
                centers, auxiliary = block(features[feature_key], centers)
                prefix = f"transformer_decoder/{name}"
                intermediates[f"{prefix}/cluster_centers"] = centers
                intermediates[f"{prefix}/kmeans_assignment"] = auxiliary.pop("kmeans_assignment")
                for key, value in auxiliary.items():
                    intermediates[f"{prefix}/aux/{key}"] = value
        class_feature = self.class_embedding_projection(centers)
        mask_feature = self.mask_embedding_projection(centers)
        intermediates["transformer_decoder/transformer_class_feature"] = class_feature
        intermediates["transformer_decoder/transformer_mask_feature"] = mask_feature
        outputs = {}
        if self.semantic_head is not None:
            semantic = self.semantic_decoder(
                [features["stage5"], features["res3"], features["res2"]]
            )
            outputs["semantic_logits"] = self.semantic_head(semantic)
        outputs.update(self.predictor(features["decoder_output"], class_feature, mask_feature))
        for key, value in outputs.items():
            intermediates[f"output/{key}"] = value
        super().__init__(inputs=images, outputs=outputs, compile=False, **kwargs)
        # Symbolic tensors of the graph above (not layers: nothing is tracked twice).
        self._intermediates = intermediates

        # === Config ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.num_classes = num_classes
        self.num_mask_slots = num_mask_slots
        self.transformer_num_blocks = tuple(transformer_num_blocks)
        self.transformer_expansion = transformer_expansion
        self.feed_forward_network_channels = feed_forward_network_channels
        self.transformer_drop_path_keep_prob = transformer_drop_path_keep_prob
        self.pixel_space_head_channels = pixel_space_head_channels
        self.pixel_space_output_channels = pixel_space_output_channels
        self.semantic_head_channels = semantic_head_channels
        self.aspp_channels = aspp_channels
        self.decoder_channels = decoder_channels
        self.low_level_channels = tuple(low_level_channels)
        self.atrous_rates = tuple(atrous_rates)
        self.use_auxiliary_semantic_head = use_auxiliary_semantic_head

    def __call__(self, inputs, *args, **kwargs):
        check_images(inputs, self.backbone.image_shape)
        return super().__call__(inputs, *args, **kwargs)

    @classproperty
    def presets(cls):
        """kMaX-DeepLab's presets, `{name: {"metadata": {...}, "handle": "hf://..."}}`:
        deeplab2's COCO models whose backbones are ported (`KMAX_DEEPLAB_PRESETS`)."""
        return listed_kmax_presets()

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Loads a kMaX-DeepLab model from a preset.

        Args:
            preset: a name of `KMaXDeepLab.presets` (built from this
                package's configs; weights fetched as for
                `MaXDeepLab.from_preset`, deeplab2's archive being converted
                by `load_kmax_checkpoint`), a local preset folder, or a
                keras-hub handle (`hf://org/name`, ...).
            load_weights: False builds the architecture alone.
            **kwargs: `checkpoint_base_url` (a mirror of deeplab2's
                checkpoints) or constructor overrides (`dtype`, `image_shape`).

        Raises:
            ValueError: an unknown name (the known ones are listed), one of
                deeplab2's kMaX checkpoints not available yet (with the
                reason, e.g. a ConvNeXt backbone), a MaX-DeepLab preset, or
                weights nowhere to be had, corrupt or unreadable.

        Example:
        >>> model = KMaXDeepLab.from_preset("kmax_r50_coco")
        >>> model(images)["pixel_space_mask_logits"].shape  # images [1, 1281, 1281, 3]
        (1, 321, 321, 128)
        """
        from keras_maxdeeplab.hub import load_task  # hub sits above the models.

        for key in ("categories", "num_classes"):
            if key in kwargs:
                raise ValueError(
                    f"{key}= is not supported by KMaXDeepLab.from_preset: the kMaX presets "
                    "keep deeplab2's COCO classes (134 with void)."
                )
        return load_task(cls, super().from_preset, preset, load_weights, kwargs)

    def intermediate_outputs(self, images, training=False):
        """Every intermediate result, keyed as deeplab2's reference arrays.

        Keys: `encoder/stage1..5`, `encoder/res1..5`,
        `pixel_decoder/decoder_stage1..3`, `pixel_decoder/decoder_output`;
        per k-means block `transformer_decoder/blockK_osS_J/cluster_centers`
        (after the block), `.../kmeans_assignment` `[B, h, w]` int32 and
        `.../aux/{pixel_space_mask_logits, pixel_space_normalized_feature,
        transformer_class_logits}` (the block's auxiliary prediction, made
        from the centers entering it); `transformer_decoder/transformer_class_feature`,
        `transformer_decoder/transformer_mask_feature`; `output/<output key>`.

        Example:
        >>> arrays = model.intermediate_outputs(images)
        >>> arrays["transformer_decoder/block0_os32_0/kmeans_assignment"].shape  # (B, 3, 3)
        """
        check_images(images, self.backbone.image_shape)
        graph = keras.Model(self.input, self._intermediates)
        return graph(images, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "num_mask_slots": self.num_mask_slots,
                "transformer_num_blocks": self.transformer_num_blocks,
                "transformer_expansion": self.transformer_expansion,
                "feed_forward_network_channels": self.feed_forward_network_channels,
                "transformer_drop_path_keep_prob": self.transformer_drop_path_keep_prob,
                "pixel_space_head_channels": self.pixel_space_head_channels,
                "pixel_space_output_channels": self.pixel_space_output_channels,
                "semantic_head_channels": self.semantic_head_channels,
                "aspp_channels": self.aspp_channels,
                "decoder_channels": self.decoder_channels,
                "low_level_channels": self.low_level_channels,
                "atrous_rates": self.atrous_rates,
                "use_auxiliary_semantic_head": self.use_auxiliary_semantic_head,
            }
        )
        return config
