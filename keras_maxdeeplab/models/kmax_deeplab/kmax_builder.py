"""Building kMaX-DeepLab from a named configuration."""

from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_CONFIGS
from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab import KMaXDeepLab
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab_backbone import KMaXDeepLabBackbone


def build_kmax_model(config="kmax_r50", crop_size=1281, dtype=None):
    """A `KMaXDeepLab` of a named architecture at `crop_size` (32k + 1), no preprocessor.

    Args:
        config: a name of `KMAX_DEEPLAB_CONFIGS` (`"kmax_r50"`, `"kmax_r50_tiny"`).
        crop_size: int, 32k + 1 (deeplab2's COCO models: 1281).
        dtype: optional dtype policy.

    Example:
    >>> model = build_kmax_model("kmax_r50_tiny", 65)
    """
    if config not in KMAX_DEEPLAB_CONFIGS:
        raise ValueError(
            f"Unknown config {config!r}; expected one of {sorted(KMAX_DEEPLAB_CONFIGS)}."
        )
    backbone = KMaXDeepLabBackbone(
        image_shape=(crop_size, crop_size, 3), dtype=dtype, **KMAX_DEEPLAB_CONFIGS[config]
    )
    return KMaXDeepLab(backbone, **KMAX_DEEPLAB_HEAD_CONFIGS[config])
