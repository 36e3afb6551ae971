"""deeplab2's MaX-DeepLab input preprocessing (`input_preprocessing.py`) in TensorFlow ops.

Runs inside `tf.data`, so it is the same on every Keras backend. Randomness
comes from stateless ops keyed by a per-sample `seed` `[2]` int32, so a pipeline
seed fixes every crop, scale and flip.

Images stay in 0..255 float32 (the model's image converter normalises them);
labels are deeplab2 panoptic labels `semantic * label_divisor + instance`,
resized with nearest neighbours only, so label values never mix.
"""

import tensorflow as tf

# deeplab2 pads images with the mean pixel and labels with void (0).
MEAN_PIXEL = 127.5
IGNORE_PANOPTIC_LABEL = 0


def resize_to_range_size(height, width, crop_height, crop_width):
    """deeplab2's `resize_to_range(min_size=max_size=crop)` output size, in TF.

    Same arithmetic as `MaXDeepLabImageConverter.resized_size`: float64
    ratios cast to float32, `floor(size * factor)` twice.
    """

    def scale(size_h, size_w, factor):
        factor = tf.cast(factor, tf.float32)
        return (
            tf.cast(tf.floor(tf.cast(size_h, tf.float32) * factor), tf.int32),
            tf.cast(tf.floor(tf.cast(size_w, tf.float32) * factor), tf.int32),
        )

    def ratio(crop, size):
        return tf.cast(crop, tf.float64) / tf.cast(size, tf.float64)

    height, width = scale(
        height, width, tf.maximum(ratio(crop_height, height), ratio(crop_width, width))
    )
    factor = tf.minimum(
        tf.cast(tf.minimum(ratio(crop_height, height), ratio(crop_width, width)), tf.float32), 1.0
    )
    return scale(height, width, factor)


def _resize(image, label, size):
    """Bilinear image / nearest label resize, both with aligned corners (TF1)."""
    image = tf.compat.v1.image.resize(image, size, align_corners=True)
    label = tf.compat.v1.image.resize(
        label[..., None],
        size,
        method=tf.image.ResizeMethod.NEAREST_NEIGHBOR,
        align_corners=True,
    )[..., 0]
    return image, label


def _pad(image, label, offset_height, offset_width, target_height, target_width):
    """Pads to the target size at an offset: images with the mean pixel
    (deeplab2's `(x - mean)`, zero pad, `+ mean` arithmetic), labels with void."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    paddings = [
        [offset_height, target_height - offset_height - height],
        [offset_width, target_width - offset_width - width],
    ]
    image = tf.pad(image - MEAN_PIXEL, paddings + [[0, 0]]) + MEAN_PIXEL
    label = tf.pad(label, paddings, constant_values=IGNORE_PANOPTIC_LABEL)
    return image, label


def preprocess_for_evaluation(image, label, crop_size):
    """deeplab2's evaluation preprocessing: resize so the longest side is the
    crop (`resize_to_range`), pad bottom/right to the crop.

    Args:
        image: `[H, W, 3]` uint8 or float image.
        label: `[H, W]` int32 panoptic label.
        crop_size: `(crop_height, crop_width)`.

    Returns:
        `(image [crop_h, crop_w, 3] float32 in 0..255, label [crop_h, crop_w] int32)`.
    """
    crop_height, crop_width = crop_size
    image = tf.cast(image, tf.float32)
    size = resize_to_range_size(tf.shape(image)[0], tf.shape(image)[1], crop_height, crop_width)
    image, label = _resize(image, label, tf.stack(size))
    image, label = _pad(image, label, 0, 0, crop_height, crop_width)
    return tf.ensure_shape(image, [crop_height, crop_width, 3]), tf.ensure_shape(
        label, [crop_height, crop_width]
    )


def random_scale(seed, min_scale=0.5, max_scale=1.5, scale_step=0.1):
    """deeplab2's `get_random_scale`: one of `linspace(min_scale, max_scale)`
    in `scale_step` steps (float32), uniformly, for a stateless `seed` `[2]`."""
    if min_scale == max_scale:
        return tf.constant(min_scale, tf.float32)
    if not 0 < min_scale < max_scale or scale_step <= 0:
        raise ValueError(
            f"Scales must satisfy 0 < min_scale <= max_scale with scale_step > 0; got "
            f"{min_scale}, {max_scale}, {scale_step}."
        )
    num_scales = int((max_scale - min_scale) / scale_step + 1)
    scales = tf.linspace(tf.constant(min_scale, tf.float32), max_scale, num_scales)
    return scales[tf.random.stateless_uniform([], seed, maxval=num_scales, dtype=tf.int32)]


def preprocess_for_training(
    image, label, crop_size, seed, min_scale=0.5, max_scale=1.5, scale_step=0.1
):
    """deeplab2's training augmentation, in its order.

    1. resize so the longest side is the crop size (`resize_to_range`);
    2. random scale from `linspace(min_scale, max_scale)` in `scale_step`
       steps (0.5, 0.6, ..., 1.5), bilinear image / nearest label;
    3. pad to at least the crop size at a random offset (mean pixel / void);
    4. random crop to `crop_size`;
    5. horizontal flip with probability 0.5.

    Args:
        image: `[H, W, 3]` uint8 or float image.
        label: `[H, W]` int32 panoptic label.
        crop_size: `(crop_height, crop_width)`.
        seed: `[2]` int32, the sample's stateless random seed.

    Returns:
        `(image [crop_h, crop_w, 3] float32 in 0..255, label [crop_h, crop_w] int32)`.

    Example:
    >>> image, label = preprocess_for_training(image, label, (641, 641), tf.constant([0, 7]))
    """
    crop_height, crop_width = crop_size
    seeds = tf.random.experimental.stateless_split(seed, 6)
    image = tf.cast(image, tf.float32)
    size = resize_to_range_size(tf.shape(image)[0], tf.shape(image)[1], crop_height, crop_width)
    image, label = _resize(image, label, tf.stack(size))

    scale = random_scale(seeds[0], min_scale, max_scale, scale_step)
    scaled = tf.cast(tf.cast(tf.shape(image)[:2], tf.float32) * scale, tf.int32)
    image, label = _resize(image, label, scaled)

    height, width = scaled[0], scaled[1]
    target_height = height + tf.maximum(crop_height - height, 0)
    target_width = width + tf.maximum(crop_width - width, 0)

    def uniform(margin, key):
        return tf.random.stateless_uniform(
            [], seeds[key], maxval=tf.maximum(margin, 1), dtype=tf.int32
        )

    offset_height = uniform(crop_height - height, 1)
    offset_width = uniform(crop_width - width, 2)
    image, label = _pad(image, label, offset_height, offset_width, target_height, target_width)

    top = uniform(target_height - crop_height + 1, 3)
    left = uniform(target_width - crop_width + 1, 4)
    image = image[top : top + crop_height, left : left + crop_width]
    label = label[top : top + crop_height, left : left + crop_width]

    flip = tf.random.stateless_uniform([], seeds[5]) <= 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
    return tf.ensure_shape(image, [crop_height, crop_width, 3]), tf.ensure_shape(
        label, [crop_height, crop_width]
    )
