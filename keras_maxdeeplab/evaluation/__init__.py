"""Panoptic quality evaluation (COCO panopticapi rules)."""

from keras_maxdeeplab.evaluation.panoptic_quality import PQStat
from keras_maxdeeplab.evaluation.panoptic_quality import id2rgb
from keras_maxdeeplab.evaluation.panoptic_quality import pq_compute
from keras_maxdeeplab.evaluation.panoptic_quality import rgb2id
