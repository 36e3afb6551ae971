"""Named MaX-DeepLab architectures, with deeplab2's knob names and values.

`MAX_DEEPLAB_CONFIGS[name]` holds the backbone keyword arguments and
`MAX_DEEPLAB_HEAD_CONFIGS[name]` the task (heads) keyword arguments:
* `max_deeplab_s`, `max_deeplab_l`: deeplab2's encoders and COCO heads;
* `max_deeplab_tiny`: MaX-DeepLab-S shrunk with deeplab2's own knobs, the
  architecture of deeplab2's reference checkpoint in
  `shared/reference/max_deeplab_tiny` (tests, demo, benchmarks).
"""

MAX_DEEPLAB_CONFIGS = {
    "max_deeplab_s": {
        "num_blocks": (3, 4, 6, 3),
        "backbone_type": "resnet_beta",
        "backbone_use_transformer_beyond_stride": 32,
        "extra_decoder_use_transformer_beyond_stride": 32,
        "backbone_decoder_num_stacks": 0,
        "extra_decoder_num_stacks": 0,
        "extra_decoder_blocks_per_stage": 1,
        "num_mask_slots": 128,
        "memory_channels": 256,
        "base_transformer_expansion": 1.0,
        "global_feed_forward_network_channels": 256,
        "dual_path_feed_forward_network_channels": 2048,
        "attention_bottleneck_expansion": 2,
        "axial_key_expansion": 1,
        "axial_value_expansion": 2,
        "drop_path_keep_prob": 0.8,
        "drop_path_beyond_stride": 16,
        "drop_path_schedule": "linear",
    },
    "max_deeplab_l": {
        "num_blocks": (3, 6, 3, 3),
        "backbone_type": "wider_resnet",
        "backbone_use_transformer_beyond_stride": 16,
        "extra_decoder_use_transformer_beyond_stride": 16,
        "backbone_decoder_num_stacks": 1,
        "extra_decoder_num_stacks": 1,
        "extra_decoder_blocks_per_stage": 3,
        "num_mask_slots": 128,
        "memory_channels": 512,
        "base_transformer_expansion": 2.0,
        "global_feed_forward_network_channels": 512,
        "dual_path_feed_forward_network_channels": 2048,
        "attention_bottleneck_expansion": 4,
        "axial_key_expansion": 2,
        "axial_value_expansion": 4,
        "drop_path_keep_prob": 0.8,
        "drop_path_beyond_stride": 4,
        "drop_path_schedule": "linear",
    },
}

MAX_DEEPLAB_CONFIGS["max_deeplab_tiny"] = dict(
    MAX_DEEPLAB_CONFIGS["max_deeplab_s"],
    stem_width_multiplier=0.25,
    backbone_width_multiplier=0.125,
    backbone_layer_multiplier=0.5,
    num_mask_slots=32,
    memory_channels=32,
    base_transformer_expansion=0.25,
    global_feed_forward_network_channels=32,
    dual_path_feed_forward_network_channels=64,
)

# deeplab2 COCO heads. The class count follows from `MaXDeepLab(categories=...)`
# (default COCO panoptic: 133 classes + void).
_COCO_HEADS = {
    "pixel_space_head_channels": 256,
    "pixel_space_output_channels": 128,
    "semantic_head_channels": 256,
    "aspp_channels": 256,
    "decoder_channels": 256,
    "low_level_channels": (64, 32),
    "atrous_rates": (6, 12, 18),
}
MAX_DEEPLAB_HEAD_CONFIGS = {
    "max_deeplab_s": dict(_COCO_HEADS),
    "max_deeplab_l": dict(_COCO_HEADS),
    "max_deeplab_tiny": dict(
        _COCO_HEADS,
        pixel_space_head_channels=32,
        pixel_space_output_channels=16,
        semantic_head_channels=32,
        aspp_channels=32,
        decoder_channels=32,
        low_level_channels=(16, 8),
    ),
}
