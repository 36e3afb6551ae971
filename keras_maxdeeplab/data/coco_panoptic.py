"""Datasets in COCO panoptic format (COCO itself or any custom category list).

Layout: an image folder, a folder of panoptic PNGs (segment id
`R + 256 G + 256^2 B`, 0 = unlabelled) and a JSON with `images`,
`annotations` (`image_id`, `file_name`, `segments_info` with `id`,
`category_id`, `iscrowd`, `area`) and `categories` (`id`, `name`, `isthing`).
Labels become deeplab2's `semantic * 256 + instance` maps as its
`build_coco_data.py` writes them: contiguous class ids (1.. in category-id
order, 0 = void) and thing instances numbered per class from 1 in JSON order;
crowd thing segments keep their class with instance 0 (deeplab2's crowd
convention), so the targets can treat them as void and the PQ metric as crowd.
"""

import atexit
import gc
import json
import os
import sys
import threading
import warnings

import numpy as np

from keras_maxdeeplab.coco.categories import LABEL_DIVISOR
from keras_maxdeeplab.coco.categories import check_categories
from keras_maxdeeplab.coco.categories import contiguous_categories
from keras_maxdeeplab.coco.categories import thing_class_ids
from keras_maxdeeplab.coco.panoptic_format import rgb2id
from keras_maxdeeplab.data.targets import MAX_THING_ID


class DatasetError(ValueError):
    """A sample or annotation file that cannot be read as COCO panoptic data."""


def _load_json(annotation_file):
    try:
        with open(annotation_file) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{annotation_file}: cannot read the annotation JSON ({error}).")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or key not in data:
            raise DatasetError(
                f"{annotation_file}: no '{key}' list; a COCO panoptic JSON has 'images', "
                "'annotations' and 'categories'."
            )
    return data


def _read_image(path):
    """RGB uint8 `[H, W, 3]`, decoded by TensorFlow as deeplab2's input reader
    does (PIL's JPEG decoder differs by up to 20 levels)."""
    import tensorflow as tf

    if not os.path.exists(path):
        raise DatasetError(f"{path}: file not found.")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        raise DatasetError(f"{path}: cannot decode the image ({error.message}).")


def _inside(folder, file_name, annotation_file):
    """`folder/file_name`, refusing names that leave the folder (absolute, `..`)."""
    if not isinstance(file_name, str) or not file_name:
        raise DatasetError(f"{annotation_file}: file_name {file_name!r} is not a file name.")
    parts = file_name.replace("\\", "/").split("/")
    if os.path.isabs(file_name) or ".." in parts:
        raise DatasetError(
            f"{annotation_file}: file_name {file_name!r} points outside its folder {folder!r} "
            "(absolute, or with '..'); file names are relative to their folder."
        )
    return os.path.join(folder, file_name)


def _check_segment(segment, png_file):
    if not isinstance(segment, dict) or "id" not in segment or "category_id" not in segment:
        raise DatasetError(
            f"{png_file}: malformed entry {segment!r} in segments_info; each segment is a dict "
            "with at least 'id' and 'category_id'."
        )


def _crop_size(crop_size, model):
    """`(height, width)` of the crops: `crop_size`, else the model's input size."""
    if crop_size is None and model is None:
        raise ValueError("as_dataset needs a crop_size or the model it feeds (model=...).")
    model_size = None if model is None else tuple(model.backbone.image_shape[:2])
    if crop_size is None:
        return model_size
    crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if model_size is not None and crop_size != model_size:
        raise ValueError(
            f"crop_size {crop_size} differs from the model's input size {model_size}: build the "
            "model at the crop (from_preset(..., image_shape=(h, w, 3))) or leave crop_size out."
        )
    return crop_size


def _free_pipelines_before_exit():
    """Frees what an uncaught error keeps alive before the interpreter shuts down.

    A bad sample raised from `fit` leaves its traceback in `sys.last_*`, and
    the traceback holds the tf.data iterator. Freed during shutdown, the
    iterator waits for its in-flight sample loads while holding the GIL they
    need (TensorFlow cannot release it then), and the process hangs. Here, at
    exit but before shutdown, it is freed with Python fully alive.
    """
    for name in ("last_exc", "last_type", "last_value", "last_traceback"):
        if getattr(sys, name, None) is not None:
            setattr(sys, name, None)
    gc.collect()


