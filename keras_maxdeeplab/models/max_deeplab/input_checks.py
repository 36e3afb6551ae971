"""Early, explicit checks of image shapes, dtypes and architecture numbers for MaX-DeepLab."""

import os

import numpy as np

import keras


def check_image_shape(image_shape):
    """Validates a model's `(H, W, 3)` image shape; returns it as a tuple.

    MaX-DeepLab builds axial attention and its relative position tables for a
    static size, and its strides need `16k + 1` (641, 1025, ...).
    """
    image_shape = tuple(image_shape)
    if len(image_shape) != 3 or image_shape[-1] != 3:
        raise ValueError(f"image_shape must be (height, width, 3); got {image_shape}.")
    height, width = image_shape[:2]
    for size in (height, width):
        if size is None or not 17 <= int(size) <= 4097 or (int(size) - 1) % 16:
            raise ValueError(
                f"MaX-DeepLab needs a fixed image size of the form 16k + 1 between 17 and 4097 "
                f"(e.g. 65, 129, 641, 1025); got image_shape={image_shape}."
            )
    return (int(height), int(width), 3)


def check_images(images, image_shape):
    """Raises ValueError unless `images` is a float `[B, H, W, 3]` batch of `image_shape`."""
    shape = getattr(images, "shape", None)
    if shape is None:
        raise ValueError(
            f"Expected a float image batch of shape [B, {image_shape[0]}, {image_shape[1]}, 3]; "
            f"got {type(images).__name__}."
        )
    shape = tuple(shape)
    expected = f"[B, {image_shape[0]}, {image_shape[1]}, 3]"
    if len(shape) != 4:
        raise ValueError(
            f"Expected images of rank 4 {expected}; got shape {shape}. "
            "Add a batch axis for a single image."
        )
    if shape[-1] != 3:
        raise ValueError(f"Expected 3 (RGB) channels, i.e. {expected}; got shape {shape}.")
    if tuple(shape[1:3]) != tuple(image_shape[:2]):
        raise ValueError(
            f"This model was built for {image_shape[0]}x{image_shape[1]} inputs {expected}; "
            f"got shape {shape}. Resize and pad with MaXDeepLabImageConverter."
        )
    dtype = keras.backend.standardize_dtype(images.dtype)
    if "float" not in dtype:
        raise ValueError(
            f"Expected float images normalised to [-1, 1] (x / 127.5 - 1, as "
            f"MaXDeepLabImageConverter does); got dtype {dtype}."
        )


def check_raw_images(images, crop_size):
    """Validates images given to `predict_panoptic`; returns a list of `[H, W, 3]` arrays.

    Accepted: an `[H, W, 3]` image, a list of them (sizes may differ) or a
    `[B, H, W, 3]` batch, with integer values in 0..255 (uint8 or any integer
    dtype), or float in 0..255. Anything else is
    refused with what was wrong and what to do: other ranks (grayscale
    `[H, W]` included) or channel counts, integer values outside 0..255
    (16-bit images: convert to 8 bits), float images that look like 0..1 (max <= 1:
    multiply by 255), non-finite pixels, empty images, and images so
    elongated that resizing the long side to the crop leaves no pixel on the
    short side.

    Example:
    >>> check_raw_images(np.zeros((480, 640, 3), "uint8"), (641, 641))[0].shape
    (480, 640, 3)
    """
    if isinstance(images, (str, bytes, os.PathLike)):
        raise ValueError(
            f"predict_panoptic takes image arrays, not a path ({images!r}); read the file "
            "first, e.g. np.asarray(PIL.Image.open(path).convert('RGB'))."
        )
    if isinstance(images, (list, tuple)):
        arrays = [np.asarray(keras.ops.convert_to_numpy(image)) for image in images]
    else:
        batch = np.asarray(keras.ops.convert_to_numpy(images))
        if batch.ndim not in (3, 4):
            raise ValueError(_shape_message(batch.shape, "an image or a batch"))
        arrays = [batch] if batch.ndim == 3 else list(batch)
    if not arrays:
        raise ValueError("predict_panoptic got no images (an empty list or batch).")
    for index, image in enumerate(arrays):
        _check_one(image, index, crop_size)
    return arrays


def _shape_message(shape, what):
    hint = " A grayscale image: np.repeat(image[..., None], 3, axis=-1)." if len(shape) == 2 else ""
    return f"Expected {what} of RGB pixels, [H, W, 3] or [B, H, W, 3]; got shape {tuple(shape)}.{hint}"


