"""Panoptic post-processing of MaX-DeepLab outputs."""

from keras_maxdeeplab.postprocessing.panoptic import postprocess_panoptic
from keras_maxdeeplab.postprocessing.panoptic import thing_stuff_class_ids
