"""Building kMaX-DeepLab from a named configuration."""

from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_CONFIGS
from keras_maxdeeplab.models.kmax_deeplab.kmax_configs import KMAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab import KMaXDeepLab
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab_backbone import KMaXDeepLabBackbone
from keras_maxdeeplab.models.max_deeplab.max_deeplab_builder import split_overrides


def build_kmax_backbone(config="kmax_r50", crop_size=1281, overrides=None, cls=KMaXDeepLabBackbone):
    """A `KMaXDeepLabBackbone` of a named architecture at `crop_size` (32k + 1).

    Args:
        config: a name of `KMAX_DEEPLAB_CONFIGS`.
        crop_size: int or `(height, width)`, 32k + 1 (deeplab2's COCO models:
            1281, ADE20K's: 641 or 1281, Cityscapes': (1025, 2049)).
        overrides: optional dict of backbone keyword arguments (`image_shape`,
            `dtype`, deeplab2's knobs) replacing the configuration's.
        cls: the class to build (a subclass calling `from_preset`).

    Example:
    >>> build_kmax_backbone("kmax_r50_tiny", 65).image_shape
    (65, 65, 3)
    """
    if config not in KMAX_DEEPLAB_CONFIGS:
        raise ValueError(
            f"Unknown config {config!r}; expected one of {sorted(KMAX_DEEPLAB_CONFIGS)}."
        )
    height, width = crop_size if isinstance(crop_size, (tuple, list)) else (crop_size, crop_size)
    arguments = {"image_shape": (height, width, 3), **KMAX_DEEPLAB_CONFIGS[config]}
    return cls(**{**arguments, **(overrides or {})})


def build_kmax_model(config="kmax_r50", crop_size=1281, dtype=None, overrides=None, cls=KMaXDeepLab):
    """A `KMaXDeepLab` of a named architecture at `crop_size` (32k + 1), no preprocessor.

    Args:
        config: a name of `KMAX_DEEPLAB_CONFIGS` (`"kmax_r50"`, `"kmax_r50_tiny"`).
        crop_size: int or `(height, width)`, 32k + 1 (deeplab2's COCO models:
            1281, ADE20K's: 641 or 1281, Cityscapes': (1025, 2049)).
        dtype: optional dtype policy.
        overrides: optional dict of backbone or head keyword arguments
            (`image_shape`, deeplab2's knobs) replacing the configuration's.
        cls: the class to build (a subclass calling `from_preset`).

    Example:
    >>> model = build_kmax_model("kmax_r50_tiny", 65)
    >>> model = build_kmax_model("kmax_r50_tiny", 65, overrides={"image_shape": (129, 129, 3)})
    """
    backbone_overrides, head_overrides = split_overrides(cls, overrides)
    if dtype is not None:
        backbone_overrides["dtype"] = dtype
    backbone = build_kmax_backbone(config, crop_size, backbone_overrides, cls.backbone_cls)
    return cls(backbone, **{**KMAX_DEEPLAB_HEAD_CONFIGS[config], **head_overrides})
