"""Serving artifacts of the whole panoptic pipeline: uint8 images in,
deeplab2's panoptic maps out, with the post-processor inside the graph.

`serving_model` wraps a `MaXDeepLab` or `KMaXDeepLab` into a Keras model that
takes `[B, height, width, 3]` images of a fixed `input_size` (default the crop
size), resizes, pads and normalises them as `MaXDeepLabImageConverter` does
(`convert_images`, the same code), runs the network and the model's deeplab2
post-processor (`postprocess_panoptic` or `postprocess_panoptic_maskwise`, the
same code `predict_panoptic` runs), and restores the maps to the input size as `predict_panoptic` does.
`export_panoptic` hands that model to Keras' exporters, one file or folder per
format, written atomically.
"""

import os
import tempfile

import numpy as np

import keras

from keras_maxdeeplab.atomic_files import write_folder_atomically
from keras_maxdeeplab.backend_seam import check_export_format
from keras_maxdeeplab.backend_seam import export_model
from keras_maxdeeplab.backend_seam import take
from keras_maxdeeplab.coco.categories import LABEL_DIVISOR
from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import convert_images
from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import restore_indices
from keras_maxdeeplab.postprocessing.panoptic import POST_PROCESSORS
from keras_maxdeeplab.postprocessing.panoptic import check_post_processing_method

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
# The artifact's input dtypes: uint8 camera frames (the default), or float32
# pixels 0..255 (for a client that resizes itself, at `input_size` = the crop size).
INPUT_DTYPES = ("uint8", "float32")


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class ServingPreprocessor(keras.layers.Layer):
    """`MaXDeepLabImageConverter`'s resizing, padding and normalisation
    (`convert_images`, the same code) as a layer of the serving graph.

    Args:
        crop_size: `(crop_height, crop_width)`, the model's input size.

    Shapes: `[B, H, W, 3]` uint8 or float 0..255 -> `[B, crop_height,
    crop_width, 3]` float32 in [-1, 1].

    Example:
    >>> ServingPreprocessor((65, 65))(np.zeros((1, 48, 64, 3), "uint8")).shape  # (1, 65, 65, 3)
    """

    def __init__(self, crop_size, **kwargs):
        super().__init__(**kwargs)
        self.crop_size = tuple(int(s) for s in crop_size)

    def call(self, images):
        return convert_images(images, self.crop_size)

    def compute_output_spec(self, images):
        return keras.KerasTensor((images.shape[0], *self.crop_size, 3), "float32")

    def get_config(self):
        return {**super().get_config(), "crop_size": self.crop_size}


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class RestoreInputSize(keras.layers.Layer):
    """`MaXDeepLabImageConverter.restore_original_size` on a batch of maps:
    the unpadded region of each crop-sized map, resized back to the input
    size with nearest neighbours (`restore_indices`: a static gather, exact
    in every runtime).

    Args:
        input_size: `(height, width)` of the serving graph's images.
        crop_size: `(crop_height, crop_width)`, the model's input size.

    Shapes: a dict of `[B, crop_height, crop_width]` maps -> the same dict
    of `[B, height, width]` maps.

    Example:
    >>> RestoreInputSize((48, 64), (65, 65))({"panoptic_pred": maps})["panoptic_pred"].shape  # (B, 48, 64)
    """

    def __init__(self, input_size, crop_size, **kwargs):
        super().__init__(**kwargs)
        self.input_size = tuple(int(s) for s in input_size)
        self.crop_size = tuple(int(s) for s in crop_size)

    def call(self, maps):
        rows, cols = restore_indices(self.input_size, self.crop_size)
        rows = keras.ops.convert_to_tensor(rows.astype("int32"))
        cols = keras.ops.convert_to_tensor(cols.astype("int32"))
        return {name: take(take(value, rows, axis=1), cols, axis=2) for name, value in maps.items()}

    def compute_output_spec(self, maps):
        return {
            name: keras.KerasTensor((value.shape[0], *self.input_size), value.dtype)
            for name, value in maps.items()
        }

    def get_config(self):
        config = super().get_config()
        config.update({"input_size": self.input_size, "crop_size": self.crop_size})
        return config


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

    Inputs: the `MaXDeepLab` / `KMaXDeepLab` output dict (`pixel_space_mask_logits`
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
        check_post_processing_method(method)
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


def check_input(input_size, input_dtype):
    """`input_size` as a `(height, width)` pair of positive ints (None stays
    None: the crop size); a clear ValueError for anything else (one number,
    zero, a float) or an `input_dtype` not in `INPUT_DTYPES`."""
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"input_dtype must be one of {INPUT_DTYPES}; got {input_dtype!r}.")
    if input_size is None:
        return None
    size = tuple(input_size) if isinstance(input_size, (tuple, list)) else (input_size,)
    if len(size) != 2 or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size
    ):
        raise ValueError(
            f"input_size must be (height, width), two positive ints; got {input_size!r}."
        )
    return int(size[0]), int(size[1])


