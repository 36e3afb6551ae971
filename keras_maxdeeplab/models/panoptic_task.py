"""Training and inference shared by the mask-transformer tasks (MaX-DeepLab, kMaX-DeepLab).

Both are deeplab2 "MaX-DeepLab family" models: one loss dict of per-sample
terms, deeplab2's Adam recipe, and a post-processor turning the raw outputs
into panoptic maps. `PanopticTask` holds what is the same computation; the
subclasses say which loss, which post-processor and which variables count
as the ImageNet-pretrained backbone.
"""

import keras
from keras_hub.models import ImageSegmenter

from keras_maxdeeplab import backend_seam
from keras_maxdeeplab.coco.categories import COCO_PANOPTIC_CATEGORIES
from keras_maxdeeplab.coco.categories import check_categories
from keras_maxdeeplab.coco.categories import prediction_label_divisor
from keras_maxdeeplab.coco.categories import thing_class_ids
from keras_maxdeeplab.evaluation.metric import PanopticQuality
from keras_maxdeeplab.models.max_deeplab.input_checks import check_raw_images
from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import (
    MaXDeepLabImageConverter,
)
from keras_maxdeeplab.models.max_deeplab.max_deeplab_export import PanopticPostProcessor
from keras_maxdeeplab.models.max_deeplab.max_deeplab_export import export_panoptic
from keras_maxdeeplab.optimizers import MaXDeepLabAdam
from keras_maxdeeplab.optimizers import WarmUpPolynomialDecay
from keras_maxdeeplab.postprocessing.segments import panoptic_results


class _PanopticPipelines:
    """`predict_panoptic`'s compiled pipelines, by post-processing options:
    each a `backend_seam.BatchPredictor` of its Keras model (`.model`). A
    plain object: Keras neither tracks nor saves the models inside (they
    share the task's weights)."""

    def __init__(self):
        self.by_options = {}


def mark_weightless_layers_built(model):
    """Marks `model`'s unbuilt layers that hold no weights as built.

    Keras' JAX `predict_on_batch` calls the whole model eagerly, on every
    call, while any of its layers is unbuilt. A task holds weightless layers
    its network never calls (the preprocessor: images are converted before
    the network), which made each call run op by op (MaX-DeepLab-S at 641:
    7.3 s instead of 1.5 s in `predict_panoptic`).
    """
    for layer in model._flatten_layers():
        if not layer.built and not layer.weights:
            layer.built = True


def check_postprocess_options(options, defaults, message="Unknown postprocess_options"):
    """Raises a ValueError naming the keys of `options` that `defaults` lacks.

    Example:
    >>> check_postprocess_options({"area": 1}, DEFAULT_POSTPROCESS_OPTIONS)  # ValueError
    """
    unknown = sorted(set(options or {}) - set(defaults))
    if unknown:
        raise ValueError(f"{message} {unknown}; expected keys among {sorted(defaults)}.")


# The outputs deeplab2's post-processors read.
POSTPROCESSED_OUTPUTS = ("pixel_space_mask_logits", "transformer_class_logits")


def resolve_categories(categories, num_classes, source):
    """`(categories, num_classes)` of a task: COCO panoptic's 133 by default,
    checked (`check_categories`); `num_classes` follows from them (+ void)
    and must agree when given.

    Example:
    >>> categories, num_classes = resolve_categories(None, None, "MaXDeepLab categories")
    >>> num_classes  # 134
    """
    categories = check_categories(
        COCO_PANOPTIC_CATEGORIES if categories is None else categories, source
    )
    if num_classes is None:
        num_classes = len(categories) + 1
    if num_classes != len(categories) + 1:
        raise ValueError(
            f"num_classes={num_classes} does not match {len(categories)} categories + void; "
            "pass the dataset's `categories` (num_classes then follows from them)."
        )
    return categories, num_classes


def _class_layout(categories):
    # What the class heads depend on: each channel's category id and thing flag.
    return [(c["id"], bool(c["isthing"])) for c in categories]


