"""Panoptic post-processing of MaX-DeepLab outputs."""

from keras_maxdeeplab.postprocessing.panoptic import postprocess_panoptic
from keras_maxdeeplab.postprocessing.panoptic import thing_stuff_class_ids
from keras_maxdeeplab.postprocessing.segments import post_process_panoptic_segmentation
from keras_maxdeeplab.postprocessing.segments import segments_from_panoptic
from keras_maxdeeplab.postprocessing.segments import to_coco_panoptic
