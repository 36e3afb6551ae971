"""Datasets in COCO panoptic format, deeplab2's targets and augmentation."""

from keras_maxdeeplab.coco.categories import ADE20K_PANOPTIC_CATEGORIES
from keras_maxdeeplab.coco.categories import CITYSCAPES_PANOPTIC_CATEGORIES
from keras_maxdeeplab.coco.categories import COCO_PANOPTIC_CATEGORIES
from keras_maxdeeplab.coco.categories import check_categories
from keras_maxdeeplab.coco.categories import contiguous_categories
from keras_maxdeeplab.coco.categories import thing_class_ids
from keras_maxdeeplab.coco.panoptic_format import panoptic_label_to_coco
from keras_maxdeeplab.data.coco_panoptic import COCOPanopticDataset
from keras_maxdeeplab.data.coco_panoptic import DatasetError
from keras_maxdeeplab.data.synthetic import SYNTHETIC_CATEGORIES
from keras_maxdeeplab.data.synthetic import synthetic_scene
from keras_maxdeeplab.data.synthetic import write_synthetic_panoptic_dataset
