"""Panoptic quality evaluation (COCO panopticapi rules)."""

from keras_maxdeeplab.coco.panoptic_format import id2rgb
from keras_maxdeeplab.coco.panoptic_format import read_coco_panoptic
from keras_maxdeeplab.coco.panoptic_format import rgb2id
from keras_maxdeeplab.evaluation.dataset import evaluate_dataset
from keras_maxdeeplab.evaluation.metric import PanopticQuality
from keras_maxdeeplab.evaluation.panoptic_quality import PQStat
from keras_maxdeeplab.evaluation.panoptic_quality import format_results
from keras_maxdeeplab.evaluation.panoptic_quality import pq_compute
