"""Position-sensitive axial attention (Axial-DeepLab), as deeplab2 builds it."""

import numpy as np

import keras
from keras import ops

from keras_maxdeeplab import backend_seam
from keras_maxdeeplab.layers.batch_norm import MultiAxisBatchNormalization
from keras_maxdeeplab.layers.batch_norm import batch_normalization

# deeplab2's positional_encodings.MAX_SPAN: tables have 2 * 255 - 1 rows.
MAX_SPAN = 255


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class RelativePositionalEncoding(keras.layers.Layer):
    """A `[509, depth]` table of relative position embeddings.

    `gather(L)` returns `E[(key - query) + 254]` into an
    `[L, L, depth]` tensor (query-major). The table is shared by all heads.

    Example:
    >>> rpe = RelativePositionalEncoding(32)
    >>> rpe.build()
    >>> table = rpe.gather(41)  # [41, 41, 32]
    """

    def __init__(self, depth, initialization_std=1.0, **kwargs):
        super().__init__(**kwargs)
        self.depth = depth
        self.initialization_std = initialization_std

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            shape=(2 * MAX_SPAN - 1, self.depth),
            initializer=keras.initializers.TruncatedNormal(stddev=self.initialization_std),
            name="embeddings",
        )
        self.built = True

    def gather(self, length):
        """The `[length, length, depth]` table, `[l, m] = E[m - l + 254]`."""
        if length > MAX_SPAN:
            raise ValueError(f"Axial attention length {length} exceeds the RPE span {MAX_SPAN}.")
        index = np.arange(length)[None, :] - np.arange(length)[:, None] + MAX_SPAN - 1
        return ops.take(ops.cast(self.embeddings, self.compute_dtype), index, axis=0)

    def get_config(self):
        config = super().get_config()
        config.update({"depth": self.depth, "initialization_std": self.initialization_std})
        return config


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class AxialAttention(keras.layers.Layer):
    """Global self-attention along one axis with q/k/v relative positions.

    For input `[B', L, C]`: `qkv = BN(x @ W)`, split `[q|k|v]` head-major; the
    logits are three terms (content `q.k`, query-RPE `q.E_q`, key-RPE `k.E_k`),
    each batch-normalised per (term, head), summed, softmaxed over keys; the
    retrieved content `A.v` and value-RPE `A.E_v` are batch-normalised per
    (term, head, channel) and summed. No 1/sqrt(d) scaling.

    Args:
        total_key_depth: int, query/key channels (all heads).
        total_value_depth: int, value and output channels.
        num_heads: int.
        query_shape: int, the longest axis handled globally (deeplab2: 129).

    Shapes: `[B', L, C] -> [B', L, total_value_depth]`.

    Example:
    >>> y = AxialAttention(256, 512)(keras.random.normal((2, 41, 512)))
    """

    def __init__(self, total_key_depth, total_value_depth, num_heads=8, query_shape=129, **kwargs):
        super().__init__(**kwargs)
        if total_key_depth % num_heads or total_value_depth % num_heads:
            raise ValueError(
                f"Key depth {total_key_depth} and value depth {total_value_depth} must be "
                f"divisible by num_heads={num_heads}."
            )
        self.total_key_depth = total_key_depth
        self.total_value_depth = total_value_depth
        self.num_heads = num_heads
        self.query_shape = query_shape
        self.batch_norm_qkv = batch_normalization(dtype=self.dtype_policy, name="batch_norm_qkv")
        self.batch_norm_similarity = MultiAxisBatchNormalization(
            axis=[0, 2], dtype=self.dtype_policy, name="batch_norm_similarity"
        )
        self.batch_norm_retrieved_output = MultiAxisBatchNormalization(
            axis=[0, 2, 4], dtype=self.dtype_policy, name="batch_norm_retrieved_output"
        )
        key_per_head = total_key_depth // num_heads
        self.query_rpe = RelativePositionalEncoding(
            key_per_head, dtype=self.dtype_policy, name="query_rpe"
        )
        self.key_rpe = RelativePositionalEncoding(
            key_per_head, dtype=self.dtype_policy, name="key_rpe"
        )
        self.value_rpe = RelativePositionalEncoding(
            total_value_depth // num_heads, dtype=self.dtype_policy, name="value_rpe"
        )

    def build(self, input_shape):
        length, channels = input_shape[1], input_shape[2]
        if length > self.query_shape:
            raise ValueError(
                f"Axial attention over {length} positions needs local attention, which "
                f"deeplab2 does not implement (max {self.query_shape}); use inputs of at "
                f"most {16 * (self.query_shape - 1) + 1} pixels."
            )
        self.qkv_kernel = self.add_weight(
            shape=(channels, 2 * self.total_key_depth + self.total_value_depth),
            initializer=keras.initializers.TruncatedNormal(stddev=channels**-0.5),
            name="qkv_kernel",
        )
        qkv_channels = 2 * self.total_key_depth + self.total_value_depth
        self.batch_norm_qkv.build((None, length, qkv_channels))
        heads = self.num_heads
        self.batch_norm_similarity.build((3, None, heads, length, length))
        self.batch_norm_retrieved_output.build(
            (2, None, heads, length, self.total_value_depth // heads)
        )
        for rpe in (self.query_rpe, self.key_rpe, self.value_rpe):
            rpe.build()

    def call(self, inputs, training=None):
        length = inputs.shape[1]
        heads = self.num_heads
        dk, dv = self.total_key_depth, self.total_value_depth
        qkv = backend_seam.pointwise(inputs, ops.cast(self.qkv_kernel, self.compute_dtype))
        qkv = self.batch_norm_qkv(qkv, training=training)
        query = ops.reshape(qkv[..., :dk], (-1, length, heads, dk // heads))
        key = ops.reshape(qkv[..., dk : 2 * dk], (-1, length, heads, dk // heads))
        value = ops.reshape(qkv[..., 2 * dk :], (-1, length, heads, dv // heads))

        query_rpe = self.query_rpe.gather(length)
        key_rpe = self.key_rpe.gather(length)
        value_rpe = self.value_rpe.gather(length)
        similarity = ops.stack(
            [
                ops.einsum("blhd,bmhd->bhlm", query, key),
                ops.einsum("blhd,lmd->bhlm", query, query_rpe),
                ops.einsum("bmhd,lmd->bhlm", key, key_rpe),
            ]
        )
        similarity = self.batch_norm_similarity(similarity, training=training)
        # Sum and softmax in float32 under mixed precision: bfloat16's 8-bit
        # mantissa flattens the attention weights of long rows.
        similarity = ops.sum(ops.cast(similarity, "float32"), axis=0)
        weights = ops.cast(ops.softmax(similarity, axis=-1), self.compute_dtype)

        retrieved = ops.stack(
            [
                ops.einsum("bhlm,bmhd->bhld", weights, value),
                ops.einsum("bhlm,lmd->bhld", weights, value_rpe),
            ]
        )
        retrieved = self.batch_norm_retrieved_output(retrieved, training=training)
        retrieved = ops.sum(retrieved, axis=0)
        retrieved = ops.transpose(retrieved, (0, 2, 1, 3))
        return ops.reshape(retrieved, (-1, length, dv))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.total_value_depth)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "total_key_depth": self.total_key_depth,
                "total_value_depth": self.total_value_depth,
                "num_heads": self.num_heads,
                "query_shape": self.query_shape,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class AxialAttention2D(keras.layers.Layer):
    """Height-axis then width-axis `AxialAttention`, nothing in between.

    `total_key_depth = filters * key_expansion`, `total_value_depth = filters *
    value_expansion`; the width layer reads the height layer's raw output.
    With `strides > 1` every s-th row (after the height pass) and column
    (after the width pass) is kept.

    Shapes: `[B, H, W, C] -> [B, H/s, W/s, filters * value_expansion]`.

    Example:
    >>> y = AxialAttention2D(filters=256)(x)  # x: [B, 41, 41, 512] -> [B, 41, 41, 512]
    """

    def __init__(
        self, filters, key_expansion=1, value_expansion=2, num_heads=8, strides=1, **kwargs
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.key_expansion = key_expansion
        self.value_expansion = value_expansion
        self.num_heads = num_heads
        self.strides = strides
        self.total_key_depth = int(round(filters * key_expansion))
        self.total_value_depth = int(round(filters * value_expansion))
        self.height_axis = AxialAttention(
            self.total_key_depth,
            self.total_value_depth,
            num_heads,
            dtype=self.dtype_policy,
            name="height_axis",
        )
        self.width_axis = AxialAttention(
            self.total_key_depth,
            self.total_value_depth,
            num_heads,
            dtype=self.dtype_policy,
            name="width_axis",
        )

    def build(self, input_shape):
        _, height, width, channels = input_shape
        self.height_axis.build((None, height, channels))
        self.width_axis.build((None, width, self.total_value_depth))

    def call(self, inputs, training=None):
        _, height, width, channels = inputs.shape
        dv = self.total_value_depth
        x = ops.reshape(ops.transpose(inputs, (0, 2, 1, 3)), (-1, height, channels))
        x = self.height_axis(x, training=training)
        x = ops.transpose(ops.reshape(x, (-1, width, height, dv)), (0, 2, 1, 3))
        if self.strides > 1:
            x = x[:, :: self.strides]
        strided_height = x.shape[1]
        x = ops.reshape(x, (-1, width, dv))
        x = self.width_axis(x, training=training)
        x = ops.reshape(x, (-1, strided_height, width, dv))
        if self.strides > 1:
            x = x[:, :, :: self.strides]
        return x

    def compute_output_shape(self, input_shape):
        def out(size):
            return (size - 1) // self.strides + 1

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.total_value_depth)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "key_expansion": self.key_expansion,
                "value_expansion": self.value_expansion,
                "num_heads": self.num_heads,
                "strides": self.strides,
            }
        )
        return config
