"""Serving artifacts of the whole panoptic pipeline: crop-sized images in,
deeplab2's panoptic maps out, with the post-processor inside the graph.

`serving_model` wraps a `MaXDeepLab` into a Keras model that normalises
`[B, crop_h, crop_w, 3]` pixel values (0..255), runs the network and deeplab2's
post-processor (`postprocess_panoptic`, the same code `predict_panoptic`
runs); `export_panoptic` hands that model to Keras' exporters, one file or
folder per format, written atomically. The artifact's maps are at the crop
size: the client resizes and pads like `MaXDeepLabImageConverter` before, and
crops and resizes back after (the README shows both in NumPy).
"""

import os
import tempfile

import keras

from keras_maxdeeplab.atomic_files import write_folder_atomically
from keras_maxdeeplab.backend_seam import check_export_format
from keras_maxdeeplab.backend_seam import export_model
from keras_maxdeeplab.coco.categories import LABEL_DIVISOR
from keras_maxdeeplab.postprocessing.panoptic import postprocess_panoptic
from keras_maxdeeplab.postprocessing.panoptic import postprocess_panoptic_maskwise

# The post-processors a `PanopticPostProcessor` runs, by deeplab2's
# `transformer_post_processing` name (MaX-DeepLab: pixelwise, kMaX: maskwise).
POST_PROCESSORS = {"pixelwise": postprocess_panoptic, "maskwise": postprocess_panoptic_maskwise}

# Every format of `keras.Model.export`, in its order.
EXPORT_FORMATS = ("tf_saved_model", "onnx", "openvino", "litert", "torch")
# What a format writes: a folder, or a file with this ending (Keras' exporters
# require `.pt2` for torch; the others are conventions).
_ARTIFACT_SUFFIX = {
    "tf_saved_model": "",
    "onnx": ".onnx",
    "openvino": ".xml",
    "litert": ".tflite",
    "torch": ".pt2",
}
# The serving artifact's outputs, deeplab2's names.
SERVING_OUTPUTS = (
    "panoptic_pred",
    "semantic_pred",
    "instance_pred",
    "instance_scores",
    "semantic_scores",
)
INPUT_DTYPES = ("float32", "uint8")


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class PixelNormalization(keras.layers.Layer):
    """`x / 127.5 - 1` on 0..255 pixels (uint8 or float), in float32: the last
    step of `MaXDeepLabImageConverter`.

    Shapes: `[B, H, W, 3]` -> `[B, H, W, 3]` float32 in [-1, 1].

    Example:
    >>> PixelNormalization()(np.full((1, 65, 65, 3), 255, "uint8"))  # all 1.0
    """

    def call(self, images):
        return keras.ops.cast(images, "float32") / 127.5 - 1.0

    def compute_output_spec(self, images):
        return keras.KerasTensor(images.shape, "float32")


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class PanopticPostProcessor(keras.layers.Layer):
    """deeplab2's MaX-DeepLab post-processor as a layer (`postprocess_panoptic`).

    Args:
        image_size: `(crop_height, crop_width)`, the model's input size.
        thing_class_ids: contiguous ids of the thing classes.
        label_divisor: `panoptic = semantic * label_divisor + instance`.
        postprocess_options: thresholds and area limits
            (`DEFAULT_POSTPROCESS_OPTIONS` keys; `MASKWISE_POSTPROCESS_OPTIONS`
            ones for `"maskwise"`).
        method: `"pixelwise"` (`postprocess_panoptic`, MaX-DeepLab) or
            `"maskwise"` (`postprocess_panoptic_maskwise`, kMaX-DeepLab).

    Inputs: the `MaXDeepLab` output dict (`pixel_space_mask_logits`
    `[B, h, w, N]`, `transformer_class_logits` `[B, N, K]`). Outputs: a dict of
    `[B, crop_height, crop_width]` maps, `SERVING_OUTPUTS` (int32 ids, float32
    scores).

    Example:
    >>> layer = PanopticPostProcessor((65, 65), model.thing_class_ids,
    ...                               postprocess_options=model.postprocess_options)
    >>> layer(model(images))["panoptic_pred"].shape  # (B, 65, 65)
    """

    def __init__(
        self,
        image_size,
        thing_class_ids,
        label_divisor=LABEL_DIVISOR,
        postprocess_options=None,
        method="pixelwise",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if method not in POST_PROCESSORS:
            raise ValueError(
                f"Unknown post-processing method {method!r}; expected one of "
                f"{sorted(POST_PROCESSORS)}."
            )
        self.method = method
        self.image_size = tuple(int(s) for s in image_size)
        self.thing_class_ids = tuple(int(i) for i in thing_class_ids)
        self.label_divisor = int(label_divisor)
        self.postprocess_options = dict(postprocess_options or {})

    def call(self, outputs):
        return POST_PROCESSORS[self.method](
            outputs["pixel_space_mask_logits"],
            outputs["transformer_class_logits"],
            self.image_size,
            thing_class_ids=self.thing_class_ids,
            label_divisor=self.label_divisor,
            **self.postprocess_options,
        )

    def compute_output_spec(self, outputs):
        batch = outputs["pixel_space_mask_logits"].shape[0]
        shape = (batch, *self.image_size)
        return {
            name: keras.KerasTensor(shape, "float32" if name.endswith("scores") else "int32")
            for name in SERVING_OUTPUTS
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_size": self.image_size,
                "thing_class_ids": self.thing_class_ids,
                "label_divisor": self.label_divisor,
                "postprocess_options": self.postprocess_options,
                "method": self.method,
            }
        )
        return config


