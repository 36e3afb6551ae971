"""keras-maxdeeplab: MaX-DeepLab panoptic segmentation for Keras 3."""

from keras_maxdeeplab import evaluation, hub, layers, losses, postprocessing
from keras_maxdeeplab.models.max_deeplab.max_deeplab import MaXDeepLab
from keras_maxdeeplab.models.max_deeplab.max_deeplab_backbone import MaXDeepLabBackbone
from keras_maxdeeplab.models.max_deeplab.max_deeplab_configs import MAX_DEEPLAB_CONFIGS
from keras_maxdeeplab.models.max_deeplab.max_deeplab_configs import MAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import (
    MaXDeepLabImageConverter,
)
from keras_maxdeeplab.models.max_deeplab.max_deeplab_preprocessor import MaXDeepLabPreprocessor
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESET_ALIASES
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESETS
from keras_maxdeeplab.version import __version__
