"""Synthetic panoptic scenes, optionally written as a COCO panoptic dataset.

A scene is 2 or 3 horizontal "stuff" bands with wavy borders (one segment per
category), covered by 1..`max_things` shape instances that may occlude each
other. A class is told by colour and shape together: every category has its
own colour family (a per-segment colour jitter plus pixel noise) and the stuff
categories their own texture (ripples, grain). The scenes are meant to be
learnable by a tiny model in minutes yet not trivial (occlusion, border
clipping, sizes from small to large, textures).

Categories (`SYNTHETIC_CATEGORIES`, sorted by id; the ids are not contiguous):

    id   name       isthing  colour family
    1    circle     1        red
    2    rectangle  1        purple (rotated, aspect 0.5..1)
    3    triangle   1        orange (equilateral, rotated)
    4    star       1        white  (five points, rotated)
    101  sky        0        light blue, smooth
    102  grass      0        green, grainy stripes
    103  water      0        dark blue, horizontal waves
    104  sand       0        beige, speckled

Segment ids follow panopticapi's converters, so that a panoptic PNG shows
the category colours: a segment's id is `rgb2id` of its category colour for
the first segment of the category in the image (always so for stuff), of that
colour shifted by up to 30 per channel for later ones (distinct within the
image, never 0). Id 0 is void.
"""

import collections
import json
import os

import numpy as np
from PIL import Image

from keras_maxdeeplab.coco.panoptic_format import id2rgb
from keras_maxdeeplab.coco.panoptic_format import rgb2id

SYNTHETIC_CATEGORIES = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 50, 50], "supercategory": "shape"},
    {"id": 2, "name": "rectangle", "isthing": 1, "color": [150, 70, 210], "supercategory": "shape"},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [250, 160, 30], "supercategory": "shape"},
    {"id": 4, "name": "star", "isthing": 1, "color": [245, 245, 245], "supercategory": "shape"},
    {"id": 101, "name": "sky", "isthing": 0, "color": [140, 195, 240], "supercategory": "sky"},
    {"id": 102, "name": "grass", "isthing": 0, "color": [70, 150, 60], "supercategory": "plant"},
    {"id": 103, "name": "water", "isthing": 0, "color": [35, 80, 150], "supercategory": "water"},
    {"id": 104, "name": "sand", "isthing": 0, "color": [215, 190, 135], "supercategory": "ground"},
]

_COLOR = {c["id"]: np.array(c["color"], np.float32) for c in SYNTHETIC_CATEGORIES}
_THING_IDS = [c["id"] for c in SYNTHETIC_CATEGORIES if c["isthing"]]
_STUFF_IDS = [c["id"] for c in SYNTHETIC_CATEGORIES if not c["isthing"]]
_SHAPE = {1: "circle", 2: "rectangle", 3: "triangle", 4: "star"}
# Texture: (pixel noise std, ripple amplitude, ripple frequency (y, x) in cycles/pixel).
# Things are plain (mild noise); the stuff textures differ from each other.
_TEXTURE = {
    **dict.fromkeys(_THING_IDS, (6.0, 0.0, (0.0, 0.0))),
    101: (3.0, 8.0, (1 / 64, 0.0)),
    102: (16.0, 10.0, (1 / 20, 1 / 4)),
    103: (5.0, 18.0, (1 / 6, 1 / 40)),
    104: (10.0, 0.0, (0.0, 0.0)),
}
# Void regions are grey clutter, unlike every category.
_VOID_COLOR = np.array([128, 128, 128], np.float32)
_VOID_TEXTURE = (40.0, 0.0, (0.0, 0.0))
# Per-segment colour shift (each channel); the category colours are >= 110
# apart, so a segment's mean colour is nearest to its own category's.
_COLOR_JITTER = 15
# Thing half-extent as a fraction of the image's shorter side.
_THING_SIZE = (0.07, 0.2)
_CROWD_MEMBER_SIZE = (0.05, 0.09)
# A thing or crowd region keeps at least this fraction of its area (inside the
# image) visible when later ones cover it, so it stays recognisable.
_MIN_VISIBLE_FRACTION = 0.5
_PLACEMENT_TRIES = 10
_MIN_IMAGE_SIDE = 32
_SCENE_OPTIONS = ("max_things", "min_area", "crowd_regions", "void_regions")

SyntheticPanopticDataset = collections.namedtuple(
    "SyntheticPanopticDataset", ["images_dir", "panoptic_dir", "panoptic_json"]
)