def serving_model(model, input_dtype="float32", postprocess=True, **postprocess_options):
    """The whole panoptic pipeline of `model` as one Keras model, for export.

    Args:
        model: a `MaXDeepLab`.
        input_dtype: `"float32"` (default): pixel values 0..255 resized and
            padded exactly as `MaXDeepLabImageConverter` does (bilinear with
            aligned corners to `converter.resized_size`, padding 127.5), so
            the maps are bit-identical to `predict_panoptic`'s before its
            resize back. `"uint8"`: for images already at the crop size (the
            cast is exact); a resized image rounded to uint8 is close to, not
            exactly, what the converter feeds the network.
        postprocess: False leaves deeplab2's post-processor out: the outputs
            are the network's (`pixel_space_mask_logits`,
            `transformer_class_logits`, ...), to post-process with
            `postprocess_panoptic` (for a runtime lacking one of its ops).
        **postprocess_options: overrides of `model.postprocess_options`.

    Returns:
        a functional `keras.Model`: input `images` `[B, crop_h, crop_w, 3]`
        of `input_dtype` (any batch size); outputs a dict of
        `[B, crop_h, crop_w]` maps, `SERVING_OUTPUTS`.

    Example:
    >>> serving = serving_model(model)
    >>> serving(np.zeros((2, 129, 129, 3), "float32"))["panoptic_pred"].shape  # (2, 129, 129)
    """
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"input_dtype must be one of {INPUT_DTYPES}; got {input_dtype!r}.")
    unknown = sorted(set(postprocess_options) - set(model.postprocess_options))
    if unknown:
        raise ValueError(
            f"Unknown postprocess options {unknown}; expected some of "
            f"{sorted(model.postprocess_options)}."
        )
    height, width = model.backbone.image_shape[:2]
    images = keras.Input(shape=(height, width, 3), dtype=input_dtype, name="images")
    outputs = model(PixelNormalization(name="normalize")(images), training=False)
    if postprocess:
        outputs = PanopticPostProcessor(
            (height, width),
            model.thing_class_ids,
            postprocess_options={**model.postprocess_options, **postprocess_options},
            name="panoptic_postprocess",
        )(outputs)
    return keras.Model(images, outputs, name=f"{model.name}_serving")


def artifact_path(path, format):
    """`path` with the file ending `format`'s artifact has (`.onnx`, `.pt2`,
    ...) unless it already ends so; a SavedModel is a folder (unchanged)."""
    suffix = _ARTIFACT_SUFFIX[format]
    path = os.fspath(path)
    return path if not suffix or path.endswith(suffix) else path + suffix


def export_panoptic(
    model,
    path,
    format="tf_saved_model",
    input_dtype="float32",
    postprocess=True,
    verbose=False,
    **postprocess_options,
):
    """Exports `model`'s whole panoptic pipeline (`serving_model`) as `format`.

    Args:
        model: a `MaXDeepLab`.
        path: the artifact: a folder for `tf_saved_model`; a file otherwise,
            given its format's ending when it lacks it (`.onnx`, `.tflite`,
            `.pt2`, `.xml`). Written atomically (a temporary name, then a
            rename): a failed export leaves what was there before.
        format: one of `EXPORT_FORMATS` that the Keras backend in use can
            export with the packages installed (`backend_seam.export_formats()`).
        input_dtype, postprocess, **postprocess_options: see `serving_model`.
        verbose: Keras' export messages.

    Returns:
        the artifact's path.

    Raises:
        ValueError: an unknown format, one this backend cannot export, or
            one whose exporter is not installed (the message says what to do).

    The artifact takes `images` `[B, crop_h, crop_w, 3]` (any B) and returns
    `panoptic_pred`, `semantic_pred`, `instance_pred` (int32),
    `instance_scores`, `semantic_scores` (float32), each `[B, crop_h, crop_w]`.

    Example:
    >>> export_panoptic(model, "served/max_deeplab.onnx", format="onnx")
    >>> session = onnxruntime.InferenceSession("served/max_deeplab.onnx")
    >>> maps = dict(zip(SERVING_OUTPUTS, session.run(SERVING_OUTPUTS, {"images": batch})))
    """
    check_export_format(format, EXPORT_FORMATS)
    serving = serving_model(model, input_dtype, postprocess, **postprocess_options)
    path = os.path.abspath(artifact_path(path, format))

    def export(target):
        try:
            export_model(serving, target, format, verbose)
        except (OSError, KeyboardInterrupt):
            raise
        except Exception as error:
            if not postprocess:
                raise
            raise RuntimeError(
                f"Exporting {format!r} with deeplab2's post-processor inside failed ({error}). "
                "If the failing op is in 'panoptic_postprocess', export the network alone "
                "(postprocess=False) and run keras_maxdeeplab.postprocessing.postprocess_panoptic "
                "on its outputs."
            ) from error

    if format == "tf_saved_model":
        write_folder_atomically(path, export)
        return path
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    # A temporary folder beside the target: an exporter may write side files
    # (ONNX external data, OpenVINO's .bin) next to the one it is given.
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.writing-", dir=folder)
    try:
        export(os.path.join(staging, os.path.basename(path)))
        # Side files first, the artifact itself last: once it is there, so is all it needs.
        for name in sorted(os.listdir(staging), key=lambda n: n == os.path.basename(path)):
            os.replace(os.path.join(staging, name), os.path.join(folder, name))
    finally:
        for name in os.listdir(staging):
            os.remove(os.path.join(staging, name))
        os.rmdir(staging)
    return path
