"""kMaX-DeepLab's transformer block: k-means cross-attention and memory self-attention."""

import keras
from keras import ops

from keras_maxdeeplab.layers.batch_norm import batch_normalization
from keras_maxdeeplab.layers.convolutions import Conv1D
from keras_maxdeeplab.layers.convolutions import activate
from keras_maxdeeplab.layers.drop_path import DropPath
from keras_maxdeeplab.layers.dual_path_transformer import AttentionOperation
from keras_maxdeeplab.layers.heads import MaskPredictor


def _heads_first(x, num_heads):
    """`[B, L, h*d] -> [B, h, L, d]`."""
    batch, length, channels = ops.shape(x)[0], x.shape[1], x.shape[2]
    x = ops.reshape(x, (batch, length, num_heads, channels // num_heads))
    return ops.transpose(x, (0, 2, 1, 3))


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class KMeansTransformerBlock(keras.layers.Layer):
    """One kMaX transformer block (deeplab2's `DualPathTransformerLayer` with
    `use_kmeans_cross_attention=True`, memory self-attention, and neither
    pixel-to-memory nor memory-to-pixel attention).

    With exact GeLU everywhere:
    * bottlenecks: `m = conv1(centers)`, `p = conv1(GeLU(pixels))`
      (Conv1D + BN + GeLU, `2 * filters` channels);
    * k-means assignment: an auxiliary `MaskPredictor` on `(p, m, m)`; each
      pixel goes to its argmax slot (hard, first index on ties, no gradient);
    * k-means update: the **sum** of the assigned pixels' values
      (`pixel_v_conv_bn(p)`) per slot -> BN -> Conv1D + BN (gamma 0);
    * memory self-attention on q/k/v of `m` (BN'd logits, softmax over
      slots, BN'd values, GeLU) -> Conv1D + BN (gamma 0);
    * `c = GeLU(centers + kmeans + attention)`, then
      `GeLU(c + FFN(c))`, FFN = Conv1D + BN + GeLU -> Conv1D + BN (gamma 0).
    The pixels are not updated. Each residual update has its own drop path.

    Args:
        filters: int, `128 * transformer_expansion`; bottleneck `2 * filters`,
            key depth `filters`, value depth `2 * filters`.
        feed_forward_network_channels: int, the memory FFN width.
        pixel_space_head_channels, pixel_space_output_channels, num_classes:
            the auxiliary predictor's widths.
        num_heads: int.
        drop_path_keep_prob: float, keep probability of the three updates.

    Shapes: `(pixels [B, H, W, C], centers [B, N, Cm])` ->
    `(centers [B, N, Cm], auxiliary)`, `auxiliary` the predictor's dict
    (`pixel_space_mask_logits` `[B, H, W, N]`, `pixel_space_normalized_feature`,
    `transformer_class_logits`) plus `kmeans_assignment` `[B, H, W]` int32.

    Example:
    >>> block = KMeansTransformerBlock(128, 2048, 256, 128, 134)
    >>> centers, auxiliary = block(decoder_stage1, centers)
    """

    def __init__(
        self,
        filters,
        feed_forward_network_channels,
        pixel_space_head_channels,
        pixel_space_output_channels,
        num_classes,
        num_heads=8,
        drop_path_keep_prob=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.feed_forward_network_channels = feed_forward_network_channels
        self.pixel_space_head_channels = pixel_space_head_channels
        self.pixel_space_output_channels = pixel_space_output_channels
        self.num_classes = num_classes
        self.num_heads = num_heads
        self.drop_path_keep_prob = drop_path_keep_prob
        self.bottleneck_channels = 2 * filters
        self.total_key_depth = filters
        self.total_value_depth = 2 * filters
        if filters % num_heads:
            raise ValueError(
                f"KMeansTransformerBlock filters={filters} must be divisible by "
                f"num_heads={num_heads}."
            )
        qkv_init = keras.initializers.TruncatedNormal(stddev=self.bottleneck_channels**-0.5)
        dtype = self.dtype_policy
        self.memory_conv1_bn_act = Conv1D(
            self.bottleneck_channels, activation="gelu", dtype=dtype, name="memory_conv1_bn_act"
        )
        self.pixel_conv1_bn_act = Conv1D(
            self.bottleneck_channels, activation="gelu", dtype=dtype, name="pixel_conv1_bn_act"
        )
        self.memory_qkv_conv_bn = Conv1D(
            2 * self.total_key_depth + self.total_value_depth,
            kernel_initializer=qkv_init,
            dtype=dtype,
            name="memory_qkv_conv_bn",
        )
        self.pixel_v_conv_bn = Conv1D(
            self.total_value_depth,
            kernel_initializer=qkv_init,
            dtype=dtype,
            name="pixel_v_conv_bn",
        )
        self.memory_attention = AttentionOperation(
            activation="gelu", dtype=dtype, name="memory_attention"
        )
        self.auxiliary_clustering_predictor = MaskPredictor(
            pixel_space_head_channels,
            pixel_space_output_channels,
            num_classes,
            activation="gelu",
            dtype=dtype,
            name="auxiliary_clustering_predictor",
        )
        self.kmeans_memory_batch_norm_retrieved_value = batch_normalization(
            dtype=dtype, name="kmeans_memory_batch_norm_retrieved_value"
        )
        self.memory_attention_drop_path = DropPath(
            drop_path_keep_prob, dtype=dtype, name="memory_attention_drop_path"
        )
        self.kmeans_drop_path = DropPath(drop_path_keep_prob, dtype=dtype, name="kmeans_drop_path")
        self.memory_ffn_drop_path = DropPath(
            drop_path_keep_prob, dtype=dtype, name="memory_ffn_drop_path"
        )

    def build(self, pixels_shape, centers_shape):
        dtype = self.dtype_policy
        slots, channels = centers_shape[1], centers_shape[2]
        length = pixels_shape[1] * pixels_shape[2]
        b, heads = self.bottleneck_channels, self.num_heads
        self.memory_conv3_bn = Conv1D(
            channels, bn_gamma_initializer="zeros", dtype=dtype, name="memory_conv3_bn"
        )
        self.kmeans_memory_conv3_bn = Conv1D(
            channels, bn_gamma_initializer="zeros", dtype=dtype, name="kmeans_memory_conv3_bn"
        )
        self.memory_ffn_conv1_bn_act = Conv1D(
            self.feed_forward_network_channels,
            activation="gelu",
            dtype=dtype,
            name="memory_ffn_conv1_bn_act",
        )
        self.memory_ffn_conv2_bn = Conv1D(
            channels, bn_gamma_initializer="zeros", dtype=dtype, name="memory_ffn_conv2_bn"
        )
        self.memory_conv1_bn_act.build((None, slots, channels))
        self.pixel_conv1_bn_act.build((None, length, pixels_shape[3]))
        self.memory_qkv_conv_bn.build((None, slots, b))
        self.pixel_v_conv_bn.build((None, length, b))
        dk, dv = self.total_key_depth // heads, self.total_value_depth // heads
        self.memory_attention.build(
            ((None, heads, slots, dk), (None, heads, slots, dk), (None, slots, heads, dv))
        )
        self.auxiliary_clustering_predictor.build(
            (None, pixels_shape[1], pixels_shape[2], b), (None, slots, b), (None, slots, b)
        )
        self.kmeans_memory_batch_norm_retrieved_value.build((None, slots, self.total_value_depth))
        self.kmeans_memory_conv3_bn.build((None, slots, self.total_value_depth))
        self.memory_conv3_bn.build((None, slots, self.total_value_depth))
        self.memory_ffn_conv1_bn_act.build((None, slots, channels))
        self.memory_ffn_conv2_bn.build((None, slots, self.feed_forward_network_channels))

    def call(self, pixels, centers, training=None):
        _, height, width, channels = pixels.shape
        batch = ops.shape(pixels)[0]
        slots = centers.shape[1]
        dk, heads = self.total_key_depth, self.num_heads

        memory = self.memory_conv1_bn_act(centers, training=training)
        flat = ops.reshape(activate(pixels, "gelu"), (batch, height * width, channels))
        pixel_space = self.pixel_conv1_bn_act(flat, training=training)
        qkv = self.memory_qkv_conv_bn(memory, training=training)
        query = _heads_first(qkv[..., :dk], heads)
        key = _heads_first(qkv[..., dk : 2 * dk], heads)
        value = ops.reshape(
            qkv[..., 2 * dk :], (batch, slots, heads, self.total_value_depth // heads)
        )
        pixel_value = self.pixel_v_conv_bn(pixel_space, training=training)

        # k-means assignment step: hard argmax over the slots.
        auxiliary = self.auxiliary_clustering_predictor(
            ops.reshape(pixel_space, (batch, height, width, self.bottleneck_channels)),
            memory,
            memory,
            training=training,
        )
        assignment = ops.argmax(auxiliary["pixel_space_mask_logits"], axis=-1)
        auxiliary["kmeans_assignment"] = ops.cast(assignment, "int32")
        one_hot = ops.one_hot(
            ops.reshape(assignment, (batch, height * width)), slots, dtype=pixel_value.dtype
        )
        one_hot = ops.stop_gradient(one_hot)
        # k-means update step: the sum (not the mean) of each cluster's pixel values.
        kmeans = ops.einsum("blm,bld->bmd", one_hot, pixel_value)
        kmeans = self.kmeans_memory_batch_norm_retrieved_value(kmeans, training=training)
        kmeans = self.kmeans_memory_conv3_bn(kmeans, training=training)
        kmeans = self.kmeans_drop_path(kmeans, training=training)

        # Memory self-attention reads the centers entering the block (parallel residual).
        attended = self.memory_attention((query, key, value), training=training)
        attended = self.memory_conv3_bn(attended, training=training)
        attended = self.memory_attention_drop_path(attended, training=training)
        centers = activate(centers + kmeans + attended, "gelu")

        ffn = self.memory_ffn_conv1_bn_act(centers, training=training)
        ffn = self.memory_ffn_conv2_bn(ffn, training=training)
        ffn = self.memory_ffn_drop_path(ffn, training=training)
        return activate(centers + ffn, "gelu"), auxiliary

    def compute_output_shape(self, pixels_shape, centers_shape):
        spatial = tuple(pixels_shape[:3])
        auxiliary = self.auxiliary_clustering_predictor.compute_output_shape(
            (*spatial, self.bottleneck_channels),
            (centers_shape[0], centers_shape[1], self.bottleneck_channels),
            (centers_shape[0], centers_shape[1], self.bottleneck_channels),
        )
        auxiliary["kmeans_assignment"] = spatial
        return tuple(centers_shape), auxiliary

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "feed_forward_network_channels": self.feed_forward_network_channels,
                "pixel_space_head_channels": self.pixel_space_head_channels,
                "pixel_space_output_channels": self.pixel_space_output_channels,
                "num_classes": self.num_classes,
                "num_heads": self.num_heads,
                "drop_path_keep_prob": self.drop_path_keep_prob,
            }
        )
        return config