def serving_model(
    model, input_size=None, input_dtype="uint8", postprocess=True, **postprocess_options
):
    """The whole panoptic pipeline of `model` as one Keras model, for export.

    The graph resizes and pads the images exactly as
    `MaXDeepLabImageConverter` does (the same code), normalises them, runs
    the network and deeplab2's post-processor, and restores the maps to the
    input size as `predict_panoptic` does: its maps are `predict_panoptic`'s
    on the same images.

    Args:
        model: a `MaXDeepLab` or `KMaXDeepLab`.
        input_size: `(height, width)` of the images the artifact takes
            (a camera's frame size, say); default the crop size.
        input_dtype: `"uint8"` (default) or `"float32"` pixels 0..255. With
            float32 at the crop size, a client can resize and pad images of
            any size itself (the README's NumPy client) and crop and resize
            the maps back.
        postprocess: False leaves deeplab2's post-processor and the restoring
            out: the outputs are the network's (`pixel_space_mask_logits`,
            `transformer_class_logits`, ...) on the crop, to post-process
            with `postprocess_panoptic` (for a runtime lacking one of its ops).
        **postprocess_options: overrides of `model.postprocess_options`.

    Returns:
        a functional `keras.Model`: input `images` `[B, height, width, 3]` of
        `input_dtype` (any batch size); outputs a dict of `[B, height, width]`
        maps, `SERVING_OUTPUTS`.

    Example:
    >>> serving = serving_model(model, input_size=(480, 640))
    >>> serving(np.zeros((2, 480, 640, 3), "uint8"))["panoptic_pred"].shape  # (2, 480, 640)
    """
    crop_size = tuple(model.backbone.image_shape[:2])
    input_size = check_input(input_size, input_dtype) or crop_size
    unknown = sorted(set(postprocess_options) - set(model.postprocess_options))
    if unknown:
        raise ValueError(
            f"Unknown postprocess options {unknown}; expected some of "
            f"{sorted(model.postprocess_options)}."
        )
    images = keras.Input(shape=(*input_size, 3), dtype=input_dtype, name="images")
    pixels = ServingPreprocessor(crop_size, name="preprocess")(images)
    outputs = model(pixels, training=False)
    if postprocess:
        outputs = PanopticPostProcessor(
            crop_size,
            model.thing_class_ids,
            postprocess_options={**model.postprocess_options, **postprocess_options},
            method=model.post_processing_method,
            label_divisor=model.label_divisor,
            name="panoptic_postprocess",
        )(outputs)
        if input_size != crop_size:
            outputs = RestoreInputSize(input_size, crop_size, name="restore_input_size")(outputs)
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
    input_size=None,
    input_dtype="uint8",
    postprocess=True,
    verbose=False,
    **postprocess_options,
):
    """Exports `model`'s whole panoptic pipeline (`serving_model`) as `format`.

    Args:
        model: a `MaXDeepLab` or `KMaXDeepLab`.
        path: the artifact: a folder for `tf_saved_model`; a file otherwise,
            given its format's ending when it lacks it (`.onnx`, `.tflite`,
            `.pt2`, `.xml`). Written atomically (a temporary name, then a
            rename): a failed export leaves what was there before.
        format: one of `EXPORT_FORMATS` that the Keras backend in use can
            export with the packages installed (`backend_seam.export_formats()`).
        input_size, input_dtype, postprocess, **postprocess_options: see
            `serving_model`.
        verbose: Keras' export messages.

    Returns:
        the artifact's path.

    Raises:
        ValueError: an unknown format, one this backend cannot export, or
            one whose exporter is not installed (the message says what to do).

    The artifact takes `images` `[B, height, width, 3]` uint8 (any B;
    `input_size`, default the crop size) and returns `panoptic_pred`,
    `semantic_pred`, `instance_pred` (int32), `instance_scores`,
    `semantic_scores` (float32), each `[B, height, width]`.

    Example:
    >>> export_panoptic(model, "served/max_deeplab.onnx", format="onnx", input_size=(480, 640))
    >>> session = onnxruntime.InferenceSession("served/max_deeplab.onnx")
    >>> maps = dict(zip(SERVING_OUTPUTS, session.run(SERVING_OUTPUTS, {"images": batch})))
    """
    check_input(input_size, input_dtype)
    check_export_format(format, EXPORT_FORMATS)
    serving = serving_model(model, input_size, input_dtype, postprocess, **postprocess_options)
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
