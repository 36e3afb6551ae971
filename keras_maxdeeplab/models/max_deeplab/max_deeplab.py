"""MaXDeepLab: the panoptic segmentation task (backbone + MaX-DeepLab heads)."""

import keras
from keras_hub.src.utils.python_utils import classproperty

from keras_maxdeeplab.layers.batch_norm import batch_normalization
from keras_maxdeeplab.layers.convolutions import Conv1D
from keras_maxdeeplab.layers.heads import L2Normalize
from keras_maxdeeplab.layers.heads import MaskLogits
from keras_maxdeeplab.layers.heads import PredictionHead
from keras_maxdeeplab.layers.heads import SemanticDecoder
from keras_maxdeeplab.layers.heads import TransformerClassHead
from keras_maxdeeplab.losses.max_deeplab_loss import TERMS
from keras_maxdeeplab.losses.max_deeplab_loss import MaXDeepLabLoss
from keras_maxdeeplab.models.max_deeplab.input_checks import check_architecture
from keras_maxdeeplab.models.max_deeplab.input_checks import check_images
from keras_maxdeeplab.models.max_deeplab.max_deeplab_backbone import MaXDeepLabBackbone
from keras_maxdeeplab.models.max_deeplab.max_deeplab_configs import MAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import (
    MaXDeepLabImageConverter,
)
from keras_maxdeeplab.models.max_deeplab.max_deeplab_preprocessor import MaXDeepLabPreprocessor
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import listed_presets
from keras_maxdeeplab.models.panoptic_task import PanopticTask
from keras_maxdeeplab.models.panoptic_task import check_postprocess_options
from keras_maxdeeplab.models.panoptic_task import mark_weightless_layers_built
from keras_maxdeeplab.models.panoptic_task import resolve_categories
from keras_maxdeeplab.optimizers import is_pretrained_backbone_variable
from keras_maxdeeplab.postprocessing.panoptic import DEFAULT_POSTPROCESS_OPTIONS

