"""The COCO panoptic format and deeplab2's class layout: the bottom of the package.

Every other part (data, evaluation, post-processing, visualisation, the loss)
takes these from here and none from another.
"""

from keras_maxdeeplab.coco.categories import ADE20K_PANOPTIC_CATEGORIES
from keras_maxdeeplab.coco.categories import CITYSCAPES_PANOPTIC_CATEGORIES
from keras_maxdeeplab.coco.categories import COCO_PANOPTIC_CATEGORIES
from keras_maxdeeplab.coco.categories import COCO_THING_CLASS_IDS
from keras_maxdeeplab.coco.categories import LABEL_DIVISOR
from keras_maxdeeplab.coco.categories import check_categories
from keras_maxdeeplab.coco.categories import contiguous_categories
from keras_maxdeeplab.coco.categories import thing_class_ids
from keras_maxdeeplab.coco.categories import thing_stuff_class_ids
from keras_maxdeeplab.coco.panoptic_format import CocoPanopticWriter
from keras_maxdeeplab.coco.panoptic_format import coco_bbox
from keras_maxdeeplab.coco.panoptic_format import coco_panoptic_to_segments
from keras_maxdeeplab.coco.panoptic_format import id2rgb
from keras_maxdeeplab.coco.panoptic_format import panoptic_label_to_coco
from keras_maxdeeplab.coco.panoptic_format import read_coco_panoptic
from keras_maxdeeplab.coco.panoptic_format import read_panoptic_png
from keras_maxdeeplab.coco.panoptic_format import rgb2id
from keras_maxdeeplab.coco.panoptic_format import save_coco_panoptic
from keras_maxdeeplab.coco.panoptic_format import to_coco_panoptic
