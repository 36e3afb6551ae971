"""Cityscapes panoptic through cityscapesscripts' own converter, read as the README says.

`csCreatePanopticImgs` (cityscapesscripts.preparation.createPanopticImgs) turns
Cityscapes' `*_gtFine_instanceIds.png` into the COCO panoptic format, the files
deeplab2 itself converts for its Cityscapes kMaX-DeepLab. Here it converts a
small hand-made instanceIds map; `COCOPanopticDataset` reads the result with the
images linked under the names its JSON gives them.
"""

import os

import numpy as np
import pytest
from PIL import Image

from keras_maxdeeplab.coco import CITYSCAPES_PANOPTIC_CATEGORIES
from keras_maxdeeplab.data import COCOPanopticDataset

convert = pytest.importorskip(
    "cityscapesscripts.preparation.createPanopticImgs",
    reason="cityscapesscripts (a dev dependency) is not installed",
)

NAME = "frankfurt_000000_000294"
SHAPE = (40, 60)


def _instance_ids():
    """Cityscapes' encoding: label id for stuff and for a thing region
    without instances (a crowd), label id * 1000 + k for thing instance k."""
    ids = np.full(SHAPE, 7, np.uint16)  # road
    ids[:15] = 23  # sky
    ids[20:30, 5:20] = 26000  # car, instance 0
    ids[20:30, 30:45] = 26001  # car, instance 1
    ids[5:12, 40:55] = 24  # a group of persons: crowd
    ids[35:] = 1  # ego vehicle: ignored in evaluation, so void
    return ids


def _link_images(left_img8bit, folder):
    """The README's step: the JSON names image <name> `<name>_gtFine_leftImg8bit.png`
    without its city folder, so link each image under that name into one folder."""
    os.makedirs(folder)
    for city in os.listdir(left_img8bit):
        for file in os.listdir(os.path.join(left_img8bit, city)):
            name = file.replace("_leftImg8bit.png", "")
            os.symlink(
                os.path.join(left_img8bit, city, file),
                os.path.join(folder, f"{name}_gtFine_leftImg8bit.png"),
            )


def test_cityscapes_panoptic_files_read_as_deeplab2s_targets(tmp_path):
    gt_fine, left_img8bit = tmp_path / "gtFine", tmp_path / "leftImg8bit"
    os.makedirs(gt_fine / "val" / "frankfurt")
    os.makedirs(left_img8bit / "val" / "frankfurt")
    ids_file = gt_fine / "val" / "frankfurt" / f"{NAME}_gtFine_instanceIds.png"
    Image.fromarray(_instance_ids()).save(ids_file)
    image = np.random.RandomState(0).randint(0, 256, (*SHAPE, 3)).astype(np.uint8)
    Image.fromarray(image).save(left_img8bit / "val" / "frankfurt" / f"{NAME}_leftImg8bit.png")
    convert.convert2panoptic(str(gt_fine), str(gt_fine), setNames=["val"])
    _link_images(str(left_img8bit / "val"), str(tmp_path / "images"))

    data = COCOPanopticDataset(
        str(tmp_path / "images"),
        str(gt_fine / "cityscapes_panoptic_val"),
        str(gt_fine / "cityscapes_panoptic_val.json"),
    )
    # The tool's 19 categories are ours, in the same order: class k is category k - 1.
    listed = [(c["id"], c["name"], c["isthing"], list(c["color"])) for c in data.categories]
    ours = CITYSCAPES_PANOPTIC_CATEGORIES
    assert listed == [(c["id"], c["name"], c["isthing"], list(c["color"])) for c in ours]
    assert data.thing_class_ids == tuple(range(12, 20))

    loaded, label = data.load(0)
    np.testing.assert_array_equal(loaded, image)
    road, sky, person, car = 1, 11, 12, 14  # ids 7, 23, 24, 26
    expected = np.full(SHAPE, road * 256, np.int32)
    expected[:15] = sky * 256
    expected[20:30, 5:20] = car * 256 + 1
    expected[20:30, 30:45] = car * 256 + 2
    expected[5:12, 40:55] = person * 256  # crowd: the class without an instance
    expected[35:] = 0
    np.testing.assert_array_equal(label, expected)
