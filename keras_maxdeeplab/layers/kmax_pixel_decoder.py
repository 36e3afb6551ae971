"""kMaX-DeepLab's pixel decoder: axial and bottleneck stages with encoder skips."""

import keras

from keras_maxdeeplab.layers.blocks import BlockGroup
from keras_maxdeeplab.layers.resized_fuse import ResizedFuse

BLOCK_TYPES = ("axial", "bottleneck")


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class KMaXPixelDecoder(keras.layers.Layer):
    """deeplab2's `KMaXPixelDecoder`: from stride 32 back to stride 4 (4
    stages, COCO and ADE20K) or to the stem's stride (5 stages, Cityscapes).

    Every encoder endpoint (pre-activation `stage5`, `stage4`, `stage3`,
    `stage2`, and `stage1` for a fifth stage) is layer-normalised (epsilon
    1e-6, `backbone_norm{i}`). Stage
    `i` is a `BlockGroup` of `num_blocks[i]` axial or bottleneck blocks with
    base width `dims[i]` (output `4 * dims[i]` channels), exact GeLU, built as
    deeplab2 builds it (nominal input stride 32, output stride 16: bottleneck
    3x3 convs are dilated by 2, no drop path). Between stages,
    `skip_connection{i}` (`ResizedFuse` with GeLU) brings the stage output and
    the next normalised endpoint to that endpoint's size and `dims[i + 1]`
    channels and sums them.

    Args:
        dims: per stage (stride 32 first) base widths; kMaX: (512, 256, 128,
            64), for Cityscapes (512, 256, 128, 64, 32).
        num_blocks: per stage block counts; kMaX: (1, 5, 1, 1), for
            Cityscapes (1, 5, 1, 1, 1).
        block_types: per stage "axial" or "bottleneck".

    Call: `decoder([stage5, stage4, stage3, stage2])` (4 stages) or
    `decoder([stage5, stage4, stage3, stage2, stage1])` (5 stages).
    Returns `[decoder_stage1, ..., decoder_output]`: the block-group outputs
    (not activated) at the strides of the endpoints (32, 16, 8, 4, and the
    stem's: 2 for the ResNets, 4 for ConvNeXt) with `4 * dims[i]` channels.

    Example:
    >>> outputs = KMaXPixelDecoder()([stage5, stage4, stage3, stage2])
    >>> outputs[-1].shape  # (B, H / 4, W / 4, 256)
    """

    def __init__(
        self,
        dims=(512, 256, 128, 64),
        num_blocks=(1, 5, 1, 1),
        block_types=("axial", "axial", "bottleneck", "bottleneck"),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dims = tuple(int(d) for d in dims)
        self.num_blocks = tuple(int(n) for n in num_blocks)
        self.block_types = tuple(block_types)
        if not len(self.dims) == len(self.num_blocks) == len(self.block_types) in (4, 5):
            raise ValueError(
                "KMaXPixelDecoder needs 4 stages (strides 32, 16, 8, 4) or 5 (and the stem's) "
                f"in dims, num_blocks and block_types; got {self.dims}, {self.num_blocks}, "
                f"{self.block_types}."
            )
        unknown = [t for t in self.block_types if t not in BLOCK_TYPES]
        if unknown:
            raise ValueError(f"block_types must be among {BLOCK_TYPES}; got {unknown}.")
        self.backbone_norms = [
            keras.layers.LayerNormalization(
                epsilon=1e-6, dtype=self.dtype_policy, name=f"backbone_norm{i}"
            )
            for i in range(len(self.dims))
        ]
        self.stages = [
            BlockGroup(
                filters,
                count,
                original_resnet_stride=1,
                original_resnet_input_stride=32,
                output_stride=16,
                use_axial_beyond_stride=16 if block_type == "axial" else 0,
                use_transformer_beyond_stride=0,
                drop_path_keep_prob=1.0,
                activation="gelu",
                dtype=self.dtype_policy,
                name=f"stage{i}",
            )
            for i, (filters, count, block_type) in enumerate(
                zip(self.dims, self.num_blocks, self.block_types)
            )
        ]

    def build(self, input_shapes):
        for norm, shape in zip(self.backbone_norms, input_shapes):
            norm.build(shape)
        # The fuses take their target size from the encoder endpoints.
        self.skip_connections = []
        shape = input_shapes[0]
        for i, stage in enumerate(self.stages):
            stage.build(shape)
            shape = stage.compute_output_shape(shape)
            if i == len(self.stages) - 1:
                break
            skip = input_shapes[i + 1]
            fuse = ResizedFuse(
                skip[1],
                skip[2],
                self.dims[i + 1],
                activation="gelu",
                dtype=self.dtype_policy,
                name=f"skip_connection{i}",
            )
            fuse.build([shape, skip])
            self.skip_connections.append(fuse)
            shape = fuse.compute_output_shape([shape, skip])

    def call(self, inputs, training=None):
        x = self.backbone_norms[0](inputs[0])
        outputs = []
        for i, stage in enumerate(self.stages):
            x = stage(x, training=training)
            outputs.append(x)
            if i < len(self.skip_connections):
                skip = self.backbone_norms[i + 1](inputs[i + 1])
                x = self.skip_connections[i]([x, skip], training=training)
        return outputs

    def compute_output_shape(self, input_shapes):
        return [
            (shape[0], shape[1], shape[2], 4 * dims)
            for shape, dims in zip(input_shapes, self.dims)
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "dims": self.dims,
                "num_blocks": self.num_blocks,
                "block_types": self.block_types,
            }
        )
        return config
