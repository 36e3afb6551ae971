"""Early, explicit checks of image shapes and dtypes for MaX-DeepLab models."""

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
        if size is None or int(size) < 17 or (int(size) - 1) % 16:
            raise ValueError(
                f"MaX-DeepLab needs a fixed image size of the form 16k + 1 (e.g. 65, 129, "
                f"641, 1025); got image_shape={image_shape}."
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