def _check_one(image, index, crop_size):
    where = f"image {index}"
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{where}: " + _shape_message(image.shape, "an image"))
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"{where} is empty ({height}x{width} pixels).")
    dtype = image.dtype
    if dtype.kind in "iu" and dtype != np.uint8:
        low, high = int(image.min()), int(image.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"{where} has {dtype} values in [{low}, {high}]; expected 8-bit values 0..255 "
                "(uint8, or float in 0..255). For 16-bit images, convert to 8 bits first, e.g. "
                "(image // 257).astype('uint8')."
            )
    if dtype.kind not in "iuf":
        raise ValueError(f"{where} has dtype {dtype}; expected uint8 or float in 0..255.")
    if dtype.kind == "f":
        if not np.all(np.isfinite(image)):
            raise ValueError(f"{where} has NaN or infinite pixel values.")
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 255:
            raise ValueError(f"{where} has float values in [{low:g}, {high:g}]; expected 0..255.")
        if 0 < high <= 1:
            raise ValueError(
                f"{where} is float with values in [{low:g}, {high:g}]: it looks like a 0..1 "
                "image; predict_panoptic takes 0..255, so multiply it by 255."
            )
    # Imported here: the converter module imports the backbone, which imports this one.
    from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import resized_size

    resized = resized_size(height, width, *crop_size)
    if min(resized) < 1:
        raise ValueError(
            f"{where} ({height}x{width}) is too elongated for a {crop_size[0]}x{crop_size[1]} "
            f"model: with its long side resized to the crop, its short side has no pixel left."
        )


# Bounds of the architecture numbers, checked before anything is built: far
# beyond deeplab2's largest model (MaX-DeepLab-L), far below what would take
# minutes or all memory to build (a config file is input like any other).
_COUNTS = {
    "num_mask_slots": (1, 1024),
    "memory_channels": (1, 8192),
    "global_feed_forward_network_channels": (1, 16384),
    "dual_path_feed_forward_network_channels": (1, 16384),
    "attention_bottleneck_expansion": (1, 64),
    "axial_key_expansion": (1, 64),
    "axial_value_expansion": (1, 64),
    "backbone_decoder_num_stacks": (0, 8),
    "extra_decoder_num_stacks": (0, 8),
    "extra_decoder_blocks_per_stage": (1, 64),
    "backbone_decoder_blocks_per_stage": (1, 64),
    "pixel_space_head_channels": (1, 8192),
    "pixel_space_output_channels": (1, 8192),
    "semantic_head_channels": (1, 8192),
    "aspp_channels": (1, 8192),
    "decoder_channels": (1, 8192),
}
_SCALES = {
    "base_transformer_expansion": 64.0,
    "stem_width_multiplier": 16.0,
    "backbone_width_multiplier": 16.0,
    "backbone_layer_multiplier": 16.0,
}
_STRIDES = (0, 4, 8, 16, 32)


def check_architecture(**numbers):
    """Raises ValueError for an architecture number of the wrong type or out of
    its bounds (see `_COUNTS`, `_SCALES`); returns None.

    Example:
    >>> check_architecture(num_mask_slots=128, num_blocks=(3, 4, 6, 3))
    """
    for name, value in numbers.items():
        if name in _COUNTS:
            _check_int(name, value, *_COUNTS[name])
        elif name in _SCALES:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number; got {value!r}.")
            if not 0 < value <= _SCALES[name]:
                raise ValueError(f"{name} must be in (0, {_SCALES[name]:g}]; got {value!r}.")
        elif name in ("num_blocks", "low_level_channels", "atrous_rates"):
            length = {"num_blocks": 4, "low_level_channels": 2, "atrous_rates": 3}[name]
            if not isinstance(value, (list, tuple)) or len(value) != length:
                raise ValueError(f"{name} must be {length} whole numbers; got {value!r}.")
            high = {"num_blocks": 64, "low_level_channels": 8192, "atrous_rates": 64}[name]
            for item in value:
                _check_int(name, item, 1, high)
        elif name.endswith("_beyond_stride") and value not in _STRIDES:
            raise ValueError(f"{name} must be one of {_STRIDES}; got {value!r}.")
        elif name == "drop_path_keep_prob" and not (
            isinstance(value, (int, float)) and 0 < value <= 1
        ):
            raise ValueError(f"drop_path_keep_prob must be in (0, 1]; got {value!r}.")


def _check_int(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number; got {value!r}.")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}; got {value}.")
