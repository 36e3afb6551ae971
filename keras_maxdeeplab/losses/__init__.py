"""MaX-DeepLab's PQ-style loss, Hungarian matching and auxiliary losses."""

from keras_maxdeeplab.losses.matching import hungarian_matching
from keras_maxdeeplab.losses.matching import hungarian_matching_ops
from keras_maxdeeplab.losses.kmax_deeplab_loss import KMaXDeepLabLoss
from keras_maxdeeplab.losses.max_deeplab_loss import MaXDeepLabLoss
