"""deeplab2's evaluation preprocessing as a keras-hub `ImageConverter`."""

import numpy as np

import keras
from keras import ops
from keras_hub.layers import ImageConverter
from keras_hub.src.utils.tensor_utils import in_tf_function

from keras_maxdeeplab.layers.resize import nearest_indices
from keras_maxdeeplab.layers.resize import resize_bilinear_align_corners
from keras_maxdeeplab.models.max_deeplab.max_deeplab_backbone import MaXDeepLabBackbone


def resized_size(height, width, crop_height, crop_width):
    """deeplab2's `resize_to_range(min=max=crop)` output size.

    Scale so the short side reaches the crop, then shrink so the long side
    fits, each step `floor(size * float32(factor))`: the long side ends at the
    crop size. 640x360 -> 641x360 at 641 (360x640 -> 36x65 at 65).

    Example:
    >>> resized_size(360, 640, 65, 65)  # (36, 65)
    """
    f32 = np.float32
    factor = f32(max(crop_height / height, crop_width / width))
    height, width = int(np.floor(f32(height) * factor)), int(np.floor(f32(width) * factor))
    factor = min(f32(min(crop_height / height, crop_width / width)), f32(1.0))
    return int(np.floor(f32(height) * factor)), int(np.floor(f32(width) * factor))


def convert_images(images, crop_size):
    """deeplab2's evaluation preprocessing with `keras.ops`: the converter's
    steps 1-3, also run inside exported serving graphs.

    Args:
        images: `[B, H, W, 3]` tensor, uint8 or float in 0..255, static H, W.
        crop_size: `(crop_height, crop_width)`.

    Returns:
        `[B, crop_height, crop_width, 3]` float32 in [-1, 1].

    Example:
    >>> convert_images(np.zeros((2, 48, 64, 3), "uint8"), (65, 65)).shape  # (2, 65, 65, 3)
    """
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError("MaXDeepLabImageConverter needs images with a known height and width.")
    crop_height, crop_width = crop_size
    new_height, new_width = resized_size(height, width, crop_height, crop_width)
    images = ops.cast(images, "float32")
    images = resize_bilinear_align_corners(images, (new_height, new_width))
    if (new_height, new_width) != (crop_height, crop_width):
        images = ops.pad(
            images,
            [[0, 0], [0, crop_height - new_height], [0, crop_width - new_width], [0, 0]],
            constant_values=127.5,
        )
    return images / 127.5 - 1.0


def restore_indices(image_size, crop_size):
    """The rows and columns of a crop-sized map that restore an image of
    `image_size`: the unpadded region resized back with nearest neighbours
    (aligned corners), as deeplab2's evaluator does. Every index lies inside
    the unpadded region, so indexing alone also crops.

    Returns:
        `(rows [H], cols [W])` int64 NumPy arrays.

    Example:
    >>> rows, cols = restore_indices((48, 64), (65, 65))  # rows < 48, cols < 65
    >>> restored = crop_map[rows][:, cols]  # [48, 64]
    """
    height, width = resized_size(*image_size, *crop_size)
    return nearest_indices(height, image_size[0]), nearest_indices(width, image_size[1])


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class MaXDeepLabImageConverter(ImageConverter):
    """Resizes, pads and normalises images exactly like deeplab2's evaluation.

    1. Resize so the longest side equals the crop size (`resized_size`),
       bilinear with aligned corners, in float32.
    2. Pad bottom/right to the crop size with 127.5 (the mean pixel).
    3. Normalise `x / 127.5 - 1` (the padding becomes 0).

    `restore_original_size` undoes steps 1-2 on the model's crop-sized maps,
    as deeplab2's evaluator does.

    Args:
        image_size: `(crop_height, crop_width)`, each 16k + 1.

    Shapes: `[H, W, 3]` or `[B, H, W, 3]` (uint8 or float in 0..255, static
    H and W) -> `[..., crop_height, crop_width, 3]` float32 in [-1, 1].

    Example:
    >>> converter = MaXDeepLabImageConverter(image_size=(641, 641))
    >>> x = converter(np.zeros((360, 640, 3), "uint8"))  # (641, 641, 3)
    """

    backbone_cls = MaXDeepLabBackbone

    def __init__(self, image_size=(641, 641), **kwargs):
        kwargs.pop("scale", None)
        kwargs.pop("offset", None)
        kwargs.pop("crop_to_aspect_ratio", None)
        super().__init__(
            image_size=image_size,
            scale=1.0 / 127.5,
            offset=-1.0,
            crop_to_aspect_ratio=False,
            **kwargs,
        )

    def resized_size(self, height, width):
        """The `(height, width)` of an image after step 1 (the unpadded region)."""
        return resized_size(height, width, *self.image_size)

    def restore_original_size(self, maps, image_size):
        """Undoes this converter on `[crop_height, crop_width, ...]` maps.

        Crops the unpadded top-left region, then resizes it to `image_size`
        with nearest neighbours (aligned corners), as deeplab2's evaluator
        does. NumPy in and out.

        Example:
        >>> converter = MaXDeepLabImageConverter(image_size=(129, 129))
        >>> converter.restore_original_size(np.zeros((129, 129)), (360, 640)).shape  # (360, 640)
        """
        rows, cols = restore_indices(image_size, self.image_size)
        return np.asarray(maps)[rows][:, cols]

    def call(self, inputs):
        shape = getattr(inputs, "shape", np.shape(inputs))
        if len(shape) not in (3, 4) or shape[-1] != 3:
            raise ValueError(
                f"MaXDeepLabImageConverter expects RGB images [H, W, 3] or [B, H, W, 3]; "
                f"got shape {tuple(shape)}."
            )
        if in_tf_function():
            # Inside tf.data (keras-hub runs preprocessing there): TensorFlow ops.
            return self._call_tf(inputs)
        return self._call_ops(inputs)

    def _call_ops(self, inputs):
        images = ops.convert_to_tensor(inputs)
        unbatched = len(images.shape) == 3
        if unbatched:
            images = ops.expand_dims(images, 0)
        images = convert_images(images, self.image_size)
        return images[0] if unbatched else images

    def _call_tf(self, inputs):
        import tensorflow as tf

        images = tf.cast(inputs, tf.float32)
        unbatched = images.shape.rank == 3
        if unbatched:
            images = images[None]
        crop_height, crop_width = self.image_size
        size = tf.shape(images)[1:3]
        new_size = tf.numpy_function(
            lambda h, w: np.array(self.resized_size(int(h), int(w)), np.int32),
            [size[0], size[1]],
            tf.int32,
        )
        new_size.set_shape([2])
        images = tf.compat.v1.image.resize(images, new_size, align_corners=True)
        images = tf.pad(
            images,
            [[0, 0], [0, crop_height - new_size[0]], [0, crop_width - new_size[1]], [0, 0]],
            constant_values=127.5,
        )
        images = tf.ensure_shape(images, [None, crop_height, crop_width, 3]) / 127.5 - 1.0
        return images[0] if unbatched else images

    def get_config(self):
        config = super().get_config()
        for key in ("scale", "offset", "crop_to_aspect_ratio"):
            config.pop(key, None)
        return config
