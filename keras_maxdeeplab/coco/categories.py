"""Panoptic category lists and deeplab2's class layout.

A category is a COCO-style dict `{"id", "name", "isthing"}` (optionally
`"color": [r, g, b]`). Models and datasets keep the list sorted by `id`; the
contiguous class id of `categories[k]` is `k + 1` and 0 is void, as deeplab2
maps COCO (things 1..80, stuff 81..133) and ADE20K (category ids 0..149 of
Mask2Former's COCO-format conversion, which deeplab2 reads as classes 1..150,
things and stuff interleaved). Cityscapes' classes are deeplab2's train ids
0..18 plus one (deeplab2's void there is 255, here 0). Panoptic labels are
`class * LABEL_DIVISOR + instance`, and the class head orders its channels
things first, then stuff (`thing_stuff_class_ids`).
"""

import json
import os

# deeplab2's panoptic label: `class * LABEL_DIVISOR + instance`.
LABEL_DIVISOR = 256
# deeplab2's Cityscapes divisor: its kMaX models' 256 mask slots do not fit under 256.
CITYSCAPES_LABEL_DIVISOR = 1000

_COCO_FILE = os.path.join(os.path.dirname(__file__), "coco_panoptic_categories.json")
_ADE20K_FILE = os.path.join(os.path.dirname(__file__), "ade20k_panoptic_categories.json")
_CITYSCAPES_FILE = os.path.join(os.path.dirname(__file__), "cityscapes_panoptic_categories.json")


def prediction_label_divisor(num_mask_slots, label_divisor=LABEL_DIVISOR):
    """The divisor `D` of predicted `class * D + instance` maps, whose thing
    instances are mask slots + 1: `label_divisor` while the slots fit under
    it, else deeplab2's Cityscapes 1000 (its kMaX models have 256 slots).

    Example:
    >>> prediction_label_divisor(128), prediction_label_divisor(256)
    (256, 1000)
    """
    if num_mask_slots < label_divisor:
        return label_divisor
    return max(label_divisor, CITYSCAPES_LABEL_DIVISOR)


def check_categories(categories, source="categories"):
    """Validates a category list and returns it sorted by id, as plain dicts.

    Raises `ValueError` naming `source` for an empty list, a category without
    an integer `id` >= 0, a `name` or an `isthing` flag, or duplicate ids.
    (Category ids may start at 0, as in ADE20K's COCO-format files: the
    panoptic PNGs' void is segment id 0, not a category.)

    Example:
    >>> check_categories([{"id": 7, "name": "road", "isthing": 0}])
    [{'id': 7, 'name': 'road', 'isthing': 0}]
    """
    if not categories:
        raise ValueError(f"{source}: the category list is empty; at least one category is needed.")
    checked = []
    for category in categories:
        missing = [key for key in ("id", "name", "isthing") if key not in category]
        if missing:
            raise ValueError(
                f"{source}: category {category!r} lacks {missing}; each category needs "
                "'id' (int >= 0), 'name' and 'isthing' (0 or 1)."
            )
        identifier = category["id"]
        if not isinstance(identifier, int) or isinstance(identifier, bool) or identifier < 0:
            raise ValueError(f"{source}: category id {category['id']!r} is not an integer >= 0.")
        checked.append(dict(category))
    ids = [c["id"] for c in checked]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{source}: duplicate category ids {duplicates}.")
    return sorted(checked, key=lambda c: c["id"])


def contiguous_categories(categories):
    """deeplab2's contiguous ids: `{contiguous_id: category}`, from 1 in id order.

    Example:
    >>> contiguous_categories(COCO_PANOPTIC_CATEGORIES)[81]["name"]  # 'banner'
    """
    return {index + 1: c for index, c in enumerate(check_categories(categories))}


def thing_class_ids(categories):
    """Contiguous ids of the thing categories (COCO: 1..80)."""
    return tuple(k for k, c in contiguous_categories(categories).items() if c["isthing"])


def thing_stuff_class_ids(num_class_head_channels, thing_class_ids, void_label=0):
    """Dataset class id of each class-head channel (things first, then stuff).

    deeplab2's order: `thing_class_ids + stuff_class_ids`, the last channel
    being "no object". COCO: channel k is class k + 1.

    Example:
    >>> thing_stuff_class_ids(134, range(1, 81))[:3]  # [1, 2, 3]
    """
    num_thing_stuff = num_class_head_channels - 1
    if void_label >= num_thing_stuff:
        candidates = range(num_thing_stuff)
    else:
        candidates = [i for i in range(num_thing_stuff + 1) if i != void_label]
    things = sorted(int(i) for i in thing_class_ids)
    stuff = [i for i in candidates if i not in set(things)]
    if len(things) + len(stuff) != num_thing_stuff:
        raise ValueError(
            f"thing_class_ids {things} do not fit {num_thing_stuff} classes with void "
            f"label {void_label}."
        )
    return things + stuff


def _load_categories(path):
    with open(path) as f:
        return check_categories(json.load(f), path)


# COCO panoptic's 133 categories with their official colours (deeplab2's
# `coco_constants`): 80 things, then 53 stuff.
COCO_PANOPTIC_CATEGORIES = _load_categories(_COCO_FILE)

# ADE20K panoptic's 150 categories (100 things, 50 stuff, interleaved):
# deeplab2's `ade20k_constants` names and colours, with the ids of
# Mask2Former's `prepare_ade20k_pan_seg.py` COCO-format files (deeplab2's
# class k is category k - 1; its class 0 "other-objects" is void).
ADE20K_PANOPTIC_CATEGORIES = _load_categories(_ADE20K_FILE)
# Cityscapes' 19 evaluated classes with the label ids, names and colours of
# cityscapesscripts (`createPanopticImgs` writes these ids); deeplab2's train
# ids 0..18 are classes 1..19 here, things (person..bicycle) the last 8.
CITYSCAPES_PANOPTIC_CATEGORIES = _load_categories(_CITYSCAPES_FILE)

# Contiguous ids of COCO's thing classes: 1..80.
COCO_THING_CLASS_IDS = thing_class_ids(COCO_PANOPTIC_CATEGORIES)
