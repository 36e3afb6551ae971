"""MaXDeepLabPreprocessor: the image side of MaX-DeepLab's input pipeline."""

import keras
from keras_hub.models import ImageSegmenterPreprocessor

from keras_maxdeeplab.models.max_deeplab.max_deeplab_backbone import MaXDeepLabBackbone
from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import (
    MaXDeepLabImageConverter,
)


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class MaXDeepLabPreprocessor(ImageSegmenterPreprocessor):
    """Applies `MaXDeepLabImageConverter` to images; targets pass through.

    Example:
    >>> preprocessor = MaXDeepLabPreprocessor(MaXDeepLabImageConverter((641, 641)))
    >>> x = preprocessor(images)
    """

    backbone_cls = MaXDeepLabBackbone
    image_converter_cls = MaXDeepLabImageConverter