class COCOPanopticDataset:
    """A COCO-panoptic-format dataset feeding `MaXDeepLab` with deeplab2's targets.

    Args:
        image_dir: folder of the images (`images[].file_name`).
        panoptic_dir: folder of the panoptic PNGs (`annotations[].file_name`).
        annotation_file: the panoptic JSON.
        on_error: `"raise"` (default): a bad sample (missing or corrupt file,
            size mismatch, PNG ids absent from the JSON or JSON segments absent
            from the PNG, wrong areas, unknown categories) raises an error
            naming the file; `"skip"`: it is left out with a warning that
            counts the skipped samples (also listed in `self.skipped`, once
            each); when every sample is bad, iterating raises instead of
            waiting forever for a valid one. Errors in the JSON itself
            (duplicate image ids or annotations, file names leaving their
            folder, missing keys) always raise.

    Attributes:
        categories: the JSON's categories sorted by id; class `k` of the
            model is `categories[k - 1]`. Pass them to `MaXDeepLab(categories=...)`
            so predictions come back in the dataset's ids and names.

    Example:
    >>> data = COCOPanopticDataset("val2017", "panoptic_val2017", "panoptic_val2017.json")
    >>> model = MaXDeepLab.from_preset("max_deeplab_s_coco", categories=data.categories)
    >>> model.fit(data.as_dataset(model=model, batch_size=8, seed=0), steps_per_epoch=1000)
    """

    def __init__(self, image_dir, panoptic_dir, annotation_file, on_error="raise"):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}.")
        self.on_error = on_error
        self.skipped = []
        self._bad = set()
        self._bad_lock = threading.Lock()
        data = _load_json(annotation_file)
        self.categories = check_categories(data["categories"], annotation_file)
        # deeplab2's contiguous ids: class k <-> k-th category by id.
        self._class_of = {c["id"]: k for k, c in contiguous_categories(self.categories).items()}
        self._things = set(thing_class_ids(self.categories))
        images = {}
        for image in data["images"]:
            if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
                raise DatasetError(
                    f"{annotation_file}: image entry {image!r} lacks id or file_name."
                )
            if image["id"] in images:
                raise DatasetError(
                    f"{annotation_file}: image id {image['id']!r} is listed twice in 'images' "
                    f"({images[image['id']]['file_name']} and {image['file_name']})."
                )
            images[image["id"]] = image
        self.samples = []
        annotated = {}
        for annotation in data["annotations"]:
            missing = [k for k in ("image_id", "file_name", "segments_info") if k not in annotation]
            if missing:
                raise DatasetError(
                    f"{annotation_file}: annotation of {annotation.get('file_name', '?')} "
                    f"lacks {missing}."
                )
            image_id = annotation["image_id"]
            if image_id not in images:
                raise DatasetError(
                    f"{annotation_file}: annotation {annotation['file_name']} refers to image_id "
                    f"{image_id!r}, which 'images' does not list."
                )
            if image_id in annotated:
                raise DatasetError(
                    f"{annotation_file}: image_id {image_id!r} has two annotations "
                    f"({annotated[image_id]} and {annotation['file_name']})."
                )
            annotated[image_id] = annotation["file_name"]
            if not isinstance(annotation["segments_info"], list):
                raise DatasetError(
                    f"{annotation_file}: segments_info of {annotation['file_name']} is not a list."
                )
            self.samples.append(
                {
                    "image_id": image_id,
                    "image_file": _inside(image_dir, images[image_id]["file_name"], annotation_file),
                    "panoptic_file": _inside(panoptic_dir, annotation["file_name"], annotation_file),
                    "segments_info": annotation["segments_info"],
                }
            )
        if not self.samples:
            raise DatasetError(f"{annotation_file}: no annotations.")

    @property
    def thing_class_ids(self):
        """Contiguous ids of the thing classes."""
        return tuple(sorted(self._things))

    def __len__(self):
        return len(self.samples)

    def load(self, index):
        """Reads sample `index`: the image and its deeplab2 panoptic label.

        Returns:
            `(image [H, W, 3] uint8, label [H, W] int32)`, the label
            `class * 256 + instance` (0 = void, crowd = `class * 256`).

        Raises:
            DatasetError naming the file when the sample is inconsistent.
        """
        sample = self.samples[index]
        image = _read_image(sample["image_file"])
        png_file = sample["panoptic_file"]
        ids = rgb2id(_read_image(png_file))
        if image.shape[:2] != ids.shape:
            raise DatasetError(
                f"{png_file}: size {ids.shape} differs from its image "
                f"{sample['image_file']} {image.shape[:2]}."
            )
        return image, self._label(ids, sample["segments_info"], png_file)

    def _label(self, ids, segments_info, png_file):
        """deeplab2's `_generate_panoptic_label`, vectorised over pixels."""
        for segment in segments_info:
            _check_segment(segment, png_file)
        segment_ids = np.array([s["id"] for s in segments_info], np.int64)
        if len(set(segment_ids.tolist())) != len(segment_ids):
            raise DatasetError(f"{png_file}: duplicate segment ids in the JSON.")
        values = np.zeros(len(segment_ids), np.int64)
        count = {}
        for index, segment in enumerate(segments_info):
            if segment["category_id"] not in self._class_of:
                raise DatasetError(
                    f"{png_file}: segment {segment['id']} has category_id "
                    f"{segment['category_id']}, which 'categories' does not list."
                )
            semantic = self._class_of[segment["category_id"]]
            instance = 0
            if semantic in self._things and not segment.get("iscrowd", 0):
                count[semantic] = instance = count.get(semantic, 0) + 1
                if instance >= LABEL_DIVISOR:
                    raise DatasetError(
                        f"{png_file}: more than {LABEL_DIVISOR - 1} instances of category "
                        f"{segment['category_id']}."
                    )
            elif semantic not in self._things and segment.get("iscrowd", 0):
                raise DatasetError(
                    f"{png_file}: stuff segment {segment['id']} is marked iscrowd; only "
                    "thing segments can be crowd."
                )
            values[index] = semantic * LABEL_DIVISOR + instance

        order = np.argsort(segment_ids)
        sorted_ids = segment_ids[order]
        position = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(sorted_ids) - 1, 0))
        known = sorted_ids[position] == ids if len(sorted_ids) else np.zeros(ids.shape, bool)
        unknown = np.unique(ids[~known & (ids != 0)])
        if unknown.size:
            raise DatasetError(
                f"{png_file}: segment ids {unknown[:10].tolist()} are in the PNG but not in "
                "its JSON segments_info."
            )
        areas = np.bincount(position[known], minlength=len(sorted_ids))
        json_areas = np.array([segments_info[i].get("area", -1) for i in order])
        absent = sorted_ids[areas == 0]
        if absent.size:
            raise DatasetError(
                f"{png_file}: JSON segment ids {absent[:10].tolist()} are absent from the PNG."
            )
        wrong = (areas != json_areas) & (json_areas >= 0)
        if wrong.any():
            raise DatasetError(
                f"{png_file}: segment {int(sorted_ids[wrong][0])} has "
                f"{int(areas[wrong][0])} pixels in the PNG but area "
                f"{int(json_areas[wrong][0])} in the JSON."
            )
        if not len(sorted_ids):  # an all-void image
            return np.zeros(ids.shape, np.int32)
        label = np.where(known, values[order][position], 0)
        return label.astype(np.int32)

    def _load_or_skip(self, index):
        index = int(index)
        nothing = np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.int32), False
        if index in self._bad:  # Known bad: skipped again without reading or warning.
            return nothing
        try:
            image, label = self.load(index)
            return image, label, True
        except DatasetError as error:
            if self.on_error == "raise":
                raise
            with self._bad_lock:  # tf.data's parallel calls may meet the same sample.
                if index in self._bad:
                    return nothing
                self._bad.add(index)
                self.skipped.append(str(error))
            warnings.warn(f"Skipped a sample ({len(self.skipped)} so far): {error}")
            if len(self._bad) == len(self):
                # An endless stream of nothing would never yield a batch.
                raise DatasetError(
                    f"Every one of the {len(self)} samples was skipped as unreadable; nothing "
                    f"is left to train on. First error: {self.skipped[0]}"
                ) from error
            return nothing

    def as_dataset(
        self,
        crop_size=None,
        training=True,
        batch_size=1,
        seed=None,
        shuffle=None,
        repeat=None,
        drop_remainder=None,
        min_scale=0.5,
        max_scale=1.5,
        scale_step=0.1,
        small_instance_area=0,
        small_instance_weight=1.0,
        max_thing_id=MAX_THING_ID,
        num_parallel_calls=None,
        model=None,
        start=0,
    ):
        """A `tf.data.Dataset` of `(images, y_true)` batches for `MaXDeepLab`.

        `images` `[B, crop, crop, 3]` float32 in 0..255 (padding 127.5): the
        model's preprocessor normalises them. For a `model` without one (a
        `KMaXDeepLab`, or a `MaXDeepLab` built with `preprocessor=None`) the
        images come normalised already, `images / 127.5 - 1`, as its network
        takes them. `y_true`: `semantic_gt`, `thing_id_mask_gt`,
        `thing_id_class_gt` `[B, max_thing_id]`, `semantic_loss_weight`,
        `panoptic_gt`, `is_crowd_gt` (see `keras_maxdeeplab.data.targets`).

        Args:
            crop_size: int or `(height, width)`, each 16k + 1 (641, 1025);
                default: the `model`'s input size.
            training: deeplab2's augmentation (`preprocess_for_training`) when
                True; its evaluation preprocessing (resize the longest side to
                the crop, pad bottom/right) when False.
            seed: fixes the shuffle order and every augmentation (stateless
                random ops, independent of TensorFlow's global seed); each pass
                over the data draws new ones. None: a random seed.
            shuffle: defaults to `training`.
            repeat: an endless stream of passes (deeplab2 trains by steps: give
                `fit` a `steps_per_epoch`); defaults to `training`. A finite
                dataset restarts from the first pass each time it is iterated.
            drop_remainder: defaults to `training`.
            min_scale, max_scale, scale_step: random scales 0.5, 0.6, ..., 1.5.
            small_instance_area, small_instance_weight: semantic loss weight
                of small thing instances (deeplab2's MaX-DeepLab-L: 4096, 3.0).
            num_parallel_calls: decoding / augmentation workers (default
                `tf.data.AUTOTUNE`).
            model: the `MaXDeepLab` or `KMaXDeepLab` to feed: its input size
                is the crop (a `crop_size` it cannot take is an error); without
                a preprocessor it gets normalised images.
            start: samples of the stream to skip, e.g. `steps * batch_size`
                when resuming training after `steps`: the stream then goes on
                exactly where it was (same order, same augmentation).

        Example:
        >>> for images, y_true in data.as_dataset(crop_size=129, batch_size=2, seed=0).take(1):
        ...     images.shape, y_true["thing_id_mask_gt"].shape  # (2, 129, 129, 3), (2, 129, 129)
        >>> model.fit(data.as_dataset(model=model, batch_size=8, seed=0), steps_per_epoch=1000)
        """
        import tensorflow as tf

        # Registered once however often this is called (unregister drops an earlier
        # registration); atexit handlers run before the interpreter's shutdown.
        atexit.unregister(_free_pipelines_before_exit)
        atexit.register(_free_pipelines_before_exit)

        from keras_maxdeeplab.data.augmentation import preprocess_for_evaluation
        from keras_maxdeeplab.data.augmentation import preprocess_for_training
        from keras_maxdeeplab.data.targets import panoptic_targets

        crop_size = _crop_size(crop_size, model)
        if len(crop_size) != 2 or any(s < 17 or (s - 1) % 16 for s in crop_size):
            raise ValueError(
                f"crop_size must be 16k + 1 (e.g. 129, 641, 1025) per side; got {crop_size}."
            )
        shuffle = training if shuffle is None else shuffle
        repeat = training if repeat is None else repeat
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % 2**31)
        drop_remainder = training if drop_remainder is None else drop_remainder
        parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
        things = self.thing_class_ids
        # keras-hub's fit applies a model's preprocessor; a model without one
        # would otherwise see 0..255 pixels.
        normalise = model is not None and getattr(model, "preprocessor", None) is None

        def load(index):
            image, label, ok = tf.numpy_function(
                self._load_or_skip, [index], [tf.uint8, tf.int32, tf.bool]
            )
            return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(label, [None, None]), ok

        def preprocess(image, label, sample_seed):
            if training:
                image, label = preprocess_for_training(
                    image, label, crop_size, sample_seed, min_scale, max_scale, scale_step
                )
            else:
                image, label = preprocess_for_evaluation(image, label, crop_size)
            if normalise:
                image = image / 127.5 - 1.0
            targets = panoptic_targets(
                label,
                things,
                LABEL_DIVISOR,
                max_thing_id,
                small_instance_area,
                small_instance_weight,
            )
            return image, targets

        count = len(self)

        def one_pass(number):
            """Pass `number`: its sample order and one stateless seed per sample,
            both functions of (`seed`, pass, position) alone."""
            order = tf.range(count, dtype=tf.int64)
            if shuffle:
                order = tf.argsort(tf.random.stateless_uniform([count], [seed, number]))
                order = tf.cast(order, tf.int64)
            positions = number * count + tf.range(count, dtype=tf.int64)
            seeds = tf.stack([tf.fill([count], tf.constant(seed, tf.int64)), positions], axis=1)
            return tf.data.Dataset.from_tensor_slices((order, seeds))

        passes = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)
        dataset = passes.flat_map(one_pass).skip(start)
        dataset = dataset.map(
            lambda index, sample_seed: (*load(index), sample_seed), num_parallel_calls=parallel
        )
        if self.on_error == "skip":
            dataset = dataset.filter(lambda image, label, ok, sample_seed: ok)
        dataset = dataset.map(
            lambda image, label, ok, sample_seed: preprocess(image, label, sample_seed),
            num_parallel_calls=parallel,
        )
        return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
