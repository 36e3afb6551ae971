"""MaXDeepLab: the panoptic segmentation task (backbone + MaX-DeepLab heads)."""

import keras
from keras_hub.models import ImageSegmenter

from keras_maxdeeplab.layers.convolutions import Conv1D
from keras_maxdeeplab.layers.heads import L2Normalize
from keras_maxdeeplab.layers.heads import MaskLogits
from keras_maxdeeplab.layers.heads import PredictionHead
from keras_maxdeeplab.layers.heads import SemanticDecoder
from keras_maxdeeplab.layers.heads import TransformerClassHead
from keras_maxdeeplab.models.max_deeplab.input_checks import check_images
from keras_maxdeeplab.models.max_deeplab.max_deeplab_backbone import MaXDeepLabBackbone
from keras_maxdeeplab.models.max_deeplab.max_deeplab_preprocessor import MaXDeepLabPreprocessor


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class MaXDeepLab(ImageSegmenter):
    """MaX-DeepLab: end-to-end panoptic segmentation with mask transformers.

    Wraps a `MaXDeepLabBackbone` with deeplab2's MaX-DeepLab heads:
    * pixel-space head: 5x5 separable conv + 1x1 -> BN -> L2 normalisation,
      the pixel embedding `pixel_space_normalized_feature`;
    * memory-side mask head (Conv1D + BN) and class head (Conv1D with bias +
      constant void prior on the last, "no object" channel);
    * mask logits: embedding . mask kernel + scalar BN;
    * the auxiliary semantic decoder (ASPP + res3/res2 fusion, only when
      `feature_semantic` is coarser than `feature_panoptic`, i.e. MaX-S) and
      semantic head, trained by the auxiliary semantic loss.

    Class layout (deeplab2): the semantic head's channel c is dataset class c
    (0 = void); the class head's channel k < C-1 is class k + 1 and channel
    C - 1 is "no object".

    Args:
        backbone: a `MaXDeepLabBackbone`.
        num_classes: int, dataset classes including void (134 for COCO).
        pixel_space_head_channels, pixel_space_output_channels: 256 / 128.
        semantic_head_channels, aspp_channels, decoder_channels: 256.
        low_level_channels: projections of res3 and res2 (64, 32).
        atrous_rates: ASPP rates (6, 12, 18).
        use_auxiliary_semantic_head: bool, build the semantic branch.
        preprocessor: optional `MaXDeepLabPreprocessor`.

    Inputs: `[B, H, W, 3]` float images normalised to [-1, 1] at the
    backbone's image size. Outputs: a dict with
    `pixel_space_mask_logits` `[B, H/4, W/4, N]`, `transformer_class_logits`
    `[B, N, num_classes]`, `pixel_space_normalized_feature` `[B, H/4, W/4, 128]`
    and `semantic_logits` `[B, H/4, W/4, num_classes]` (H/4 meaning (H-1)/4+1).

    Example:
    >>> backbone = MaXDeepLabBackbone(image_shape=(65, 65, 3),
    ...     **MAX_DEEPLAB_CONFIGS["max_deeplab_s"])
    >>> model = MaXDeepLab(backbone, **MAX_DEEPLAB_HEAD_CONFIGS["max_deeplab_s"])
    >>> outputs = model(keras.random.uniform((1, 65, 65, 3), -1, 1))
    >>> outputs["transformer_class_logits"].shape  # (1, 128, 134)
    """

    backbone_cls = MaXDeepLabBackbone
    preprocessor_cls = MaXDeepLabPreprocessor

    def __init__(
        self,
        backbone,
        num_classes=134,
        pixel_space_head_channels=256,
        pixel_space_output_channels=128,
        semantic_head_channels=256,
        aspp_channels=256,
        decoder_channels=256,
        low_level_channels=(64, 32),
        atrous_rates=(6, 12, 18),
        use_auxiliary_semantic_head=True,
        preprocessor=None,
        **kwargs,
    ):
        if num_classes < 2:
            raise ValueError(f"num_classes counts void plus at least one class; got {num_classes}.")
        dtype = backbone.dtype_policy
        # === Layers ===
        self.pixel_space_head = PredictionHead(
            pixel_space_head_channels,
            pixel_space_output_channels,
            dtype=dtype,
            name="pixel_space_head",
        )
        self.pixel_space_feature_batch_norm = keras.layers.BatchNormalization(
            axis=-1, momentum=0.99, epsilon=1e-3, dtype=dtype, name="pixel_space_feature_batch_norm"
        )
        self.l2_normalize = L2Normalize(dtype=dtype, name="pixel_space_normalize")
        self.transformer_mask_head = Conv1D(
            pixel_space_output_channels, dtype=dtype, name="transformer_mask_head"
        )
        self.transformer_class_head = TransformerClassHead(
            num_classes, dtype=dtype, name="transformer_class_head"
        )
        self.mask_logits = MaskLogits(dtype=dtype, name="pixel_space_mask_logits")
        self.semantic_decoder = None
        self.semantic_head = None
        if use_auxiliary_semantic_head:
            semantic_shape = backbone.output["feature_semantic"].shape
            panoptic_shape = backbone.output["feature_panoptic"].shape
            if tuple(semantic_shape[1:3]) != tuple(panoptic_shape[1:3]):
                self.semantic_decoder = SemanticDecoder(
                    aspp_channels,
                    decoder_channels,
                    low_level_channels,
                    atrous_rates,
                    dtype=dtype,
                    name="semantic_decoder",
                )
            self.semantic_head = PredictionHead(
                semantic_head_channels, num_classes, dtype=dtype, name="semantic_head"
            )

        # === Functional model ===
        images = backbone.input
        features = backbone(images)
        outputs = {}
        if self.semantic_head is not None:
            semantic_features = features["feature_semantic"]
            if self.semantic_decoder is not None:
                semantic_features = self.semantic_decoder(
                    [semantic_features, features["res3"], features["res2"]]
                )
            outputs["semantic_logits"] = self.semantic_head(semantic_features)
        pixel_feature = self.pixel_space_head(features["feature_panoptic"])
        pixel_feature = self.pixel_space_feature_batch_norm(pixel_feature)
        pixel_feature = self.l2_normalize(pixel_feature)
        outputs["pixel_space_normalized_feature"] = pixel_feature
        outputs["transformer_class_logits"] = self.transformer_class_head(
            features["transformer_class_feature"]
        )
        mask_kernel = self.transformer_mask_head(features["transformer_mask_feature"])
        outputs["pixel_space_mask_logits"] = self.mask_logits(pixel_feature, mask_kernel)
        super().__init__(inputs=images, outputs=outputs, **kwargs)

        # === Config ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.num_classes = num_classes
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

    def compile(self, optimizer="auto", loss=None, metrics=None, **kwargs):
        """Configures training; `optimizer="auto"` is deeplab2's Adam (lr 1e-3).

        keras-hub's `ImageSegmenter.compile` defaults to a semantic
        cross-entropy, which is wrong for MaX-DeepLab's dict of mask/class
        outputs, so no loss is set by default here.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(1e-3)
        keras.Model.compile(self, optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
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
