"""keras-maxdeeplab: MaX-DeepLab panoptic segmentation for Keras 3."""

import os

# Keras' own message for a misspelt backend is a 26-line traceback without the valid names.
if os.environ.get("KERAS_BACKEND", "jax") not in ("jax", "tensorflow", "torch", "numpy", "openvino"):
    raise ImportError(
        f"KERAS_BACKEND={os.environ['KERAS_BACKEND']!r} is not a Keras backend; keras-maxdeeplab "
        "runs on 'jax', 'tensorflow' or 'torch' (e.g. export KERAS_BACKEND=torch)."
    )

from keras_maxdeeplab import evaluation, hub, layers, losses, postprocessing
from keras_maxdeeplab.backend_seam import data_parallel
from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model
from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_CONFIGS
from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab import KMaXDeepLab
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab_backbone import KMaXDeepLabBackbone
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import KMAX_DEEPLAB_PRESETS
from keras_maxdeeplab.models.max_deeplab.max_deeplab import MaXDeepLab
from keras_maxdeeplab.models.max_deeplab.max_deeplab_backbone import MaXDeepLabBackbone
from keras_maxdeeplab.models.max_deeplab.max_deeplab_builder import build_backbone
from keras_maxdeeplab.models.max_deeplab.max_deeplab_builder import build_model
from keras_maxdeeplab.models.max_deeplab.max_deeplab_configs import MAX_DEEPLAB_CONFIGS
from keras_maxdeeplab.models.max_deeplab.max_deeplab_configs import MAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import (
    MaXDeepLabImageConverter,
)
from keras_maxdeeplab.models.max_deeplab.max_deeplab_preprocessor import MaXDeepLabPreprocessor
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESET_ALIASES
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import MAX_DEEPLAB_PRESETS
from keras_maxdeeplab.version import __version__
