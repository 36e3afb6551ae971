"""deeplab2's MaX-DeepLab training targets from a panoptic label, in TensorFlow ops.

The label is `semantic * label_divisor + instance` (0 = void), where a thing
pixel with instance 0 is crowd. As deeplab2's `sample_generator` with
`thing_id_mask_annotations` (its COCO records already turn crowd into void):
* `semantic_gt`: the class, crowd and void -> 0;
* `thing_id_mask_gt`: every non-crowd thing instance numbered 0, 1, ... in
  order of first appearance in raster scan, -1 elsewhere;
* `thing_id_class_gt` `[max_thing_id]` float32: the class of each thing id,
  -1 padding;
* `semantic_loss_weight`: 1, or `small_instance_weight` on thing instances
  smaller than `small_instance_area` pixels (deeplab2's
  `focus_small_instances`, on for MaX-DeepLab-L: 4096 px, weight 3).
Beyond deeplab2, crowd is kept for the official COCO PQ rules: `panoptic_gt`
keeps the label (crowd as `class * label_divisor`) and `is_crowd_gt` marks it.
"""

from keras_maxdeeplab.coco.categories import LABEL_DIVISOR

MAX_THING_ID = 128


def panoptic_targets(
    label,
    thing_class_ids,
    label_divisor=LABEL_DIVISOR,
    max_thing_id=MAX_THING_ID,
    small_instance_area=0,
    small_instance_weight=1.0,
):
    """Targets of `MaXDeepLabLoss` (+ `panoptic_gt`, `is_crowd_gt`) from one label.

    Args:
        label: `[H, W]` int32 panoptic label.
        thing_class_ids: contiguous ids of the thing classes.
        max_thing_id: thing slots of `thing_id_class_gt`; more non-crowd thing
            instances in the label raise an error (as deeplab2 asserts).

    Returns:
        dict with `semantic_gt`, `thing_id_mask_gt`, `panoptic_gt` `[H, W]`
        int32, `is_crowd_gt` `[H, W]` uint8 (1 = crowd; not bool: Keras
        all-reduces a first batch across `tf.distribute` replicas, which
        cannot sum bools), `semantic_loss_weight` `[H, W]`
        float32 and `thing_id_class_gt` `[max_thing_id]` float32.

    Example:
    >>> targets = panoptic_targets(tf.constant([[257, 0], [258, 2560]]), thing_class_ids=[1])
    >>> targets["thing_id_mask_gt"]  # [[0, -1], [1, -1]]
    """
    import tensorflow as tf  # The data pipeline's only backend; the rest of the package needs none.

    label = tf.cast(label, tf.int32)
    semantic = label // label_divisor
    instance = label % label_divisor
    things = tf.constant(sorted(int(i) for i in thing_class_ids) or [-1], tf.int32)
    is_thing = tf.reduce_any(semantic[..., None] == things, axis=-1)
    is_crowd = tf.logical_and(is_thing, instance == 0)
    is_crowd = tf.logical_and(is_crowd, semantic != 0)

    flat = tf.reshape(label, [-1])
    unique_ids, index, counts = tf.unique_with_counts(flat)  # first-appearance order
    unique_semantic = unique_ids // label_divisor
    # deeplab2 keeps ids that are neither void nor `class * divisor` (stuff, crowd).
    is_thing_id = tf.logical_and(unique_semantic != 0, unique_ids % label_divisor != 0)
    thing_rank = tf.cumsum(tf.cast(is_thing_id, tf.int32)) - 1
    num_things = tf.reduce_sum(tf.cast(is_thing_id, tf.int32))
    check = tf.debugging.assert_less_equal(
        num_things,
        max_thing_id,
        message=f"more thing instances than max_thing_id={max_thing_id} in one crop",
    )
    with tf.control_dependencies([check]):
        thing_id = tf.where(is_thing_id, thing_rank, -1)
    thing_id_mask = tf.reshape(tf.gather(thing_id, index), tf.shape(label))
    thing_id_class = (
        tf.scatter_nd(
            tf.boolean_mask(thing_rank, is_thing_id)[:, None],
            tf.cast(tf.boolean_mask(unique_semantic, is_thing_id), tf.float32) + 1.0,
            [max_thing_id],
        )
        - 1.0
    )

    small = tf.logical_and(is_thing_id, counts < small_instance_area)
    weight = tf.where(tf.gather(small, index), float(small_instance_weight), 1.0)
    return {
        "semantic_gt": tf.where(is_crowd, 0, semantic),
        "thing_id_mask_gt": thing_id_mask,
        "thing_id_class_gt": thing_id_class,
        "semantic_loss_weight": tf.reshape(weight, tf.shape(label)),
        "panoptic_gt": label,
        "is_crowd_gt": tf.cast(is_crowd, tf.uint8),
    }