def synthetic_scene(
    rng_or_seed, image_size=(128, 128), max_things=5, min_area=64, crowd_regions=0, void_regions=0
):
    """One synthetic panoptic scene.

    Args:
        rng_or_seed: a `np.random.Generator` (its state advances) or a seed for
            `np.random.default_rng`.
        image_size: `(height, width)`, each >= 32.
        max_things: the scene has 1..`max_things` thing instances (fewer when
            no free place is found for one).
        min_area: the smallest visible area, in pixels, of every segment; an
            instance also keeps half of its drawn area visible.
        crowd_regions: number of crowd segments (`iscrowd` 1), 0..4: each a
            cluster of 3..5 small shapes of its own thing category (one crowd
            segment per category, as in COCO), under the instances.
        void_regions: number of grey clutter regions labelled void (id 0).

    Returns:
        `(image, panoptic_ids, segments_info)`: image `[H, W, 3]` uint8,
        panoptic_ids `[H, W]` int64 (0 = void) and, in painting order (stuff
        first), `[{"id", "category_id", "iscrowd", "area", "bbox"}]` with
        the visible area and COCO bbox `[x, y, width, height]` of each segment.

    Example:
    >>> image, ids, segments = synthetic_scene(0)
    >>> image.shape, ids.shape, segments[0]["category_id"]  # ((128, 128, 3), (128, 128), 103)
    """
    height, width = _check_scene_arguments(
        image_size, max_things, min_area, crowd_regions, void_regions
    )
    rng = np.random.default_rng(rng_or_seed)
    canvas = _Canvas(rng, height, width, min_area)
    canvas.add_stuff_bands(rng.choice(_STUFF_IDS, rng.integers(2, 4), replace=False))
    for _ in range(void_regions):
        canvas.add_void_region()
    for category_id in rng.choice(_THING_IDS, crowd_regions, replace=False):
        canvas.add_crowd_region(int(category_id))
    for _ in range(rng.integers(1, max_things + 1)):
        canvas.add_thing(int(rng.choice(_THING_IDS)))
    return canvas.result()


