"""deeplab2's ImageNet-pretrained MaX-DeepLab backbones -> `MaXDeepLabBackbone`.

deeplab2 pretrains only the Axial-ResNet pixel path on ImageNet; its COCO
training restores that part (`expect_partial()`) and initialises the
dual-path transformers, memory and `*_extra` layers afresh. Its runner
accepts TF Model Garden checkpoints, which nest the encoder under
`backbone/_encoder/`.
"""

from keras_maxdeeplab.conversion.deeplab2 import assign_from_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import deeplab2_key_to_path
from keras_maxdeeplab.conversion.deeplab2 import match_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import open_checkpoint
from keras_maxdeeplab.optimizers import is_pretrained_backbone_variable

_MODEL_GARDEN_PREFIX = "backbone/_encoder/"


def encoder_key(key):
    """The key deeplab2's COCO training reads a pretrained encoder variable
    under (`encoder/...`); None for anything outside the encoder (the
    ImageNet classifier).

    Example:
    >>> encoder_key("backbone/_encoder/_stem/_conv1_bn_act/_conv/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    'encoder/_stem/_conv1_bn_act/_conv/kernel/.ATTRIBUTES/VARIABLE_VALUE'
    """
    if key.startswith(_MODEL_GARDEN_PREFIX):
        return "encoder/" + key[len(_MODEL_GARDEN_PREFIX) :]
    return key if key.startswith("encoder/") else None


def load_imagenet_backbone(backbone, checkpoint):
    """Loads the ImageNet-pretrained variables of a deeplab2 checkpoint into `backbone`.

    Strict for the pretrained part (every weight deeplab2 initialises from
    ImageNet must be found, with its shape); the dual-path transformers,
    memory and `*_extra` layers keep their initialisation. Encoder variables
    our backbone has no weight for are skipped, as deeplab2 reads initial
    checkpoints with `expect_partial()`. Values are streamed one at a time.

    Args:
        backbone: a `MaXDeepLabBackbone` of the checkpoint's configuration.
        checkpoint: a checkpoint prefix or a folder holding one.

    Returns:
        The sorted checkpoint keys that were skipped.

    Example:
    >>> skipped = load_imagenet_backbone(backbone, "max_deeplab_s_backbone_imagenet1k/ckpt-0")
    """
    reader, shapes = open_checkpoint(checkpoint)
    sources = {encoder_key(key): key for key in shapes if encoder_key(key) is not None}
    paths = {weight.path for weight in backbone.weights}
    kept = {key: shapes[source] for key, source in sources.items() if deeplab2_key_to_path(key) in paths}
    fresh = [
        weight.path for weight in backbone.weights if not is_pretrained_backbone_variable(weight)
    ]
    pairs = match_checkpoint(backbone, kept, allow_unused_prefixes=fresh)
    assign_from_checkpoint(reader, [(variable, sources[key]) for variable, key in pairs])
    return sorted(key for key in shapes if encoder_key(key) not in kept)