# deeplab2's COCO heads: the defaults of the head arguments.
_COCO_HEADS = MAX_DEEPLAB_HEAD_CONFIGS["max_deeplab_s"]


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class MaXDeepLab(PanopticTask):
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
        num_classes: int, dataset classes including void; defaults to
            `len(categories) + 1` (134 for COCO).
        categories: the dataset's COCO-style categories (`id`, `name`,
            `isthing`, optional `color`); contiguous class k is the k-th by
            id. Default: COCO panoptic's 133. Predictions come back in these
            ids and names, and the thing/stuff split drives the loss and
            post-processing.
        postprocess_options: thresholds and area limits of deeplab2's
            post-processor used by `predict_panoptic` and the default PQ
            metric (`DEFAULT_POSTPROCESS_OPTIONS` override by key).
        pixel_space_head_channels, pixel_space_output_channels: 256 / 128.
        semantic_head_channels, aspp_channels, decoder_channels: 256.
        low_level_channels: projections of res3 and res2 (64, 32).
        atrous_rates: ASPP rates (6, 12, 18).
        The head defaults are deeplab2's COCO heads,
        `MAX_DEEPLAB_HEAD_CONFIGS["max_deeplab_s"]` (a task built on a bare
        backbone preset gets them).
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
        num_classes=None,
        categories=None,
        postprocess_options=None,
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
        categories, num_classes = resolve_categories(
            categories, num_classes, "MaXDeepLab categories"
        )
        check_architecture(
            pixel_space_head_channels=pixel_space_head_channels,
            pixel_space_output_channels=pixel_space_output_channels,
            semantic_head_channels=semantic_head_channels,
            aspp_channels=aspp_channels,
            decoder_channels=decoder_channels,
            low_level_channels=tuple(low_level_channels),
            atrous_rates=tuple(atrous_rates),
        )
        check_postprocess_options(postprocess_options, DEFAULT_POSTPROCESS_OPTIONS)
        dtype = backbone.dtype_policy
        # === Layers ===
        self.pixel_space_head = PredictionHead(
            pixel_space_head_channels,
            pixel_space_output_channels,
            dtype=dtype,
            name="pixel_space_head",
        )
        self.pixel_space_feature_batch_norm = batch_normalization(
            dtype=dtype, name="pixel_space_feature_batch_norm"
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
        # Compile once the backbone is attached: the default recipe needs its variables.
        compile_now = kwargs.pop("compile", True)
        super().__init__(inputs=images, outputs=outputs, compile=False, **kwargs)

        # === Config ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.num_classes = num_classes
        self.categories = categories
        self.postprocess_options = {**DEFAULT_POSTPROCESS_OPTIONS, **(postprocess_options or {})}
        self.pixel_space_head_channels = pixel_space_head_channels
        self.pixel_space_output_channels = pixel_space_output_channels
        self.semantic_head_channels = semantic_head_channels
        self.aspp_channels = aspp_channels
        self.decoder_channels = decoder_channels
        self.low_level_channels = tuple(low_level_channels)
        self.atrous_rates = tuple(atrous_rates)
        self.use_auxiliary_semantic_head = use_auxiliary_semantic_head
        mark_weightless_layers_built(self)
        if compile_now:
            self.compile()

    def __call__(self, inputs, *args, **kwargs):
        check_images(inputs, self.backbone.image_shape)
        return super().__call__(inputs, *args, **kwargs)

    @classproperty
    def presets(cls):
        """MaX-DeepLab's presets, `{name: {"metadata": {...}, "handle": "hf://..."}}`.

        COCO panoptic models, and ImageNet-1K backbones whose heads start fresh.
        """
        return listed_presets()

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Loads a MaX-DeepLab model from a preset.

        Args:
            preset: a name of `MaXDeepLab.presets` (its architecture,
                preprocessing and classes are built from this package's
                configs; its weights come from the local cache, else its
                Hugging Face repository once published, else deeplab2's
                published checkpoint, downloaded and converted once: see
                `keras_maxdeeplab.hub.fetch_preset`), a local preset folder,
                or a keras-hub handle (`hf://org/name`, ...).
            load_weights: False builds the architecture alone.
            checkpoint_base_url: for a name, a mirror of deeplab2's checkpoint
                folder (default: `$KERAS_MAXDEEPLAB_CHECKPOINT_URL`, else
                deeplab2's own).
            categories: fine-tune on another dataset: its COCO-style category
                list. The transformer class head and the semantic head's last
                convolution are re-initialised for these classes; every other
                weight (backbone, pixel-space head, mask head, semantic
                decoder) is kept.
            num_classes: optional; must equal `len(categories) + 1`.
            image_shape: `(h, w, 3)` to run (or fine-tune) at another input
                size than the preset's; the image converter follows it unless
                a `preprocessor` is given.
            **kwargs: other constructor overrides (`postprocess_options`,
                `dtype`, `preprocessor`, ...).

        Raises:
            ValueError: an unknown name (the known ones are listed), a preset
                whose weights are nowhere to be had (offline with nothing
                cached: the message names the places tried), a corrupt
                download, missing or unreadable files, a preset of another
                model, or `num_classes` disagreeing with `categories`.

        Example:
        >>> model = MaXDeepLab.from_preset("max_deeplab_s_coco")
        >>> result = model.predict_panoptic(image)[0]
        >>> model = MaXDeepLab.from_preset("max_deeplab_s_coco", categories=my_categories,
        ...                                image_shape=(641, 641, 3))
        """
        from keras_maxdeeplab.hub import load_task  # hub sits above the models.

        if "image_shape" in kwargs and "preprocessor" not in kwargs:
            # A preset folder's saved converter would still resize to the preset's size.
            converter = MaXDeepLabImageConverter(image_size=tuple(kwargs["image_shape"][:2]))
            kwargs["preprocessor"] = MaXDeepLabPreprocessor(converter)
        return load_task(cls, super().from_preset, preset, load_weights, kwargs)

    def _transformer_class_heads(self):
        return [self.transformer_class_head]

    default_postprocess_options = DEFAULT_POSTPROCESS_OPTIONS

    def _default_loss(self):
        # deeplab2's MaX-DeepLab weights 3.0 / 0.3 / 1.0 / 1.0.
        return MaXDeepLabLoss(num_classes=self.num_classes, thing_class_ids=self.thing_class_ids)

    def _loss_term_names(self, loss):
        return TERMS

    def _pretrained_variables(self):
        return [v for v in self.backbone.trainable_weights if is_pretrained_backbone_variable(v)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "categories": self.categories,
                "postprocess_options": self.postprocess_options,
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
