"""KMaXDeepLab: the panoptic segmentation task (kMaX transformer decoder + heads)."""

import keras
from keras_hub.src.utils.python_utils import classproperty

from keras_maxdeeplab.layers.convolutions import Conv1D
from keras_maxdeeplab.layers.dual_path_transformer import MemoryFeature
from keras_maxdeeplab.layers.heads import MaskPredictor
from keras_maxdeeplab.layers.heads import PredictionHead
from keras_maxdeeplab.layers.heads import SemanticDecoder
from keras_maxdeeplab.layers.kmeans_cross_attention import KMeansTransformerBlock
from keras_maxdeeplab.losses.kmax_deeplab_loss import AUXILIARY_OUTPUTS
from keras_maxdeeplab.losses.kmax_deeplab_loss import PER_OUTPUT_TERMS
from keras_maxdeeplab.losses.kmax_deeplab_loss import KMaXDeepLabLoss
from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab_backbone import KMaXDeepLabBackbone
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import listed_kmax_presets
from keras_maxdeeplab.models.max_deeplab.input_checks import check_images
from keras_maxdeeplab.models.panoptic_task import PanopticTask
from keras_maxdeeplab.models.panoptic_task import check_postprocess_options
from keras_maxdeeplab.models.panoptic_task import mark_weightless_layers_built
from keras_maxdeeplab.models.panoptic_task import resolve_categories
from keras_maxdeeplab.postprocessing.panoptic import MASKWISE_POSTPROCESS_OPTIONS

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
# What each k-means block's auxiliary predictor gives the trainer loss.
AUXILIARY_KEYS = (
    "pixel_space_mask_logits",
    "pixel_space_normalized_feature",
    "transformer_class_logits",
)


# deeplab2's kMaX COCO schedule: `compile`'s defaults for `PanopticTask.compile`.
# deeplab2's kMaX-DeepLab COCO solver options (AdamW: decoupled weight decay 0.05).
KMAX_TRAINING_SCHEDULE = {
    "learning_rate": 5e-4,
    "training_steps": 150_000,
    "warmup_steps": 5000,
    "weight_decay_rate": 0.05,
}


