"""Building MaX-DeepLab from a named configuration: the one place that does it.

The converter, preset loading, the tools and the benchmarks all build models
of `MAX_DEEPLAB_CONFIGS` through `build_model` / `build_backbone`.
"""

import inspect

from keras_maxdeeplab.models.max_deeplab.max_deeplab import MaXDeepLab
from keras_maxdeeplab.models.max_deeplab.max_deeplab_backbone import MaXDeepLabBackbone
from keras_maxdeeplab.models.max_deeplab.max_deeplab_configs import MAX_DEEPLAB_CONFIGS
from keras_maxdeeplab.models.max_deeplab.max_deeplab_configs import MAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab.models.max_deeplab.max_deeplab_image_converter import (
    MaXDeepLabImageConverter,
)
from keras_maxdeeplab.models.max_deeplab.max_deeplab_preprocessor import MaXDeepLabPreprocessor


def _arguments(cls, excluded=()):
    parameters = inspect.signature(cls.__init__).parameters
    return {
        name
        for name, parameter in parameters.items()
        if name not in ("self", *excluded) and parameter.kind == parameter.POSITIONAL_OR_KEYWORD
    }


def split_overrides(cls, overrides):
    """`(backbone overrides, head overrides)` of a task class `cls`: each key
    goes where `cls.backbone_cls` or `cls` takes it as a keyword argument.

    Raises:
        ValueError: a key neither takes, naming the ones they do.

    Example:
    >>> split_overrides(MaXDeepLab, {"dtype": "bfloat16", "num_mask_slots": 64})
    ({'dtype': 'bfloat16', 'num_mask_slots': 64}, {})
    """
    backbone_keys = _arguments(cls.backbone_cls)
    head_keys = _arguments(cls, excluded=("backbone",))
    backbone, heads = {}, {}
    for key, value in (overrides or {}).items():
        if key in backbone_keys:
            backbone[key] = value
        elif key in head_keys:
            heads[key] = value
        else:
            raise ValueError(
                f"Unknown override {key!r}; expected one of {sorted(backbone_keys | head_keys)}."
            )
    return backbone, heads


def _check_config(config):
    if config not in MAX_DEEPLAB_CONFIGS:
        raise ValueError(
            f"Unknown config {config!r}; expected one of {sorted(MAX_DEEPLAB_CONFIGS)}."
        )


def build_backbone(config="max_deeplab_s", crop_size=641, overrides=None, cls=MaXDeepLabBackbone):
    """A `MaXDeepLabBackbone` of a named architecture at `crop_size`.

    Args:
        config: a name of `MAX_DEEPLAB_CONFIGS`.
        crop_size: int, 16k + 1 (641 or 1025 for the published checkpoints).
        overrides: optional dict of backbone keyword arguments (deeplab2's
            knobs, `image_shape`, `dtype`) replacing the configuration's.
        cls: the class to build (a subclass calling `from_preset`).

    Example:
    >>> backbone = build_backbone("max_deeplab_s", 641)
    """
    _check_config(config)
    arguments = {"image_shape": (crop_size, crop_size, 3), **MAX_DEEPLAB_CONFIGS[config]}
    known = _arguments(cls)
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        raise ValueError(f"Unknown backbone arguments {unknown}; expected some of {sorted(known)}.")
    return cls(**{**arguments, **(overrides or {})})


def build_model(config="max_deeplab_s", crop_size=641, overrides=None, cls=MaXDeepLab):
    """A `MaXDeepLab` of a named architecture at `crop_size`, with a preprocessor.

    Args:
        config: a name of `MAX_DEEPLAB_CONFIGS` (`"max_deeplab_s"`, `"max_deeplab_l"`,
            `"max_deeplab_tiny"`).
        crop_size: int, 16k + 1 (641 or 1025 for the published checkpoints).
        overrides: optional dict replacing the configuration's values: backbone
            or head keyword arguments (deeplab2's knobs; `image_shape` and
            `dtype` go to the backbone), `categories`, `postprocess_options`,
            or a `preprocessor` (default: one resizing to the backbone's
            input; None: none, for inputs already normalised).
        cls: the class to build (a subclass calling `from_preset`).

    Example:
    >>> model = build_model("max_deeplab_s", 641)
    >>> model = build_model("max_deeplab_tiny", 129, {"num_mask_slots": 16})
    """
    _check_config(config)
    backbone_overrides, head_overrides = split_overrides(cls, overrides)
    heads = {**MAX_DEEPLAB_HEAD_CONFIGS[config], **head_overrides}
    backbone = build_backbone(config, crop_size, backbone_overrides, cls.backbone_cls)
    if "preprocessor" not in heads:
        converter = MaXDeepLabImageConverter(image_size=tuple(backbone.image_shape[:2]))
        heads["preprocessor"] = MaXDeepLabPreprocessor(image_converter=converter)
    return cls(backbone, **heads)