class PanopticTask(ImageSegmenter):
    """Base of `MaXDeepLab` and `KMaXDeepLab`: compile / loss / metrics and
    `predict_panoptic`.

    A subclass sets `post_processing_method` (deeplab2's post-processor of
    its outputs, a key of `POST_PROCESSORS`) and `default_postprocess_options`
    (that post-processor's keyword arguments and deeplab2's values) and
    implements `_default_loss()` (the `compile(loss="auto")` loss, whose
    `compute_terms(y_true, y_pred)` returns `[B]` terms and `total_loss`),
    `_loss_term_names(loss)` (the terms reported as metrics),
    `_pretrained_variables()` (what `backbone_learning_rate_multiplier`
    scales) and `_transformer_class_heads()` (the class heads of its
    transformer predictions, started afresh for new categories with the
    semantic head's last convolution). Instances carry `backbone`,
    `categories` and `postprocess_options`.
    """

    post_processing_method = "pixelwise"
    default_postprocess_options = {}

    @property
    def label_divisor(self):
        """The `D` of the predicted `panoptic_pred = class * D + instance`
        maps, whose thing instances are mask slots + 1: deeplab2's COCO 256,
        or its Cityscapes 1000 for models of 256 slots or more (Cityscapes
        kMaX-DeepLab). Ground truth stays at 256 (`LABEL_DIVISOR`).

        Example:
        >>> model.label_divisor  # a COCO model
        256
        """
        return prediction_label_divisor(self.output["transformer_class_logits"].shape[1])

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics=None,
        learning_rate=1e-3,
        training_steps=100_000,
        warmup_steps=5000,
        backbone_learning_rate_multiplier=0.1,
        weight_decay_rate=0.0,
        **kwargs,
    ):
        """Configures training with deeplab2's recipe by default.

        `optimizer="auto"`: Adam (`MaXDeepLabAdam`), `learning_rate` with
        `warmup_steps` of linear warm-up then polynomial decay (power 0.9) to 0
        at `training_steps`, `backbone_learning_rate_multiplier` on the
        ImageNet-pretrained backbone variables, and deeplab2's decoupled
        weight decay of the kernels at `weight_decay_rate` (none for
        MaX-DeepLab, as deeplab2). `metrics` may include
        `keras_maxdeeplab.evaluation.PanopticQuality` (targets then need
        `panoptic_gt`). `loss="auto"`: the model's deeplab2 loss for its
        classes; each term is reported as a metric. keras-hub's semantic
        cross-entropy default does not apply to these outputs.

        Example:
        >>> model.compile(learning_rate=1e-3, training_steps=20_000)
        >>> model.fit(dataset)  # (images, y_true dict) batches
        """
        jit_compile = kwargs.get("jit_compile", "auto")
        if optimizer == "auto":
            schedule = WarmUpPolynomialDecay(learning_rate, training_steps, warmup_steps)
            optimizer = MaXDeepLabAdam(
                schedule, backbone_learning_rate_multiplier, weight_decay_rate=weight_decay_rate
            )
            optimizer.set_multiplied_variables(self._pretrained_variables())
        if loss == "auto":
            loss = self._default_loss()
        # The attribute keeps MaXDeepLab's name: it is the loss of either task.
        self.max_deeplab_loss = loss
        self.loss_term_trackers = {}
        if loss is not None:
            self.loss_term_trackers = {
                term: keras.metrics.Mean(name=term) for term in self._loss_term_names(loss)
            }
        # Panoptic-quality metrics read the whole target and output dicts, so
        # they are updated here rather than by Keras' per-output metric logic.
        metrics = list(metrics or [])
        self.panoptic_quality_metrics = [m for m in metrics if isinstance(m, PanopticQuality)]
        metrics = [m for m in metrics if not isinstance(m, PanopticQuality)] or None
        if self.panoptic_quality_metrics:
            backend_seam.check_host_calls_compile(jit_compile, "PanopticQuality")
        keras.Model.compile(self, optimizer=optimizer, loss=None, metrics=metrics, **kwargs)
        if loss is not None:
            # Under TensorFlow's XLA the loss must avoid the host call to scipy's matcher.
            loss.jit_compile = backend_seam.host_call_jit_compile(
                loss.jit_compile, self.jit_compile, jit_compile
            )

    def _with_categories(self, categories=None, num_classes=None):
        """This model with class heads for `categories` (fine-tuning on new data).

        The backbone is shared, every class-independent head weight copied;
        the class heads (`_class_head_weights()`: the transformer's class
        heads and the semantic head's last convolution) are freshly
        initialised. Returns `self` when the class layout is the same (the
        same ids with the same thing flags: e.g. COCO's or ADE20K's own
        files, whose names, colours or extra fields may differ from the
        preset's); it then names its predictions by the given categories.
        """
        if categories is None:
            if num_classes in (None, self.num_classes):
                return self
            raise ValueError(
                f"num_classes={num_classes} differs from the preset's {self.num_classes}: pass "
                "the new dataset's `categories` (num_classes follows from them)."
            )
        checked = check_categories(categories, "categories")
        if _class_layout(checked) == _class_layout(self.categories):
            if num_classes in (None, self.num_classes):
                self.categories = checked
                return self
        config = self.get_config()
        for key in ("backbone", "preprocessor", "name", "categories", "num_classes"):
            config.pop(key)
        model = type(self)(
            self.backbone,
            categories=categories,
            num_classes=num_classes,
            preprocessor=self.preprocessor,
            **config,
        )
        skipped = {id(w) for w in model._class_head_weights() + self.backbone.weights}
        source = {w.path: w for w in self.weights}
        for weight in model.weights:
            if id(weight) not in skipped:
                weight.assign(source[weight.path])
        return model

    def _class_head_weights(self):
        """The weights that depend on the classes."""
        weights = [w for head in self._transformer_class_heads() for w in head.weights]
        if self.semantic_head is not None:
            weights += self.semantic_head.final_conv.weights
        return weights

    def _post_processor(self, image_size, options):
        """A layer from the output dict to `[B, H, W]` maps (`panoptic_pred`,
        `semantic_pred`, `instance_pred`, `semantic_scores`, ...)."""
        return PanopticPostProcessor(
            image_size,
            self.thing_class_ids,
            postprocess_options=options,
            method=self.post_processing_method,
            label_divisor=self.label_divisor,
        )

    def export(
        self,
        filepath,
        format="tf_saved_model",
        verbose=None,
        input_signature=None,
        input_size=None,
        input_dtype="uint8",
        postprocess=True,
        **postprocess_options,
    ):
        """Exports the whole panoptic pipeline, deeplab2's post-processor inside.

        The artifact takes `images` `[B, height, width, 3]` uint8 (any batch
        size; `input_size`, default the crop size), resizes and pads them as
        `MaXDeepLabImageConverter` does, runs the network and its deeplab2
        post-processor (pixelwise for MaX-DeepLab, maskwise for kMaX-DeepLab),
        and returns `panoptic_pred`,
        `semantic_pred`, `instance_pred` (int32), `instance_scores` and
        `semantic_scores` (float32), each `[B, height, width]`: the maps
        `predict_panoptic` returns for the same images. Running it needs
        only the format's runtime (TensorFlow, ONNX Runtime, OpenVINO,
        LiteRT, PyTorch); the README has a client for each.

        Args:
            filepath: a folder for `"tf_saved_model"`; else a file (given its
                format's ending, `.onnx`, `.tflite`, `.pt2`, `.xml`, when it
                lacks one). Written atomically.
            format: `"tf_saved_model"`, `"onnx"`, `"openvino"`, `"litert"` or
                `"torch"`, as far as the Keras backend in use can export it
                (`keras_maxdeeplab.backend_seam.export_formats()`); any other
                is refused with a ValueError saying which backend can.
            verbose: Keras' export messages.
            input_signature: must be None: the artifact's input is fixed by
                `input_size` and `input_dtype` (the batch size is free).
            input_size: `(height, width)` of the images the artifact takes
                (a camera's frames, say); default the crop size.
            input_dtype: `"uint8"` (default) or `"float32"` pixels 0..255
                (for a client that resizes images of several sizes itself,
                at `input_size` = the crop size); see `serving_model`.
            postprocess: False exports the network's raw outputs on the crop
                instead, for `postprocess_panoptic` (or, for kMaX-DeepLab,
                `postprocess_panoptic_maskwise`) outside the artifact.
            **postprocess_options: overrides of `self.postprocess_options`.

        Returns:
            the artifact's path.

        Example:
        >>> model.export("served/max_deeplab", format="tf_saved_model", input_size=(480, 640))
        >>> serve = tf.saved_model.load("served/max_deeplab").signatures["serving_default"]
        >>> serve(images=tf.zeros((2, 480, 640, 3), tf.uint8))["panoptic_pred"].shape  # (2, 480, 640)
        """
        if input_signature is not None:
            raise ValueError(
                "export fixes the artifact's input ([B, height, width, 3] images "
                "of input_dtype); pass input_size and input_dtype instead of input_signature."
            )
        return export_panoptic(
            self,
            filepath,
            format,
            input_size=input_size,
            input_dtype=input_dtype,
            postprocess=postprocess,
            verbose=bool(verbose),
            **postprocess_options,
        )

    def panoptic_quality(self, rules="coco"):
        """A streaming `PanopticQuality` metric for this model's classes and
        post-processing (deeplab2's maskwise one for kMaX-DeepLab).

        Example:
        >>> model.compile(metrics=[model.panoptic_quality()])
        >>> model.evaluate(dataset, return_dict=True)["panoptic_quality"]
        """
        return PanopticQuality(
            num_classes=self.num_classes,
            thing_class_ids=self.thing_class_ids,
            rules=rules,
            postprocess_options=self.postprocess_options,
            method=self.post_processing_method,
        )

    @property
    def thing_class_ids(self):
        """Contiguous class ids of the thing categories (COCO: 1..80)."""
        return thing_class_ids(self.categories)

    @property
    def image_converter(self):
        """The preprocessor's image converter; without a preprocessor, deeplab2's
        evaluation preprocessing at the backbone's image size."""
        if self.preprocessor is not None and self.preprocessor.image_converter is not None:
            return self.preprocessor.image_converter
        return MaXDeepLabImageConverter(image_size=tuple(self.backbone.image_shape[:2]))

    def predict_panoptic(self, images, batch_size=8, **postprocess_options):
        """Segments images of any size: preprocessing, model, deeplab2's
        post-processing, and the maps resized back to each image.

        The model and post-processor run as one compiled function per batch
        shape: compiled on the first call on JAX and TensorFlow; on PyTorch
        traced with `torch.export` once the eager calls at that shape have
        taken `backend_seam.TORCH_EXPORT_AFTER_SECONDS` (10 s), the same maps
        either way (`backend_seam.BatchPredictor`).

        Args:
            images: an `[H, W, 3]` image, a list of them (sizes may differ) or
                a `[B, H, W, 3]` batch; uint8 or float in 0..255. Anything
                else (16-bit, 0..1 floats, NaN pixels, grayscale, empty or
                degenerate sizes, a path) is refused with a ValueError saying
                what to do (`input_checks.check_raw_images`).
            batch_size: images per forward pass.
            **postprocess_options: overrides of `self.postprocess_options`.

        Returns:
            a list with one dict per image: `segmentation` `[H, W]` int32
            (0 = void, segments 1..K), `segments_info` (`id`, `label_id`,
            `category_id`, `label`, `isthing`, `score`, `area`,
            `panoptic_id`) in this model's dataset ids, and deeplab2's raw
            `panoptic_pred`, `semantic_pred`, `instance_pred` maps.

        Example:
        >>> result = model.predict_panoptic(image)[0]
        >>> [(s["label"], s["score"]) for s in result["segments_info"]]
        """
        converter = self.image_converter
        images = check_raw_images(images, converter.image_size)
        predict = self._panoptic_predictor({**self.postprocess_options, **postprocess_options})
        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = keras.ops.stack([converter(image) for image in chunk])
            results += panoptic_results(
                predict(batch),
                [keras.ops.shape(image)[:2] for image in chunk],
                self.categories,
                converter,
                self.label_divisor,
            )
        return results

    def _panoptic_pipeline(self, options):
        """This network and deeplab2's post-processor as one Keras model, whose
        `predict_on_batch` compiles both into one function (post-processing
        eagerly after the compiled network took a third of the time at 641
        on TensorFlow). Built once per post-processing options."""
        return self._panoptic_predictor(options).model

    def _panoptic_predictor(self, options):
        """The `backend_seam.BatchPredictor` of `_panoptic_pipeline(options)`
        (compiled on PyTorch too, once its eager calls have taken a while),
        built with the pipeline once per post-processing options."""
        cache = getattr(self, "_panoptic_pipelines", None)
        if cache is None:
            cache = self._panoptic_pipelines = _PanopticPipelines()
        check_postprocess_options(
            options, self.default_postprocess_options, "Unknown postprocess options"
        )
        key = (self.thing_class_ids, tuple(sorted(options.items())))
        if key not in cache.by_options:
            size = tuple(self.backbone.image_shape[:2])
            images = keras.Input((*size, 3), name="images")
            # The network up to the two outputs the post-processor reads: the
            # auxiliary semantic head and the pixel embedding are left out
            # (PyTorch runs eagerly and computed them too: MaX-DeepLab-S at
            # 641 took 6.4 s, now 5.6 s). Inputs already converted:
            # keras-hub's preprocessor is not applied.
            network = keras.Model(
                self.inputs, {key: self.output[key] for key in POSTPROCESSED_OUTPUTS}
            )
            maps = self._post_processor(size, options)(network(images, training=False))
            pipeline = keras.Model(images, maps)
            # Its layers are the task's (built at construction: see
            # `mark_weightless_layers_built`) and the post-processor.
            cache.by_options[key] = backend_seam.BatchPredictor(pipeline)
        return cache.by_options[key]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean over the batch of every loss term (NaN -> 0), summed, and
        divided by the replica count, as deeplab2's trainer.

        On TensorFlow under `tf.distribute` each replica computes this on its
        share of the global batch and the gradients are summed, so the
        division makes them the global batch mean's; Keras multiplies the
        reported loss back. The per-term metrics get the undivided means.
        On JAX the step is one program over the global batch (count 1).
        The loss is float32 under mixed precision. Compiled with `loss=None`,
        `evaluate` reports only the metrics (the loss reads 0), and training
        is refused as Keras refuses it.
        """
        if getattr(self, "max_deeplab_loss", None) is None:
            if not training and not self.losses:
                return keras.ops.zeros((), "float32")
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        terms = self.max_deeplab_loss.compute_terms(y, y_pred)
        total = 0.0
        for term, tracker in self.loss_term_trackers.items():
            if term not in terms:
                continue
            value = keras.ops.mean(terms[term])
            value = keras.ops.where(keras.ops.isnan(value), 0.0, value)
            tracker.update_state(value)
            total = total + value
        replicas = backend_seam.replicas_in_sync()
        return total / replicas if replicas > 1 else total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        for metric in getattr(self, "panoptic_quality_metrics", []):
            metric.update_state(y, y_pred)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def _prepare_batch(self, x, y, sample_weight):
        # keras-hub's PipelineModel converts `y` as one tensor; ours is a dict.
        data = self.preprocess_samples(x, y, sample_weight)
        return [
            None if part is None else keras.tree.map_structure(keras.ops.convert_to_tensor, part)
            for part in keras.utils.unpack_x_y_sample_weight(data)
        ]

    def make_train_function(self, force=False):
        # Adam's slot variables made now, eagerly, as Keras does itself under a
        # distribution strategy: otherwise TensorFlow makes each one while it
        # traces the first step, lifting it out of the graph (the tiny
        # MaX-DeepLab's 506 slots: 8.3 s there, 0.7 s eagerly).
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        return super().make_train_function(force)

    def train_on_batch(self, x, y=None, sample_weight=None, **kwargs):
        x, y, sample_weight = self._prepare_batch(x, y, sample_weight)
        return keras.Model.train_on_batch(self, x, y, sample_weight, **kwargs)

    def test_on_batch(self, x, y=None, sample_weight=None, **kwargs):
        x, y, sample_weight = self._prepare_batch(x, y, sample_weight)
        return keras.Model.test_on_batch(self, x, y, sample_weight, **kwargs)

    @property
    def metrics(self):
        return (
            super().metrics
            + list(getattr(self, "loss_term_trackers", {}).values())
            + list(getattr(self, "panoptic_quality_metrics", []))
        )