class _TrainingGraph:
    """The network with the auxiliary predictions as an extra output (built
    on first use). A plain object: Keras neither tracks nor saves the model
    inside (it shares the task's layers)."""

    def __init__(self):
        self.model = None


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
class KMaXDeepLab(PanopticTask):
    """kMaX-DeepLab: panoptic segmentation with k-means mask transformers.

    Wraps a `KMaXDeepLabBackbone` (pixel encoder + pixel decoder) with
    deeplab2's kMaX transformer decoder and heads:
    * learned cluster centers `[N, 256]`, updated by `KMeansTransformerBlock`s
      on the pixel decoder's stride-32, 16 and 8 features (each block's
      auxiliary predictor assigns every pixel to its argmax cluster);
    * class and mask embedding projections (Conv1D + BN + exact GeLU) of the
      final centers;
    * the final `MaskPredictor` (GeLU) on `decoder_output` (stride 4; the
      stem's stride for a 5-stage pixel decoder, deeplab2's Cityscapes models);
    * the auxiliary semantic decoder (ASPP on the pre-activation `stage5`,
      res3/res2 fusion, GeLU) and head, trained by the auxiliary semantic
      loss; without the decoder (Cityscapes) the head reads `stage5` itself.

    Class layout (deeplab2): the semantic head's channel c is dataset class c
    (0 = void); the class head's channel k < C-1 is class k + 1 and C - 1 is
    "no object".

    Args:
        backbone: a `KMaXDeepLabBackbone`.
        num_classes: int, dataset classes including void; defaults to
            `len(categories) + 1` (134 for COCO).
        categories: the dataset's COCO-style categories (`id`, `name`,
            `isthing`); default COCO panoptic's 133. Predictions come back in
            these ids and names; the thing/stuff split drives the loss and
            post-processing.
        postprocess_options: overrides (by key) of deeplab2's kMaX maskwise
            post-processing, `MASKWISE_POSTPROCESS_OPTIONS`, used by
            `predict_panoptic`.
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
        use_auxiliary_semantic_decoder: bool, the semantic head reads the
            semantic decoder's stride-4 features (COCO, ADE20K) rather than
            `stage5` at stride 32 (deeplab2's Cityscapes models).
        preprocessor: optional preprocessor.

    Inputs: `[B, H, W, 3]` images normalised to [-1, 1] at the backbone's
    size. Outputs: a dict of `pixel_space_mask_logits` `[B, H/4, W/4, N]`,
    `transformer_class_logits` `[B, N, num_classes]`,
    `pixel_space_normalized_feature` `[B, H/4, W/4, D]` and `semantic_logits`
    `[B, H/4, W/4, num_classes]` (H/4 meaning (H - 1) / 4 + 1; the mask
    logits and pixel features at H/2 with a 5-stage ResNet pixel decoder,
    the semantic logits at H/32 without the semantic decoder).
    `intermediate_outputs` gives every block's centers and auxiliary outputs.
    Called with `training=True` (as `fit` does) the dict also holds
    `auxiliary_outputs`, the blocks' predictions for the trainer loss
    (`outputs_with_auxiliary`).

    Training: `compile()` (deeplab2's kMaX loss and learning-rate recipe),
    then `fit` on `(images, y_true)` as `MaXDeepLab`. Inference:
    `predict_panoptic(images)`.

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
        num_classes=None,
        categories=None,
        postprocess_options=None,
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
        use_auxiliary_semantic_decoder=True,
        preprocessor=None,
        **kwargs,
    ):
        categories, num_classes = resolve_categories(
            categories, num_classes, "KMaXDeepLab categories"
        )
        check_postprocess_options(postprocess_options, MASKWISE_POSTPROCESS_OPTIONS)
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
        if use_auxiliary_semantic_head and use_auxiliary_semantic_decoder:
            self.semantic_decoder = SemanticDecoder(
                aspp_channels,
                decoder_channels,
                low_level_channels,
                atrous_rates,
                activation="gelu",
                dtype=dtype,
                name="semantic_decoder",
            )
        if use_auxiliary_semantic_head:
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
            semantic = features["stage5"]
            if self.semantic_decoder is not None:
                semantic = self.semantic_decoder([semantic, features["res3"], features["res2"]])
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
        self.categories = categories
        self.postprocess_options = {**MASKWISE_POSTPROCESS_OPTIONS, **(postprocess_options or {})}
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
        self.use_auxiliary_semantic_decoder = use_auxiliary_semantic_decoder
        mark_weightless_layers_built(self)

    def __call__(self, inputs, *args, **kwargs):
        check_images(inputs, self.backbone.image_shape)
        return super().__call__(inputs, *args, **kwargs)

    post_processing_method = "maskwise"
    default_postprocess_options = MASKWISE_POSTPROCESS_OPTIONS

    def call(self, inputs, training=None, mask=None, **kwargs):
        # deeplab2 makes the auxiliary predictions a training output only.
        if training:
            return self.outputs_with_auxiliary(inputs, training=True)
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def outputs_with_auxiliary(self, images, training=False):
        """The output dict plus `auxiliary_outputs`: per k-means block, in call
        order, its auxiliary prediction (`pixel_space_mask_logits`
        `[B, h, w, N]` and `pixel_space_normalized_feature` `[B, h, w, D]` at
        the block's stride, `transformer_class_logits` `[B, N, num_classes]`).
        `KMaXDeepLabLoss` resizes them to stride 4 (aligned corners), as
        deeplab2's `_prepare_auxiliary_results`.

        Example:
        >>> outputs = model.outputs_with_auxiliary(images)
        >>> len(outputs["auxiliary_outputs"])  # 6
        """
        holder = getattr(self, "_training_graph", None)
        if holder is None:
            holder = self._training_graph = _TrainingGraph()
        if holder.model is None:
            outputs = {
                key[len("output/") :]: value
                for key, value in self._intermediates.items()
                if key.startswith("output/")
            }
            outputs[AUXILIARY_OUTPUTS] = [
                {key: self._intermediates[f"{prefix}/aux/{key}"] for key in AUXILIARY_KEYS}
                for prefix in (
                    f"transformer_decoder/{name}"
                    for name in transformer_block_names(self.transformer_num_blocks)
                )
            ]
            holder.model = keras.Model(self.input, outputs)
        return holder.model(images, training=training)

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics=None,
        instance_discrimination_sample_k=4096,
        **kwargs,
    ):
        """Configures training with deeplab2's kMaX-DeepLab COCO recipe by default.

        As `MaXDeepLab.compile` (Adam, `learning_rate` with linear warm-up and
        polynomial decay, `backbone_learning_rate_multiplier` on the pixel
        encoder; the same keyword arguments), with kMaX's recipe
        `KMAX_TRAINING_SCHEDULE` (5e-4, 150k steps, 5k warm-up, deeplab2's
        AdamW: the kernels' decoupled weight decay `weight_decay_rate=0.05`) and
        `loss="auto"`: a `KMaXDeepLabLoss` for this model's classes (semantic
        1.0, PQ-style 3.0, mask-id 0.3, instance discrimination 1.0, with
        `instance_discrimination_sample_k` pixels drawn per prediction, at
        most the stride-4 pixel count) over the final and the 6 auxiliary
        predictions; every term is reported as a metric. `evaluate` runs
        deeplab2's evaluator loss: the final prediction only.

        Example:
        >>> model.compile(training_steps=20_000, instance_discrimination_sample_k=64)
        >>> model.fit(dataset)  # (images, y_true dict) batches
        """
        if loss == "auto":
            height, width = self._intermediates["output/pixel_space_mask_logits"].shape[1:3]
            if not 0 < instance_discrimination_sample_k <= height * width:
                raise ValueError(
                    f"instance_discrimination_sample_k={instance_discrimination_sample_k} must "
                    f"be in 1..{height * width}, the stride-4 pixel count at this input size."
                )
            loss = KMaXDeepLabLoss(
                instance_discrimination_sample_k=instance_discrimination_sample_k,
                num_classes=self.num_classes,
                thing_class_ids=self.thing_class_ids,
            )
        super().compile(optimizer, loss, metrics, **{**KMAX_TRAINING_SCHEDULE, **kwargs})

    def _loss_term_names(self, loss):
        terms = list(PER_OUTPUT_TERMS) + ["semantic_loss"]
        for index in range(sum(self.transformer_num_blocks)):
            terms += [f"aux_{index}{term}" for term in PER_OUTPUT_TERMS]
        return terms

    def _pretrained_variables(self):
        # deeplab2 scales the pixel encoder's rate, not the pixel decoder's.
        weights = self.backbone.trainable_weights
        return [v for v in weights if not v.path.startswith("pixel_decoder/")]

    @classproperty
    def presets(cls):
        """kMaX-DeepLab's presets, `{name: {"metadata": {...}, "handle": "hf://..."}}`:
        deeplab2's COCO and ADE20K models (`KMAX_DEEPLAB_PRESETS`)."""
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
                checkpoints), `categories` (a new dataset's COCO-style
                categories: every weight is kept but the class heads, which
                start afresh, for fine-tuning) or constructor overrides
                (`dtype`, `image_shape`).

        Raises:
            ValueError: an unknown name (the known ones are listed), one of
                deeplab2's kMaX checkpoints not available yet (with the
                reason, e.g. a Cityscapes model), a MaX-DeepLab preset, or
                weights nowhere to be had, corrupt or unreadable.

        Example:
        >>> model = KMaXDeepLab.from_preset("kmax_r50_coco")
        >>> tuned = KMaXDeepLab.from_preset("kmax_r50_coco", categories=my_categories)
        >>> model(images)["pixel_space_mask_logits"].shape  # images [1, 1281, 1281, 3]
        (1, 321, 321, 128)
        """
        from keras_maxdeeplab.hub import load_task  # hub sits above the models.

        return load_task(cls, super().from_preset, preset, load_weights, kwargs)

    def _transformer_class_heads(self):
        # The final predictor's class head and each k-means block's auxiliary one.
        predictors = [self.predictor] + [
            block.auxiliary_clustering_predictor for block in self.transformer_blocks
        ]
        return [predictor.transformer_class_head for predictor in predictors]

    def intermediate_outputs(self, images, training=False):
        """Every intermediate result, keyed as deeplab2's reference arrays.

        Keys: `encoder/stage1..5`, `encoder/res1..5`,
        `pixel_decoder/decoder_stage1..3` (`..4` with a 5-stage pixel
        decoder), `pixel_decoder/decoder_output`;
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
                "categories": self.categories,
                "postprocess_options": self.postprocess_options,
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
                "use_auxiliary_semantic_decoder": self.use_auxiliary_semantic_decoder,
            }
        )
        return config
