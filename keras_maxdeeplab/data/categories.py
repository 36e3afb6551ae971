"""Panoptic category lists: validation and deeplab2's contiguous class ids.

A category is a COCO-style dict `{"id", "name", "isthing"}` (optionally
`"color": [r, g, b]`). Models and datasets keep the list sorted by `id`; the
contiguous class id of `categories[k]` is `k + 1` and 0 is void, as deeplab2
maps COCO (things 1..80, stuff 81..133).
"""

import json
import os

_COCO_FILE = os.path.join(os.path.dirname(__file__), "coco_panoptic_categories.json")


def check_categories(categories, source="categories"):
    """Validates a category list and returns it sorted by id, as plain dicts.

    Raises `ValueError` naming `source` for an empty list, a category without
    an integer `id` >= 1, a `name` or an `isthing` flag, or duplicate ids.

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
                "'id' (int >= 1), 'name' and 'isthing' (0 or 1)."
            )
        if not isinstance(category["id"], int) or category["id"] < 1:
            raise ValueError(f"{source}: category id {category['id']!r} is not an integer >= 1.")
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


def _load_coco_categories():
    with open(_COCO_FILE) as f:
        return check_categories(json.load(f), _COCO_FILE)


# COCO panoptic's 133 categories with their official colours (deeplab2's
# `coco_constants`): 80 things, then 53 stuff.
COCO_PANOPTIC_CATEGORIES = _load_coco_categories()
