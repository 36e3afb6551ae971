"""Named kMaX-DeepLab architectures, with deeplab2's knob names and values.

`KMAX_DEEPLAB_CONFIGS[name]` holds the backbone (encoder + pixel decoder)
keyword arguments and `KMAX_DEEPLAB_HEAD_CONFIGS[name]` the task's
(transformer decoder and heads):
* `kmax_r50`: deeplab2's `kmax_meta_r50_os32` COCO model (ResNet-50);
* `kmax_axial_r50`: `kmax_meta_axial_r50_os32` (Axial-ResNet-50, GeLU);
* `kmax_convnext_tiny|small|base|large`: `kmax_meta_convnext_*_os32`
  (ConvNeXt-T/S/B/L, with the COCO configs' drop path);
* `<name>_cityscapes` of each: deeplab2's Cityscapes build of the same
  config (`model/kmax_deeplab.py` hard-codes it per dataset): a fifth pixel
  decoder stage down to the stem's stride, 256 mask slots, and the semantic
  head on `stage5` without the semantic decoder;
* `kmax_r50_tiny`, `kmax_axial_r50_tiny`: the same shrunk with deeplab2's
  own knobs, the architectures of the reference checkpoints in
  `shared/reference/kmax_deeplab_tiny` (and its `axial_r50/`; tests), and
  `kmax_r50_cityscapes_tiny`, that of `tests/models/deeplab2_cityscapes`.
"""

KMAX_DEEPLAB_CONFIGS = {
    "kmax_r50": {
        "num_blocks": (3, 4, 6, 3),
        "backbone_type": "resnet",
        "stem_width_multiplier": 1.0,
        "backbone_width_multiplier": 1.0,
        "backbone_layer_multiplier": 1.0,
        "drop_path_keep_prob": 1.0,
        "pixel_decoder_dims": (512, 256, 128, 64),
        "pixel_decoder_num_blocks": (1, 5, 1, 1),
        "pixel_decoder_block_types": ("axial", "axial", "bottleneck", "bottleneck"),
    },
}
KMAX_DEEPLAB_CONFIGS["kmax_axial_r50"] = dict(
    KMAX_DEEPLAB_CONFIGS["kmax_r50"],
    backbone_type="resnet_beta",
    use_axial_beyond_stride=16,
    activation="gelu",
    drop_path_keep_prob=0.8,
)
# ConvNeXt sizes (deeplab2's `convnext.get_model`) and the COCO configs' keep probabilities.
_CONVNEXT = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768), 0.7),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768), 0.6),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024), 0.5),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536), 0.4),
}
for _size, (_depths, _dims, _keep_prob) in _CONVNEXT.items():
    KMAX_DEEPLAB_CONFIGS[f"kmax_convnext_{_size}"] = dict(
        KMAX_DEEPLAB_CONFIGS["kmax_r50"],
        backbone_type="convnext",
        num_blocks=_depths,
        convnext_dims=_dims,
        drop_path_keep_prob=_keep_prob,
    )
KMAX_DEEPLAB_CONFIGS["kmax_r50_tiny"] = dict(
    KMAX_DEEPLAB_CONFIGS["kmax_r50"],
    stem_width_multiplier=0.125,
    backbone_width_multiplier=0.0625,
    backbone_layer_multiplier=0.5,
    pixel_decoder_dims=(32, 16, 8, 4),
    pixel_decoder_num_blocks=(1, 2, 1, 1),
)
KMAX_DEEPLAB_CONFIGS["kmax_axial_r50_tiny"] = dict(
    KMAX_DEEPLAB_CONFIGS["kmax_r50_tiny"],
    backbone_type="resnet_beta",
    use_axial_beyond_stride=16,
    activation="gelu",
    drop_path_keep_prob=0.8,
    stem_width_multiplier=0.25,
)

# deeplab2's COCO kMaX heads (KMaXDeepLab hard-codes the slots, the block
# counts, the expansion and the FFN width; the proto sets the head widths).
_COCO_HEADS = {
    "num_mask_slots": 128,
    "transformer_num_blocks": (2, 2, 2),
    "transformer_expansion": 1.0,
    "feed_forward_network_channels": 2048,
    "transformer_drop_path_keep_prob": 0.8,
    "pixel_space_head_channels": 256,
    "pixel_space_output_channels": 128,
    "semantic_head_channels": 256,
    "aspp_channels": 256,
    "decoder_channels": 256,
    "low_level_channels": (64, 32),
    "atrous_rates": (6, 12, 18),
}
_TINY_HEADS = dict(
    _COCO_HEADS,
    num_mask_slots=32,
    transformer_expansion=0.125,
    feed_forward_network_channels=16,
    pixel_space_head_channels=32,
    pixel_space_output_channels=16,
    semantic_head_channels=32,
    aspp_channels=16,
    decoder_channels=32,
    low_level_channels=(16, 8),
)
KMAX_DEEPLAB_HEAD_CONFIGS = {
    "kmax_r50": dict(_COCO_HEADS),
    "kmax_axial_r50": dict(_COCO_HEADS),
    **{f"kmax_convnext_{size}": dict(_COCO_HEADS) for size in _CONVNEXT},
    "kmax_r50_tiny": dict(_TINY_HEADS),
    "kmax_axial_r50_tiny": dict(_TINY_HEADS),
}

# deeplab2's Cityscapes build (`create_kmax_meta_pixel_decoder` with
# `high_resolution_output_stride=2`; 256 slots; no auxiliary semantic decoder).
_CITYSCAPES_PIXEL_DECODER = {
    "pixel_decoder_dims": (512, 256, 128, 64, 32),
    "pixel_decoder_num_blocks": (1, 5, 1, 1, 1),
    "pixel_decoder_block_types": ("axial", "axial", "bottleneck", "bottleneck", "bottleneck"),
}
_CITYSCAPES_HEADS = {"num_mask_slots": 256, "use_auxiliary_semantic_decoder": False}
for _name in ("kmax_r50", "kmax_axial_r50", *(f"kmax_convnext_{size}" for size in _CONVNEXT)):
    KMAX_DEEPLAB_CONFIGS[f"{_name}_cityscapes"] = dict(
        KMAX_DEEPLAB_CONFIGS[_name], **_CITYSCAPES_PIXEL_DECODER
    )
    KMAX_DEEPLAB_HEAD_CONFIGS[f"{_name}_cityscapes"] = dict(
        KMAX_DEEPLAB_HEAD_CONFIGS[_name], **_CITYSCAPES_HEADS
    )
KMAX_DEEPLAB_CONFIGS["kmax_r50_cityscapes_tiny"] = dict(
    KMAX_DEEPLAB_CONFIGS["kmax_r50_tiny"],
    pixel_decoder_dims=(32, 16, 8, 4, 2),
    pixel_decoder_num_blocks=(1, 2, 1, 1, 1),
    pixel_decoder_block_types=_CITYSCAPES_PIXEL_DECODER["pixel_decoder_block_types"],
)
KMAX_DEEPLAB_HEAD_CONFIGS["kmax_r50_cityscapes_tiny"] = dict(_TINY_HEADS, **_CITYSCAPES_HEADS)
