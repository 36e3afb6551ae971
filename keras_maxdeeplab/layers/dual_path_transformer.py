"""The dual-path transformer block of MaX-DeepLab and its learned memory."""

import contextlib
import contextvars

import keras
from keras import ops

from keras_maxdeeplab.layers.batch_norm import MultiAxisBatchNormalization
from keras_maxdeeplab.layers.batch_norm import batch_normalization
from keras_maxdeeplab.layers.convolutions import Conv1D
from keras_maxdeeplab.layers.convolutions import activate
from keras_maxdeeplab.layers.convolutions import check_activation
from keras_maxdeeplab.layers.drop_path import DropPath


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class MemoryFeature(keras.layers.Layer):
    """The learned memory: `[1, N, C]` slots tiled over the batch.

    Args:
        num_mask_slots: int, N.
        memory_channels: int, C.

    Shapes: called on the image batch `[B, ...]`, returns `[B, N, C]`.

    Example:
    >>> memory = MemoryFeature(128, 256)(images)  # [B, 128, 256]
    """

    def __init__(self, num_mask_slots, memory_channels, **kwargs):
        super().__init__(**kwargs)
        self.num_mask_slots = num_mask_slots
        self.memory_channels = memory_channels

    def build(self, input_shape):
        self.memory_feature = self.add_weight(
            shape=(1, self.num_mask_slots, self.memory_channels),
            initializer=keras.initializers.TruncatedNormal(stddev=1.0),
            name="memory_feature",
        )

    def call(self, images):
        memory = ops.cast(self.memory_feature, self.compute_dtype)
        return ops.tile(memory, (ops.shape(images)[0], 1, 1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_mask_slots, self.memory_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_mask_slots": self.num_mask_slots, "memory_channels": self.memory_channels}
        )
        return config


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class AttentionOperation(keras.layers.Layer):
    """Multi-head attention with BN on logits and on retrieved values, then ReLU.

    `softmax(BN_head(q.k)) . v`, batch-normalised per (head, channel), ReLU
    (or exact GeLU with `activation="gelu"`, as kMaX-DeepLab), heads
    concatenated head-major. No 1/sqrt(d) scaling.

    Shapes: query `[B, h, L, d]`, key `[B, h, M, d]`, value `[B, M, h, dv]`
    -> `[B, L, h * dv]`; with `return_attention_scores=True`, also the
    softmax weights `[B, h, L, M]`.

    Example:
    >>> y = AttentionOperation()((q, k, v))
    >>> y, weights = AttentionOperation()((q, k, v), return_attention_scores=True)
    """

    def __init__(self, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.activation = check_activation(activation)

    def build(self, input_shapes):
        query_shape, _, value_shape = input_shapes
        heads = query_shape[1]
        self.batch_norm_similarity = batch_normalization(
            axis=1, dtype=self.dtype_policy, name="batch_norm_similarity"
        )
        self.batch_norm_similarity.build((None, heads, None, None))
        self.batch_norm_retrieved_value = MultiAxisBatchNormalization(
            axis=[1, 3], dtype=self.dtype_policy, name="batch_norm_retrieved_value"
        )
        self.batch_norm_retrieved_value.build((None, heads, None, value_shape[-1]))

    def call(self, inputs, training=None, return_attention_scores=False):
        query, key, value = inputs
        similarity = ops.einsum("bhld,bhmd->bhlm", query, key)
        similarity = self.batch_norm_similarity(similarity, training=training)
        # Softmax in float32 under mixed precision, as in the axial attention.
        weights = ops.softmax(ops.cast(similarity, "float32"), axis=-1)
        weights = ops.cast(weights, self.compute_dtype)
        retrieved = ops.einsum("bhlm,bmhd->bhld", weights, value)
        retrieved = activate(
            self.batch_norm_retrieved_value(retrieved, training=training), self.activation
        )
        retrieved = ops.transpose(retrieved, (0, 2, 1, 3))
        shape = ops.shape(retrieved)
        retrieved = ops.reshape(retrieved, (shape[0], shape[1], shape[2] * shape[3]))
        if return_attention_scores:
            return retrieved, weights
        return retrieved

    def get_config(self):
        config = super().get_config()
        config.update({"activation": self.activation})
        return config


# The list that `DualPathTransformer` calls append their attention weights to,
# inside `recording_attention()`; None (nothing recorded) everywhere else.
_attention_records = contextvars.ContextVar("dual_path_attention_records", default=None)


@contextlib.contextmanager
def recording_attention():
    """Records the attention weights of every `DualPathTransformer` call inside.

    Yields a list that each call appends `(layer, weights)` to, `weights` a
    dict of:
    - `memory_to_pixel` `[B, h, N, H, W]` and `memory_to_memory` `[B, h, N, N]`:
      the memory path's one softmax over `[pixels ; memory]`, split (together
      they sum to 1 for each slot and head);
    - `pixel_to_memory` `[B, h, H, W, N]`: each pixel's softmax over the slots.
    Meant for eager calls (pictures, analysis): inside a compiled function
    the recorded values are that function's symbolic tensors.

    Example:
    >>> with recording_attention() as records:
    ...     pixels, memory = transformer(pixels, memory)
    >>> layer, weights = records[0]
    """
    records = []
    token = _attention_records.set(records)
    try:
        yield records
    finally:
        _attention_records.reset(token)


def _heads_first(x, num_heads):
    """`[B, L, h*d] -> [B, h, L, d]`."""
    batch, length, channels = ops.shape(x)[0], x.shape[1], x.shape[2]
    x = ops.reshape(x, (batch, length, num_heads, channels // num_heads))
    return ops.transpose(x, (0, 2, 1, 3))


def _split_weights(memory_weights, pixel_weights, height, width):
    """The two softmaxes of a dual-path transformer, with pixels as `H, W`."""
    batch, heads, slots = ops.shape(memory_weights)[:3]
    length = height * width
    return {
        "memory_to_pixel": ops.reshape(
            memory_weights[..., :length], (batch, heads, slots, height, width)
        ),
        "memory_to_memory": memory_weights[..., length:],
        "pixel_to_memory": ops.reshape(pixel_weights, (batch, heads, height, width, slots)),
    }


@keras.saving.register_keras_serializable(package="keras_maxdeeplab")
class DualPathTransformer(keras.layers.Layer):
    """MaX-DeepLab's dual-path transformer: pixel path and memory path together.

    The memory attends to `[pixel keys ; memory keys]` in one softmax
    (memory-to-pixel and memory-to-memory attention), then runs an FFN; the
    pixels attend to the *input* memory (pixel-to-memory feedback). Pixel
    input and output are pre-activation; the memory output is ReLU'd.

    Args:
        filters: int, `128 * transformer_expansion`; bottleneck `2 * filters`,
            key depth `filters`, value depth `2 * filters`.
        feed_forward_network_channels: int, the memory FFN width.
        num_heads: int.
        drop_path_keep_prob: float, per-sample keep probability of the three
            residual updates (pixel, memory attention, memory FFN).

    Shapes: `(pixels [B, H, W, Cp], memory [B, N, Cm]) -> (same, same)`.
    Its attention weights: `recording_attention`.

    Example:
    >>> pixels, memory = DualPathTransformer(128)(pixels, memory)
    """

    def __init__(
        self,
        filters,
        feed_forward_network_channels=2048,
        num_heads=8,
        bottleneck_expansion=2,
        key_expansion=1,
        value_expansion=2,
        drop_path_keep_prob=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.feed_forward_network_channels = feed_forward_network_channels
        self.num_heads = num_heads
        self.bottleneck_expansion = bottleneck_expansion
        self.key_expansion = key_expansion
        self.value_expansion = value_expansion
        self.drop_path_keep_prob = drop_path_keep_prob
        self.bottleneck_channels = int(round(filters * bottleneck_expansion))
        self.total_key_depth = int(round(filters * key_expansion))
        self.total_value_depth = int(round(filters * value_expansion))
        if self.total_key_depth % num_heads or self.total_value_depth % num_heads:
            raise ValueError(
                f"DualPathTransformer depths {self.total_key_depth}/{self.total_value_depth} "
                f"must be divisible by num_heads={num_heads}."
            )
        qkv_init = keras.initializers.TruncatedNormal(stddev=self.bottleneck_channels**-0.5)
        qkv_channels = 2 * self.total_key_depth + self.total_value_depth
        self.memory_conv1_bn_act = Conv1D(
            self.bottleneck_channels,
            activation="relu",
            dtype=self.dtype_policy,
            name="memory_conv1_bn_act",
        )
        self.pixel_conv1_bn_act = Conv1D(
            self.bottleneck_channels,
            activation="relu",
            dtype=self.dtype_policy,
            name="pixel_conv1_bn_act",
        )
        self.memory_qkv_conv_bn = Conv1D(
            qkv_channels,
            kernel_initializer=qkv_init,
            dtype=self.dtype_policy,
            name="memory_qkv_conv_bn",
        )
        self.pixel_qkv_conv_bn = Conv1D(
            qkv_channels,
            kernel_initializer=qkv_init,
            dtype=self.dtype_policy,
            name="pixel_qkv_conv_bn",
        )
        self.memory_attention = AttentionOperation(dtype=self.dtype_policy, name="memory_attention")
        self.pixel_attention = AttentionOperation(dtype=self.dtype_policy, name="pixel_attention")
        self.pixel_drop_path = DropPath(
            drop_path_keep_prob, dtype=self.dtype_policy, name="pixel_drop_path"
        )
        self.memory_attention_drop_path = DropPath(
            drop_path_keep_prob, dtype=self.dtype_policy, name="memory_attention_drop_path"
        )
        self.memory_ffn_drop_path = DropPath(
            drop_path_keep_prob, dtype=self.dtype_policy, name="memory_ffn_drop_path"
        )

    def build(self, pixels_shape, memory_shape):
        pixel_shape = pixels_shape
        pixel_channels, memory_channels = pixel_shape[-1], memory_shape[-1]
        self.memory_conv3_bn = Conv1D(
            memory_channels,
            bn_gamma_initializer="zeros",
            dtype=self.dtype_policy,
            name="memory_conv3_bn",
        )
        self.memory_ffn_conv1_bn_act = Conv1D(
            self.feed_forward_network_channels,
            activation="relu",
            dtype=self.dtype_policy,
            name="memory_ffn_conv1_bn_act",
        )
        self.memory_ffn_conv2_bn = Conv1D(
            memory_channels,
            bn_gamma_initializer="zeros",
            dtype=self.dtype_policy,
            name="memory_ffn_conv2_bn",
        )
        self.pixel_conv3_bn = Conv1D(
            pixel_channels,
            bn_gamma_initializer="zeros",
            dtype=self.dtype_policy,
            name="pixel_conv3_bn",
        )
        slots = memory_shape[1]
        length = pixel_shape[1] * pixel_shape[2]
        b, heads = self.bottleneck_channels, self.num_heads
        dk, dv = self.total_key_depth // heads, self.total_value_depth // heads
        self.memory_conv1_bn_act.build((None, slots, memory_channels))
        self.pixel_conv1_bn_act.build((None, length, pixel_channels))
        self.memory_qkv_conv_bn.build((None, slots, b))
        self.pixel_qkv_conv_bn.build((None, length, b))
        self.memory_attention.build(
            ((None, heads, slots, dk), (None, heads, length + slots, dk), (None, None, heads, dv))
        )
        self.pixel_attention.build(
            ((None, heads, length, dk), (None, heads, slots, dk), (None, None, heads, dv))
        )
        self.memory_conv3_bn.build((None, slots, self.total_value_depth))
        self.memory_ffn_conv1_bn_act.build((None, slots, memory_channels))
        self.memory_ffn_conv2_bn.build((None, slots, self.feed_forward_network_channels))
        self.pixel_conv3_bn.build((None, length, self.total_value_depth))

    def _split_qkv(self, qkv):
        dk, heads = self.total_key_depth, self.num_heads
        query = _heads_first(qkv[..., :dk], heads)
        key = _heads_first(qkv[..., dk : 2 * dk], heads)
        value = qkv[..., 2 * dk :]
        batch, length = ops.shape(value)[0], value.shape[1]
        value = ops.reshape(value, (batch, length, heads, self.total_value_depth // heads))
        return query, key, value

    def call(self, pixels, memory, training=None):
        memory_space_input = memory
        _, height, width, pixel_channels = pixels.shape
        batch = ops.shape(pixels)[0]
        pixels = ops.reshape(pixels, (batch, height * width, pixel_channels))

        memory_space = self.memory_conv1_bn_act(memory_space_input, training=training)
        pixel_space = self.pixel_conv1_bn_act(ops.relu(pixels), training=training)
        memory_query, memory_key, memory_value = self._split_qkv(
            self.memory_qkv_conv_bn(memory_space, training=training)
        )
        pixel_query, pixel_key, pixel_value = self._split_qkv(
            self.pixel_qkv_conv_bn(pixel_space, training=training)
        )

        records = _attention_records.get()
        # Memory attends to pixels and to itself in one softmax (pixel keys first).
        attended, memory_weights = self.memory_attention(
            (
                memory_query,
                ops.concatenate([pixel_key, memory_key], axis=2),
                ops.concatenate([pixel_value, memory_value], axis=1),
            ),
            training=training,
            return_attention_scores=True,
        )
        attended = self.memory_conv3_bn(attended, training=training)
        attended = self.memory_attention_drop_path(attended, training=training)
        memory = ops.relu(memory_space_input + attended)
        ffn = self.memory_ffn_conv1_bn_act(memory, training=training)
        ffn = self.memory_ffn_conv2_bn(ffn, training=training)
        ffn = self.memory_ffn_drop_path(ffn, training=training)
        memory = ops.relu(memory + ffn)

        # Pixels attend to the input memory (parallel to the memory update).
        feedback, pixel_weights = self.pixel_attention(
            (pixel_query, memory_key, memory_value),
            training=training,
            return_attention_scores=True,
        )
        if records is not None:
            records.append((self, _split_weights(memory_weights, pixel_weights, height, width)))
        feedback = self.pixel_conv3_bn(feedback, training=training)
        feedback = self.pixel_drop_path(feedback, training=training)
        pixels = pixels + feedback
        return ops.reshape(pixels, (batch, height, width, pixel_channels)), memory

    def compute_output_shape(self, pixels_shape, memory_shape):
        return pixels_shape, memory_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "feed_forward_network_channels": self.feed_forward_network_channels,
                "num_heads": self.num_heads,
                "bottleneck_expansion": self.bottleneck_expansion,
                "key_expansion": self.key_expansion,
                "value_expansion": self.value_expansion,
                "drop_path_keep_prob": self.drop_path_keep_prob,
            }
        )
        return config