def write_synthetic_panoptic_dataset(
    output_dir, num_images, image_size=(128, 128), seed=0, **scene_options
):
    """Writes `num_images` synthetic scenes in the COCO panoptic layout.

    Files: `output_dir/images/NNNNNN.png` (PNG rather than COCO's JPEG, so the
    pixels are exactly the generated ones and the bytes do not depend on a
    JPEG encoder), `output_dir/panoptic/NNNNNN.png` (ids as
    `R + 256 G + 256^2 B`) and `output_dir/panoptic.json` with `images`,
    `annotations` and `categories` (`SYNTHETIC_CATEGORIES`). Image `i` (id
    `i`) is drawn from the seed `(seed, i)`: the files are the same for the
    same arguments, image `i` does not depend on `num_images`, and another
    `seed` gives an independent (e.g. held-out) set.

    Args:
        output_dir: created if absent.
        num_images: >= 1.
        image_size: `(height, width)`, each >= 32.
        seed: integer >= 0.
        **scene_options: `max_things`, `min_area`, `crowd_regions`,
            `void_regions` of `synthetic_scene`.

    Returns:
        `SyntheticPanopticDataset(images_dir, panoptic_dir, panoptic_json)`.

    Example:
    >>> paths = write_synthetic_panoptic_dataset("/tmp/synthetic_val", 50, seed=1)
    >>> pq_compute(paths.panoptic_json, "predictions.json", paths.panoptic_dir)
    """
    unknown = sorted(set(scene_options) - set(_SCENE_OPTIONS))
    if unknown:
        raise ValueError(
            f"Unknown scene options {unknown}; expected some of {list(_SCENE_OPTIONS)}."
        )
    if not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images must be an integer >= 1; got {num_images!r}.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}.")
    paths = SyntheticPanopticDataset(
        os.path.join(output_dir, "images"),
        os.path.join(output_dir, "panoptic"),
        os.path.join(output_dir, "panoptic.json"),
    )
    os.makedirs(paths.images_dir, exist_ok=True)
    os.makedirs(paths.panoptic_dir, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        image, ids, segments_info = synthetic_scene(
            np.random.default_rng([seed, index]), image_size, **scene_options
        )
        file_name = f"{index:06d}.png"
        Image.fromarray(image).save(os.path.join(paths.images_dir, file_name))
        Image.fromarray(id2rgb(ids)).save(os.path.join(paths.panoptic_dir, file_name))
        height, width = ids.shape
        images.append({"id": index, "file_name": file_name, "height": height, "width": width})
        annotations.append(
            {"image_id": index, "file_name": file_name, "segments_info": segments_info}
        )
    with open(paths.panoptic_json, "w") as f:
        json.dump(
            {"images": images, "annotations": annotations, "categories": SYNTHETIC_CATEGORIES}, f
        )
    return paths


def _check_scene_arguments(image_size, max_things, min_area, crowd_regions, void_regions):
    if (
        len(image_size) != 2
        or not all(isinstance(side, (int, np.integer)) for side in image_size)
        or min(image_size) < _MIN_IMAGE_SIDE
    ):
        raise ValueError(
            f"image_size must be (height, width) with integers >= {_MIN_IMAGE_SIDE}; "
            f"got {image_size!r}."
        )
    # (name, value, least, most); COCO has one crowd segment per category and image.
    for name, value, least, most in (
        ("max_things", max_things, 1, np.inf),
        ("min_area", min_area, 1, np.inf),
        ("crowd_regions", crowd_regions, 0, len(_THING_IDS)),
        ("void_regions", void_regions, 0, np.inf),
    ):
        if not isinstance(value, (int, np.integer)) or not least <= value <= most:
            expected = f">= {least}" if most == np.inf else f"in {least}..{most}"
            raise ValueError(f"{name} must be an integer {expected}; got {value!r}.")
    largest_thing = np.pi * (_THING_SIZE[1] * min(image_size)) ** 2
    if min_area > largest_thing:
        raise ValueError(
            f"min_area {min_area} exceeds the largest thing of a {image_size} image "
            f"({int(largest_thing)} pixels); use a smaller min_area or a larger image."
        )
    return int(image_size[0]), int(image_size[1])


class _Canvas:
    """The scene being drawn: image, the segment owning each pixel, segments.

    Segments are drawn in order, a later one over the earlier ones; one is
    kept only if it and all earlier segments keep their required visible area.
    """

    def __init__(self, rng, height, width, min_area):
        self.rng = rng
        self.min_area = min_area
        self.shorter_side = min(height, width)
        # Pixel centres.
        self.ys, self.xs = np.mgrid[0:height, 0:width] + 0.5
        self.image = np.zeros((height, width, 3), np.float32)
        self.owner = np.zeros((height, width), np.int64)
        # Per segment: category id (0 = void), iscrowd, required visible area.
        self.categories, self.crowd, self.required = [], [], []

    def add_stuff_bands(self, category_ids):
        """Partitions the image into one horizontal band per category, top to bottom."""
        height, width = self.owner.shape
        count = len(category_ids)
        # Each border wavers around an evenly spaced height; with the small
        # jitter and amplitude a band stays >= 0.15 of the image high, more
        # than any allowed min_area.
        for k in range(1, count):
            level = height * (k / count + self.rng.uniform(-0.05, 0.05))
            amplitude = height * self.rng.uniform(0.0, 0.04)
            frequency = self.rng.uniform(1.0, 4.0) * 2 * np.pi / width
            phase = self.rng.uniform(0, 2 * np.pi)
            self.owner += self.ys >= level + amplitude * np.sin(frequency * self.xs + phase)
        for k, category_id in enumerate(category_ids):
            self.categories.append(int(category_id))
            self.crowd.append(0)
            self.required.append(self.min_area)
            self._paint(self.owner == k, _COLOR[category_id], _TEXTURE[category_id])

    def add_thing(self, category_id):
        for _ in range(_PLACEMENT_TRIES):
            mask = self._random_shape(_SHAPE[category_id], _THING_SIZE)
            if self._place(mask, category_id, iscrowd=0):
                self._paint(mask, _COLOR[category_id], _TEXTURE[category_id])
                return

    def add_crowd_region(self, category_id):
        spread = _CROWD_MEMBER_SIZE[1] * self.shorter_side
        for _ in range(_PLACEMENT_TRIES):
            centre = self.rng.uniform(0, self.owner.shape)
            members = [
                self._random_shape(
                    _SHAPE[category_id],
                    _CROWD_MEMBER_SIZE,
                    centre + self.rng.uniform(-spread, spread, 2),
                )
                for _ in range(self.rng.integers(3, 6))
            ]
            if self._place(np.logical_or.reduce(members), category_id, iscrowd=1):
                # Each member has its own colour, so the region looks like a group.
                for member in members:
                    self._paint(member, _COLOR[category_id], _TEXTURE[category_id])
                return

    def add_void_region(self):
        for _ in range(_PLACEMENT_TRIES):
            mask = self._random_shape("rectangle", _THING_SIZE)
            if self._place(mask, 0, iscrowd=0):
                self._paint(mask, _VOID_COLOR, _VOID_TEXTURE)
                return

    def result(self):
        segment_ids = self._segment_ids()
        segments_info = []
        for index, segment_id in enumerate(segment_ids.tolist()):
            if segment_id == 0:
                continue
            rows, columns = np.nonzero(self.owner == index)
            y, x = int(rows.min()), int(columns.min())
            segments_info.append(
                {
                    "id": segment_id,
                    "category_id": self.categories[index],
                    "iscrowd": self.crowd[index],
                    "area": int(rows.size),
                    "bbox": [x, y, int(columns.max()) - x + 1, int(rows.max()) - y + 1],
                }
            )
        image = np.clip(np.round(self.image), 0, 255).astype(np.uint8)
        return image, segment_ids[self.owner], segments_info

    def _place(self, mask, category_id, iscrowd):
        """Adds the segment `mask` on top unless it or an earlier one would be too small."""
        area = mask.sum()
        if area < self.min_area:
            return False
        visible = np.bincount(self.owner[~mask], minlength=len(self.required))
        if np.any(visible < self.required):
            return False
        self.owner[mask] = len(self.required)
        self.categories.append(int(category_id))
        self.crowd.append(iscrowd)
        self.required.append(max(self.min_area, _MIN_VISIBLE_FRACTION * area))
        return True

    def _paint(self, mask, color, texture):
        noise_std, ripple_amplitude, (frequency_y, frequency_x) = texture
        phase = self.rng.uniform(0, 2 * np.pi)
        ripple = ripple_amplitude * np.sin(
            2 * np.pi * (frequency_y * self.ys[mask] + frequency_x * self.xs[mask]) + phase
        )
        segment_color = color + self.rng.uniform(-_COLOR_JITTER, _COLOR_JITTER, 3)
        noise = self.rng.normal(0.0, noise_std, (ripple.size, 3))
        self.image[mask] = segment_color + ripple[:, None] + noise

    def _random_shape(self, shape, size_range, centre=None):
        """Mask of a shape with random size, angle and (unless given) centre."""
        if centre is None:
            centre = self.rng.uniform(0, self.owner.shape)
        size = self.rng.uniform(*size_range) * self.shorter_side
        angle = self.rng.uniform(0, 2 * np.pi)
        dy, dx = self.ys - centre[0], self.xs - centre[1]
        if shape == "circle":
            return dy**2 + dx**2 <= size**2
        if shape == "rectangle":
            half_height = size * self.rng.uniform(0.5, 1.0)
            along = dx * np.cos(angle) + dy * np.sin(angle)
            across = -dx * np.sin(angle) + dy * np.cos(angle)
            return (np.abs(along) <= size) & (np.abs(across) <= half_height)
        # Triangle: 3 corners on a circle; star: 5 outer and 5 inner corners.
        radii = np.full(3, size) if shape == "triangle" else np.tile([size, 0.45 * size], 5)
        angles = angle + np.arange(len(radii)) * 2 * np.pi / len(radii)
        return _polygon_mask(radii * np.sin(angles), radii * np.cos(angles), dy, dx)

    def _segment_ids(self):
        """panopticapi's colour ids: the category colour for the first segment of a
        category, then colours shifted by up to 30 per channel; 0 for void regions."""
        used = {0}
        segment_ids = []
        for category_id in self.categories:
            if category_id == 0:
                segment_ids.append(0)
                continue
            color = _COLOR[category_id].astype(np.int64)
            segment_id = _color_id(color)
            while segment_id in used:
                segment_id = _color_id(np.clip(color + self.rng.integers(-30, 31, 3), 0, 255))
            used.add(segment_id)
            segment_ids.append(segment_id)
        return np.array(segment_ids, np.int64)


def _color_id(color):
    return int(rgb2id(np.reshape(color, (1, 1, 3)))[0, 0])


def _polygon_mask(vertex_ys, vertex_xs, ys, xs):
    """Even-odd rule: a pixel is inside when a ray to its right crosses an odd number of edges."""
    inside = np.zeros(ys.shape, bool)
    for y0, x0, y1, x1 in zip(vertex_ys, vertex_xs, np.roll(vertex_ys, 1), np.roll(vertex_xs, 1)):
        if y0 == y1:
            continue  # A horizontal edge is never crossed by a horizontal ray.
        crosses = (ys < y0) != (ys < y1)
        crossing_x = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xs < crossing_x)
    return inside
