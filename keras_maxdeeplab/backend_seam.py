"""The one place that branches on the Keras backend.

`host_call` runs a NumPy function on the host from inside a compiled step
(`jax.pure_callback`, `tf.numpy_function`, a plain call on PyTorch). XLA cannot
compile a host call on TensorFlow, so `host_calls_supported` says when callers
must use a pure `keras.ops` path instead.

Multi-device training differs by engine, and only here: a JAX step under
`keras.distribution` is one SPMD program over the global batch (statistics,
means and gradients are global by construction), while a TensorFlow step under
`tf.distribute` runs once per replica on its share of the batch, so batch-norm
statistics must be all-reduced (`synchronized_batch_norm`) and the loss divided
by the replica count (`replicas_in_sync`) for the summed gradients to be the
global batch's.
"""

import contextlib
import functools
import importlib.util
import math
import time

import numpy as np

import keras


def host_calls_supported(jit_compile=False):
    """False where a host call cannot run: TensorFlow under XLA (`jit_compile=True`)."""
    return not (keras.backend.backend() == "tensorflow" and jit_compile is True)


def check_host_calls_compile(jit_compile, what):
    """Raises when `what`, which runs on the host, would be compiled by
    TensorFlow's XLA (`jit_compile=True`), which cannot run host calls."""
    if not host_calls_supported(jit_compile):
        raise ValueError(
            f"{what} scores on the host (tf.numpy_function), which XLA cannot compile: use "
            "jit_compile='auto' or False with TensorFlow."
        )


def host_call_jit_compile(current, model_jit_compile, requested_jit_compile):
    """The `jit_compile` flag for code in a model's compiled step that chooses
    between a host call and a pure `keras.ops` path (the loss's matcher).

    On TensorFlow: whether the step runs under XLA (the model's resolved flag
    or the one requested of `compile` is True). Elsewhere host calls run under
    any compiler, so `current` is kept.
    """
    if keras.backend.backend() != "tensorflow":
        return current
    return model_jit_compile is True or requested_jit_compile is True


def synchronized_batch_norm():
    """Whether a batch norm built now must all-reduce its training statistics
    across replicas itself, for deeplab2's `SyncBatchNormalization` semantics
    (statistics of the global batch).

    True only on TensorFlow inside a `tf.distribute` strategy scope with more
    than one replica: each replica sees its share of the batch. Under JAX's
    `keras.distribution` the step is one program over the global batch, whose
    statistics are global already; single-device runs keep the exact
    two-pass moments of the unsynchronised path.

    Example:
    >>> keras.layers.BatchNormalization(synchronized=synchronized_batch_norm())
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1


def replicas_in_sync():
    """How many replicas each compute the loss on their share of the batch and
    then sum their gradients: `tf.distribute`'s `num_replicas_in_sync` on
    TensorFlow (1 without a strategy), 1 on JAX (one program over the global
    batch) and PyTorch. Dividing a per-replica batch mean by it makes the summed
    gradients those of the global batch mean, as deeplab2's trainer does.

    Example:
    >>> loss = keras.ops.mean(per_sample) / replicas_in_sync()
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def _local_devices(backend):
    """Names of the accelerators data parallelism would use (CPUs when none)."""
    if backend == "jax":
        return keras.distribution.list_devices()
    import tensorflow as tf

    for kind in ("TPU", "GPU", "CPU"):
        devices = [device.name for device in tf.config.list_logical_devices(kind)]
        if devices:
            return devices
    return []


@contextlib.contextmanager
def data_parallel(num_devices):
    """Context in which to build, compile and `fit` a model data-parallel
    on the first `num_devices` local devices, with the engine's own machinery.

    JAX: `keras.distribution.DataParallel` (variables replicated, the global
    batch sharded over a 1-D mesh; one SPMD program, so gradients, the loss
    mean and batch-norm statistics are those of the global batch).
    TensorFlow: `tf.distribute.MirroredStrategy` (one replica per device on
    its share of the batch; gradients summed, batch norms built inside
    all-reduce their statistics, `replicas_in_sync` divides the loss).
    `num_devices=1` is the plain single-device path. PyTorch: Keras 3 has no
    multi-device training for it, so more than one device is refused.

    Each `fit` batch is the global batch; it must divide by `num_devices`.

    Raises:
        ValueError: `num_devices` < 1, more than the local devices, or > 1 on
            PyTorch.

    Example:
    >>> with data_parallel(4):
    ...     model = build_model("max_deeplab_s", 641)
    ...     model.compile()
    ...     model.fit(dataset)  # global batch of 4k
    """
    backend = keras.backend.backend()
    if num_devices < 1:
        raise ValueError(f"The number of devices must be at least 1; got {num_devices}.")
    if num_devices == 1:
        yield None
        return
    if backend not in ("jax", "tensorflow"):
        raise ValueError(
            f"Multi-device training is not available on the {backend!r} backend: Keras "
            f"{keras.__version__} distributes training only on JAX (keras.distribution) and "
            "TensorFlow (tf.distribute). Use KERAS_BACKEND=jax or tensorflow, or one device."
        )
    devices = _local_devices(backend)
    if num_devices > len(devices):
        raise ValueError(
            f"{num_devices} devices requested but {backend} sees {len(devices)}: {devices}."
        )
    if backend == "jax":
        distribution = keras.distribution.DataParallel(devices=devices[:num_devices])
        with distribution.scope():
            yield distribution
        return
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(devices[:num_devices])
    with strategy.scope():
        yield strategy


def _jax_batch_sharding():
    """`(mesh, batch axis name)` of the current `keras.distribution`, or None."""
    distribution = keras.distribution.distribution()
    batch_axis = getattr(distribution, "batch_dim_name", None)
    if batch_axis is None:
        return None
    return distribution.device_mesh.backend_mesh, batch_axis


def host_call(fn, inputs, output_shape, output_dtype, per_sample=False):
    """Calls `fn(*numpy_arrays) -> numpy array` on the host; the result has no gradient.

    Args:
        fn: a NumPy function.
        inputs: list of tensors.
        output_shape: static shape of the result (the batch axis may be the
            inputs' dynamic batch size: pass `None` there).
        output_dtype: dtype string of the result.
        per_sample: the first axis of every input and of the result is the
            batch and `fn` treats samples independently. Under a JAX
            data-parallel `keras.distribution` each replica then calls `fn` on
            its own samples (`jax.shard_map`) instead of the whole batch being
            gathered to one device; on TensorFlow each replica calls it on its
            share anyway.

    Example:
    >>> permutation = host_call(solve, [cost], cost.shape, "float32", per_sample=True)
    """
    backend = keras.backend.backend()
    if (
        backend == "torch"
    ):  # Eager: call NumPy directly (also under torch.compile, as a graph break).
        arrays = [keras.ops.convert_to_numpy(x) for x in inputs]
        return keras.ops.convert_to_tensor(np.asarray(fn(*arrays), dtype=output_dtype))
    inputs = [keras.ops.stop_gradient(keras.ops.convert_to_tensor(x)) for x in inputs]
    if backend == "jax":
        import jax

        def call(*arrays):
            shape = (arrays[0].shape[0], *output_shape[1:]) if per_sample else output_shape
            shape = tuple(arrays[0].shape[0] if d is None else d for d in shape)
            return jax.pure_callback(
                lambda *a: np.asarray(fn(*a), dtype=output_dtype),
                jax.ShapeDtypeStruct(shape, output_dtype),
                *arrays,
            )

        sharding = _jax_batch_sharding() if per_sample else None
        if sharding is not None and inputs[0].shape[0] % sharding[0].shape[sharding[1]] == 0:
            mesh, batch_axis = sharding
            spec = jax.sharding.PartitionSpec(batch_axis)
            call = jax.shard_map(
                call, mesh=mesh, in_specs=(spec,) * len(inputs), out_specs=spec, check_vma=False
            )
        return call(*inputs)
    if backend == "tensorflow":
        import tensorflow as tf

        result = tf.numpy_function(
            lambda *a: np.asarray(fn(*a), dtype=output_dtype), inputs, output_dtype
        )
        result.set_shape(output_shape)
        return result
    raise ValueError(f"Unsupported Keras backend {backend!r}; expected jax, tensorflow or torch.")



def take(x, indices, axis):
    """`keras.ops.take(x, indices, axis)` for 1-D `indices`, exportable on
    every backend.

    Keras' PyTorch `take` squeezes the axis after `index_select`, a no-op
    that the dynamo ONNX exporter writes as a Squeeze ONNX Runtime rejects;
    there `index_select` alone gives the same values.

    Example:
    >>> take(maps, np.array([0, 0, 1], "int32"), axis=1)  # [B, 3, W] from [B, >=2, W]
    """
    if keras.backend.backend() == "torch":
        import torch

        return torch.index_select(
            keras.ops.convert_to_tensor(x), axis, keras.ops.convert_to_tensor(indices).long()
        )
    return keras.ops.take(x, indices, axis=axis)


def first_argmax(values, axis=-1, maximum=None):
    """`argmax` over `axis` as int32: the first index holding the maximum,
    -0.0 tying with 0.0 (as `tf.argmax` in deeplab2).

    `maximum`, if given, is `max(values, axis)`, which the caller has already
    computed. PyTorch's own argmax is that in one pass, and so is JAX's when
    the maximum is not known. Otherwise it is a comparison with the maximum
    and a min: on JAX, with the maximum known, one pass that XLA vectorises
    (a `[1, 641, 641, 128]` map: 76 ms against 98 ms for `jnp.argmax`, which
    reduces values and indices together; in the pixelwise post-processor at
    641, whose reductions XLA fuses with the upsampling, 0.57 s -> 0.47 s); on
    TensorFlow always, because Keras' TensorFlow `argmax` orders -0.0 below
    0.0 with `Bitcast`/`BitwiseAnd`, which exported graphs (ONNX, LiteRT)
    cannot hold. An all-NaN row gives an index in range.

    Example:
    >>> first_argmax(keras.ops.convert_to_tensor([[0.0, 2.0, 2.0]]))  # [1]
    """
    backend = keras.backend.backend()
    if backend == "torch":
        return keras.ops.argmax(values, axis=axis)
    if backend == "jax" and maximum is None:
        # Keras' JAX `argmax` orders -0.0 below 0.0 on CPU; JAX's ties them.
        import jax.numpy as jnp

        return jnp.argmax(values, axis=axis).astype("int32")
    rank = len(values.shape)
    axis = axis % rank
    size = values.shape[axis]
    positions = keras.ops.reshape(
        keras.ops.arange(size, dtype="int32"), [size if i == axis else 1 for i in range(rank)]
    )
    if maximum is None:
        maximum = keras.ops.max(values, axis=axis)
    maximum = keras.ops.expand_dims(maximum, axis)
    first = keras.ops.min(keras.ops.where(values == maximum, positions, size), axis=axis)
    return keras.ops.minimum(first, size - 1)  # In range even for all-NaN rows.


def count_by_index(index, weights, depth):
    """Per image, the sum of `weights` at each index value: `[B, ...]` int
    `index` in `0..depth-1` and float `weights` -> `[B, depth]` float32
    (exact counts for 0/1 weights).

    Keras' way is the sum of a `[B, ..., depth]` one-hot over the pixels.
    PyTorch runs eagerly and would build it in int64, mask it and cast it;
    XLA:CPU fuses it but strides through it once per vector of indices. A
    scatter-add reads each pixel once instead (at 641x641 with 128 slots:
    PyTorch ~20 ms against ~0.8 s, JAX 0.5 ms against 130 ms). TensorFlow
    keeps the one-hot sum, which its exporters hold.

    Example:
    >>> count_by_index(mask_id, ops.cast(confident, "float32"), 128)  # pixels per slot
    """
    weights = keras.ops.cast(weights, "float32")
    batch = index.shape[0]
    if keras.backend.backend() == "torch":
        import torch

        flat_index = keras.ops.convert_to_tensor(index).reshape(batch, -1).long()
        flat_weights = weights.reshape(batch, -1)
        counts = torch.zeros((batch, depth), dtype=flat_weights.dtype, device=flat_weights.device)
        return counts.scatter_add(1, flat_index, flat_weights)
    if keras.backend.backend() == "jax":
        import jax

        flat_index = jax.numpy.reshape(index, (batch, -1))
        images = jax.lax.broadcasted_iota("int32", flat_index.shape, 0)
        counts = jax.numpy.zeros((batch, depth), "float32")
        return counts.at[images, flat_index].add(jax.numpy.reshape(weights, flat_index.shape))
    one_hot = keras.ops.one_hot(index, depth, dtype="float32")
    axes = tuple(range(1, len(index.shape)))
    return keras.ops.sum(one_hot * weights[..., None], axis=axes)


def conv(inputs, kernel, strides=1, padding="valid", dilation_rate=1, bias=None):
    """`keras.ops.conv` for `[B, H, W, C]` inputs and a `[kh, kw, C / groups,
    filters]` kernel (groups = C / the kernel's third dimension), plus an
    optional `[filters]` bias.

    Keras' PyTorch convolution copies the inputs into channels-first memory and
    hands back a strided channels-last view, which every later elementwise op
    (batch norm, ReLU, residual adds) then walks slowly: on MaX-DeepLab-S at
    641 those copies and strided passes took about half of the forward pass.
    PyTorch's oneDNN convolution reads a permuted channels-last tensor as it
    is and writes channels-last, so on PyTorch the permutes here are views and
    the output is contiguous (a 1x1 conv + batch norm + ReLU on a
    161x161x256 map: 12.5 ms against 80 ms). The sums differ only in float
    rounding. 1x1 kernels run as `pointwise` (on JAX and TensorFlow on CPU too);
    strided "same" padding and dtypes other than float32 keep Keras' own
    path. Atrous "same" convolutions on JAX and TensorFlow on CPU run as
    `_atrous_conv_by_row_products`.

    Example:
    >>> conv(x, layer.kernel, strides=2)  # x [1, 65, 65, 64], kernel [3, 3, 64, 128] -> [1, 32, 32, 128]
    """
    strides = _pair(strides)
    dilation_rate = _pair(dilation_rate)
    if tuple(kernel.shape[:2]) == (1, 1) and strides != (1, 1) and _runs_jax_on_cpu():
        # A strided 1x1 convolution reads every stride-th pixel, with no
        # padding under "same" or "valid": XLA:CPU's gradient of the strided
        # form is slow (forward + backward, `[1, 321, 321, 128] -> 256`,
        # stride 2: 85.1 against 40.3 ms on the sliced pixels; `[1, 161,
        # 161, 256] -> 512` 49.1 against 21.1 ms). TensorFlow's is faster strided.
        inputs = inputs[:, :: strides[0], :: strides[1], :]
        strides = (1, 1)
    if (
        tuple(kernel.shape[:3]) == (1, 1, inputs.shape[-1])
        and strides == (1, 1)
        and (_runs_torch_float32(inputs) or _runs_jax_or_tensorflow_on_cpu())
    ):
        # PyTorch: see `pointwise`. TensorFlow's CPU kernel takes the weight
        # gradient of a 1x1 convolution slowly, where the matrix product's
        # is another product (forward + backward, `[1, 41, 41, 2048] -> 1024`
        # 67.8 against 44.1 ms; MaX-DeepLab-S's 1x1 convolutions at 641: 908
        # -> 735 ms; its 641 training step 7.16 / 6.77 -> 6.90 / 6.64 s).
        # XLA:CPU's is slow too (`[1, 161, 161, 256] -> 64`: 41.1 against
        # 15.8 ms), and takes it against a transposed copy of the inputs or
        # of the output gradient, into which it fuses the forward chain it
        # recomputes: JAX's 641 training step 9.10-9.37 -> 5.56-5.99 s with
        # `pointwise` here and there.
        return pointwise(inputs, kernel[0, 0], bias)
    if (
        padding == "same"
        and strides == (1, 1)
        and dilation_rate != (1, 1)
        and kernel.shape[2] == inputs.shape[-1]
        and None not in inputs.shape[1:3]
        and _runs_jax_or_tensorflow_on_cpu()
    ):
        outputs = _atrous_conv_by_row_products(inputs, kernel, dilation_rate)
        return outputs if bias is None else outputs + bias
    if not _runs_torch_float32(inputs) or (padding == "same" and strides != (1, 1)):
        outputs = keras.ops.conv(
            inputs, kernel, strides=strides, padding=padding, dilation_rate=dilation_rate
        )
        return outputs if bias is None else outputs + bias
    import torch

    inputs = keras.ops.convert_to_tensor(inputs)
    kernel = keras.ops.convert_to_tensor(kernel)
    outputs = torch.nn.functional.conv2d(
        inputs.permute(0, 3, 1, 2),
        _torch_conv_weight(kernel),
        bias=None if bias is None else keras.ops.convert_to_tensor(bias),
        stride=strides,
        padding=padding,
        dilation=dilation_rate,
        groups=inputs.shape[-1] // kernel.shape[2],
    )
    return outputs.permute(0, 2, 3, 1)


def _torch_conv_weight(kernel):
    """A `[kh, kw, C_in / groups, C_out]` kernel as PyTorch's `[C_out, C_in /
    groups, kh, kw]` weight, channels last in memory, made by one 2-D
    transpose: oneDNN takes a channels-last weight as it is, and PyTorch
    copies a 2-D transpose 2-4x faster than a 4-D permutation (ASPP's `[3,
    3, 2048, 256]` kernel: 4.9 against 16.0 ms; its convolution's forward and
    backward 152 -> 120 ms)."""
    kh, kw, group_in, filters = kernel.shape
    rows = kernel.reshape(-1, filters).t().contiguous()  # [C_out, kh * kw * C_in]
    return rows.view(filters, kh, kw, group_in).permute(0, 3, 1, 2)


def _runs_jax_on_cpu():
    return keras.backend.backend() == "jax" and _jax_platform() == "cpu"


def _runs_jax_or_tensorflow_on_cpu():
    # Where 1x1 convolutions as products and the atrous row products were
    # measured; PyTorch's oneDNN convolution skips an atrous kernel's padding
    # itself (forward 46-70 ms on ASPP's maps, forward and backward as fast as
    # the row products).
    return _runs_jax_on_cpu() or _runs_tensorflow_on_cpu()


def _runs_tensorflow_on_cpu():
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


def _atrous_conv_by_row_products(inputs, kernel, dilation_rate):
    """A stride-1 "same" atrous convolution as one matrix product per kernel
    row over the input rows that row reaches, the kernel's columns side by
    side, then each column's products shifted into place.

    At a large rate most taps of an atrous kernel fall on the zero padding
    (ASPP's rate 18 on MaX-DeepLab-S's 41x41 map at 641: half of them), which
    XLA and TensorFlow's convolutions multiply all the same; the products skip
    the rows outside the map. ASPP's 3x3 convolution of `[1, 41, 41, 2048]` to
    256 channels at rates 6 / 12 / 18, forward and backward (ms, 2 CPU
    cores): JAX 247 / 253 / 250 -> 173 / 152 / 137, TensorFlow 202 / 286 /
    408 -> 233 / 207 / 187 (forward alone 90 / 113 / 165 -> 76 / 62 / 58).
    On the 9x9 map of a 129 crop the whole ASPP layer trains in 78 against
    301 ms on TensorFlow and 38 against 53 ms on JAX, whose forward alone is
    slower there (20.0 against 15.6 ms).
    """
    _, height, width, channels = inputs.shape
    kernel_height, kernel_width, _, filters = kernel.shape
    rate_h, rate_w = dilation_rate
    # TensorFlow's "same": the odd pixel of padding goes after.
    top = (kernel_height - 1) * rate_h // 2
    left = (kernel_width - 1) * rate_w // 2
    outputs = None
    for i in range(kernel_height):
        shift_i, first, last = _tap_reach(i, rate_h, top, height)
        if first >= last:
            continue
        # [B, rows, W, C] x [C, kw * filters]: every column of kernel row i at once.
        row_kernel = keras.ops.reshape(
            keras.ops.transpose(kernel[i], (1, 0, 2)), (channels, kernel_width * filters)
        )
        products = keras.ops.matmul(inputs[:, first + shift_i : last + shift_i], row_kernel)
        products = keras.ops.reshape(products, (-1, last - first, width, kernel_width, filters))
        for j in range(kernel_width):
            shift_j, begin, end = _tap_reach(j, rate_w, left, width)
            if begin >= end:
                continue
            term = keras.ops.pad(
                products[:, :, begin + shift_j : end + shift_j, j],
                [[0, 0], [first, height - last], [begin, width - end], [0, 0]],
            )
            outputs = term if outputs is None else outputs + term
    return outputs


def _tap_reach(tap, rate, padding_before, size):
    """Along one axis: the input offset of kernel tap `tap` and the outputs
    `[first, last)` whose input under that tap lies on the map."""
    shift = tap * rate - padding_before
    return shift, max(0, -shift), min(size, size - shift)


# From this many rows (pixels, or positions of a sequence) PyTorch runs a 1x1
# convolution as oneDNN's rather than as MKL's matrix product; below it the
# convolution's per-call reordering of the weights costs more than it saves
# (up to 6x slower at 81 rows). Re-measured with PyTorch 2.13 on 2 CPU cores
# (256 to 2048 channels), oneDNN's forward is 5-15% faster from 2500 rows, as
# fast at 1681 and up to 1.4x slower at 512; a threshold of 2048 did not make
# MaX-DeepLab-S's 641 training step faster (7.12 / 7.13 s against 7.21 / 7.22).
_POINTWISE_CONV_MIN_ROWS = 512


def pointwise(inputs, kernel, bias=None):
    """`inputs @ kernel (+ bias)` on the last axis: `[..., C_in]` x `[C_in,
    C_out]` (+ `[C_out]`) -> `[..., C_out]` (a 1x1 convolution, or a
    projection of a sequence).

    On PyTorch from `_POINTWISE_CONV_MIN_ROWS` rows up, it runs as oneDNN's
    1x1 convolution in channels-last memory, faster than the matrix product on
    large maps (MaX-DeepLab-S's stride 8 at 641: [6561, 1024] x [1024, 2048]
    in 143 ms against 157 ms), and its gradient as matrix products (oneDNN's
    is slower, see `_torch_pointwise_conv`); elsewhere it is one
    `keras.ops.matmul` of the inputs' `[rows, C_in]` reshape. The sums differ
    only in float rounding.

    Example:
    >>> pointwise(x, kernel)  # x [4, 41, 1024], kernel [1024, 2048] -> [4, 41, 2048]
    """
    rows = inputs.shape[:-1]
    # A traced size (a dynamic batch under torch.export) is no int: the
    # choice would be a guard on it, so traced graphs take the matrix product.
    if (
        _runs_torch_float32(inputs)
        and all(isinstance(size, int) for size in rows)
        and math.prod(rows) >= _POINTWISE_CONV_MIN_ROWS
    ):
        import torch

        inputs = keras.ops.convert_to_tensor(inputs)
        kernel = keras.ops.convert_to_tensor(kernel)
        bias = None if bias is None else keras.ops.convert_to_tensor(bias)
        if torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (inputs, kernel, bias)
        ):
            return _torch_pointwise_conv().apply(inputs, kernel, bias)
        return _onednn_pointwise(inputs, kernel, bias)
    # One [rows, C_in] x [C_in, C_out] product: its kernel gradient is then
    # rows^T x d_rows on two row-major operands. From the batched product
    # XLA:CPU took the kernel gradient against a transposed copy of the
    # output gradient, and fused into that copy the forward chain it
    # recomputes: in MaX-DeepLab-S's 641 training step the copies for the
    # stage-5 transformers' output projections took 350-430 ms each, on one
    # core (`jax.profiler`).
    shape = keras.ops.shape(inputs)
    outputs = keras.ops.matmul(keras.ops.reshape(inputs, (-1, shape[-1])), kernel)
    outputs = keras.ops.reshape(outputs, (*shape[:-1], kernel.shape[-1]))
    return outputs if bias is None else outputs + bias


def _onednn_pointwise(inputs, kernel, bias):
    import torch

    column = inputs.reshape(1, -1, 1, inputs.shape[-1]).permute(0, 3, 1, 2)
    outputs = torch.nn.functional.conv2d(column, _torch_conv_weight(kernel[None, None]), bias)
    return outputs.permute(0, 2, 3, 1).reshape(*inputs.shape[:-1], kernel.shape[1])


@functools.cache
def _torch_pointwise_conv():
    import torch

    class PointwiseConv(torch.autograd.Function):
        """oneDNN's 1x1 convolution forward, matrix products backward.

        oneDNN's 1x1 convolution gradient costs 4-8x its forward pass on small
        maps, MKL's two products 2x: forward and backward of [1681, 1024] x
        [1024, 2048] (MaX-DeepLab-S's stage 5 at 641) 122 ms against 222 ms,
        [1681, 2048] x [2048, 1024] 123 against 334 ms; the same from 25921
        rows up (56-60 ms at [25921, 256] x [256, 256]).
        """

        @staticmethod
        def forward(ctx, inputs, kernel, bias):
            ctx.save_for_backward(inputs, kernel)
            ctx.has_bias = bias is not None
            return _onednn_pointwise(inputs, kernel, bias)

        @staticmethod
        def backward(ctx, d_outputs):
            inputs, kernel = ctx.saved_tensors
            rows = inputs.reshape(-1, inputs.shape[-1])
            d_rows = d_outputs.reshape(-1, d_outputs.shape[-1])
            needs_inputs, needs_kernel, needs_bias = ctx.needs_input_grad
            d_inputs = (d_rows @ kernel.t()).reshape(inputs.shape) if needs_inputs else None
            d_kernel = rows.t() @ d_rows if needs_kernel else None
            d_bias = d_rows.sum(0) if ctx.has_bias and needs_bias else None
            return d_inputs, d_kernel, d_bias

    return PointwiseConv


def folds_batch_norm(inputs):
    """Whether a convolution on `inputs` followed by inference batch norm
    runs faster as one convolution with the normalisation folded into its
    kernel and bias. On PyTorch (float32) batch norm is three more passes over
    the map and a new one; the bias adds inside oneDNN's convolution. XLA
    already fuses the normalisation into one pass after the convolution, so
    folding would only move float rounding there.
    """
    return _runs_torch_float32(inputs)


def runs_batch_norm_training(inputs, axis):
    """Whether training batch norm over every axis of `inputs` but `axis`
    should run as `batch_norm_training` rather than through Keras'
    `BatchNormalization`.

    On PyTorch (float32): autograd differentiates Keras' moments and
    normalisation op by op, about ten passes over the map, where PyTorch's own
    batch-norm gradient kernel takes two. Forward and backward of one batch
    norm: `[1, 161, 161, 256]` (MaX-DeepLab-S's stride 4 at 641) 9.9 ms
    against 40.0 ms, `[1, 321, 321, 128]` 33.5 against 153.6 ms, `[1, 41, 41,
    2048]` 5.8 against 16.0 ms.

    On JAX on CPU (float32, channels last, from `_PIXEL_LOOP_MIN_VALUES`
    values): XLA:CPU sums a map over its pixels at a few GB/s, each vector of
    channels striding through the whole map, and Keras' forward and backward
    take four such sums; `batch_norm_training` takes them block by block
    (`_jax_sum_over_pixels`). Forward and backward: `[1, 161, 161, 256]`
    13.2 against 30.8 ms, `[1, 321, 321, 128]` 56.5 against 87.8 ms,
    `[1, 41, 41, 2048]` 5.2 against 15.2 ms.

    TensorFlow's gradient kernel saved less (25-35%) and reads its saved
    statistics differently on CPU and GPU (`benchmarks/RESULTS.md`).

    Example:
    >>> runs_batch_norm_training(x, -1)  # True for a float32 tensor on PyTorch
    """
    if _runs_torch_float32(inputs):
        return True
    return (
        _runs_jax_on_cpu()
        and keras.backend.standardize_dtype(inputs.dtype) == "float32"
        and axis % len(inputs.shape) == len(inputs.shape) - 1
        and None not in inputs.shape
        and math.prod(inputs.shape) >= _PIXEL_LOOP_MIN_VALUES
    )


# Below this many values (1 MB) XLA's own sums over a map are about as fast as
# the loop (`[1, 9, 9, 64]`: 0.1 ms both).
_PIXEL_LOOP_MIN_VALUES = 2**18


def batch_norm_training(inputs, gamma, beta, axis, epsilon):
    """Training batch normalisation over every axis but `axis`, with Keras'
    formula, its gradient on PyTorch's batch-norm gradient kernel (PyTorch)
    or its sums block by block (JAX); see `runs_batch_norm_training`.

    PyTorch: the forward pass is Keras' own (`ops.moments`, whose `E[x^2] -
    E[x]^2` is also deeplab2's synchronised batch norm's, then
    `ops.batch_normalization`), so outputs and statistics are Keras' bit for
    bit; PyTorch's own forward kernel sums in another order and moved
    deeplab2-parity outputs past their tolerances. The backward pass is the
    batch-norm gradient with these statistics, by
    `aten.native_batch_norm_backward`. JAX: Keras' two-pass mean and
    variance and its normalisation, summed block by block, and the batch-norm
    gradient written out (`jax.custom_vjp`); Keras' values up to float
    rounding.

    Args:
        inputs: float32 `[B, ..., C, ...]`, `C` on `axis`.
        gamma, beta: float32 `[C]`.
        axis: int, the normalised axis.
        epsilon: float, added to the variance.

    Returns:
        `(outputs, mean, variance)`: the shape of `inputs`, `[C]`, `[C]` (the
        statistics without gradient, for the moving averages).

    Example:
    >>> y, mean, variance = batch_norm_training(x, layer.gamma, layer.beta, -1, 1e-3)
    """
    inputs, gamma, beta = (keras.ops.convert_to_tensor(t) for t in (inputs, gamma, beta))
    if keras.backend.backend() == "jax":
        return _jax_batch_norm_training()(inputs, gamma, beta, epsilon)
    return _torch_batch_norm_training().apply(inputs, gamma, beta, axis % inputs.ndim, epsilon)


def _jax_sum_over_pixels(terms, *maps):
    """`sum over every pixel of terms(*rows)`: `maps` `[..., C]` of one shape,
    `terms` a function of `[k, C]` blocks of their pixels returning a list of
    `[k, C]`; `[len(terms), C]` out.

    A loop over blocks of `_PIXEL_BLOCK_VALUES` values keeps each in cache,
    where XLA:CPU's own sum over the pixels of a map strides through the
    whole map once per vector of channels (`[1, 161, 161, 256]`, a sum and a
    sum of products: 16.3 against 3.1 ms; `[41, 41, 2048]` 6.6 against 1.1
    ms)."""
    import jax

    channels = maps[0].shape[-1]
    maps = [jax.numpy.asarray(m).reshape(-1, channels) for m in maps]
    block = max(1, _PIXEL_BLOCK_VALUES // channels)
    blocks = maps[0].shape[0] // block

    def sums(*rows):
        return jax.numpy.stack([t.sum(axis=0) for t in terms(*rows)])

    def add_block(index, total):
        return total + sums(*(jax.lax.dynamic_slice_in_dim(m, index * block, block) for m in maps))

    # The pixels after the last whole block.
    tail = sums(*(m[blocks * block :] for m in maps))
    return jax.lax.fori_loop(0, blocks, add_block, tail)


_PIXEL_BLOCK_VALUES = 2**15


@functools.cache
def _jax_batch_norm_training():
    import jax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
    def batch_norm(inputs, gamma, beta, epsilon):
        return forward(inputs, gamma, beta, epsilon)[0]

    def forward(inputs, gamma, beta, epsilon):
        count = math.prod(inputs.shape[:-1])
        mean = _jax_sum_over_pixels(lambda x: [x], inputs)[0] / count
        variance = _jax_sum_over_pixels(lambda x: [jax.numpy.square(x - mean)], inputs)[0] / count
        inverse = jax.lax.rsqrt(variance + epsilon)
        scale = inverse * gamma
        outputs = inputs * scale + (beta - mean * scale)
        statistics = (jax.lax.stop_gradient(mean), jax.lax.stop_gradient(variance))
        return (outputs, *statistics), (inputs, gamma, mean, inverse)

    def backward(epsilon, residuals, cotangents):
        inputs, gamma, mean, inverse = residuals
        d_outputs = cotangents[0]
        count = math.prod(inputs.shape[:-1])
        d_beta, d_gamma = _jax_sum_over_pixels(
            lambda x, dy: [dy, dy * ((x - mean) * inverse)], inputs, d_outputs
        )
        normalized = (inputs - mean) * inverse
        d_inputs = (gamma * inverse / count) * (count * d_outputs - d_beta - normalized * d_gamma)
        return d_inputs, d_gamma, d_beta

    batch_norm.defvjp(forward, backward)
    return batch_norm


@functools.cache
def _torch_batch_norm_training():
    import torch

    def channels_on_axis_1(x, axis):
        # The kernel normalises axis 1 of a 4-D map. Channels last: the
        # `[1, C, rows, 1]` view of the contiguous `[1, rows, 1, C]`, its
        # channels-last layout (a permuted view takes a strided path 20x
        # slower). Otherwise `[before, C, after, 1]`, contiguous.
        if axis == x.ndim - 1:
            return x.reshape(1, -1, 1, x.shape[-1]).permute(0, 3, 1, 2)
        return x.reshape(math.prod(x.shape[:axis]), x.shape[axis], -1, 1)

    class BatchNormTraining(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inputs, gamma, beta, axis, epsilon):
            # What keras.layers.BatchNormalization.call runs in training.
            reduced = [a for a in range(inputs.ndim) if a != axis]
            mean, variance = keras.ops.moments(inputs, axes=reduced)
            outputs = keras.ops.batch_normalization(
                inputs, mean, variance, axis, offset=beta, scale=gamma, epsilon=epsilon
            )
            ctx.save_for_backward(inputs, gamma, mean, variance)
            ctx.axis, ctx.epsilon = axis, epsilon
            ctx.mark_non_differentiable(mean, variance)
            return outputs, mean, variance

        @staticmethod
        def backward(ctx, d_outputs, _d_mean, _d_variance):
            inputs, gamma, mean, variance = ctx.saved_tensors
            d_inputs, d_gamma, d_beta = torch.ops.aten.native_batch_norm_backward(
                channels_on_axis_1(d_outputs.contiguous(), ctx.axis),
                channels_on_axis_1(inputs, ctx.axis),
                gamma,
                None,
                None,
                mean,
                torch.rsqrt(variance + ctx.epsilon),
                True,
                ctx.epsilon,
                list(ctx.needs_input_grad[:3]),
            )
            if d_inputs is not None:
                if ctx.axis == inputs.ndim - 1:
                    d_inputs = d_inputs.permute(0, 2, 3, 1)
                d_inputs = d_inputs.reshape(inputs.shape)
            return d_inputs, d_gamma, d_beta, None, None

    return BatchNormTraining


def _runs_torch_float32(inputs):
    # Other dtypes keep Keras' own ops, which choose how PyTorch runs them on
    # each device (e.g. float16 matrix products in float32 on CPU).
    return keras.backend.backend() == "torch" and keras.backend.standardize_dtype(
        inputs.dtype
    ) == "float32"


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def depthwise_conv_same(inputs, kernel, bias=None):
    """A stride-1 "same" depthwise convolution: `[B, H, W, C]` inputs, a
    `[kh, kw, C, 1]` kernel (`keras.layers.DepthwiseConv2D`'s), an optional
    `[C]` bias, `[B, H, W, C]` out.

    XLA's CPU backend runs a grouped convolution as a slow generic loop
    (MaX-DeepLab-S's 5x5 depthwise conv on a 161x161x256 map: 430 ms, against
    9 ms in TensorFlow's kernel). On JAX on CPU the same sum is written as
    kh * kw shifted multiply-adds, which XLA fuses into one pass (19 ms), and
    in float32 its gradient is written out (`_jax_depthwise_conv_same`);
    elsewhere the engine's own depthwise convolution runs (through `conv` on
    PyTorch: 5x5 on 161x161x256, 3.8 ms against Keras' 18.7 ms). The sums
    differ only in float rounding.

    Example:
    >>> depthwise_conv_same(x, layer.kernel)  # x [1, 161, 161, 256], kernel [5, 5, 256, 1]
    """
    if _runs_torch_float32(inputs):
        kernel_height, kernel_width, channels, _ = kernel.shape
        # [kh, kw, C, 1] holds the same values in the order of the grouped
        # kernel [kh, kw, 1, C].
        grouped = keras.ops.reshape(kernel, (kernel_height, kernel_width, 1, channels))
        return conv(inputs, grouped, padding="same", bias=bias)
    if not _runs_jax_on_cpu():
        outputs = keras.ops.depthwise_conv(inputs, kernel, strides=1, padding="same")
    elif keras.backend.standardize_dtype(inputs.dtype) == "float32":
        kernel = keras.ops.convert_to_tensor(kernel)
        outputs = _jax_depthwise_conv_same()(inputs, kernel)
    else:
        outputs = _depthwise_by_shifted_products(inputs, kernel, _same_padding(kernel.shape[:2]))
    return outputs if bias is None else outputs + bias


def _same_padding(kernel_size):
    # TensorFlow's "same" at stride 1: the odd pixel of padding goes after.
    return [((size - 1) // 2, size - 1 - (size - 1) // 2) for size in kernel_size]


def _depthwise_by_shifted_products(inputs, kernel, padding):
    """`sum_ij padded[:, i:i+H, j:j+W, :] * kernel[i, j, :, 0]`: `[B, H, W, C]`
    inputs padded by `padding` (`[(top, bottom), (left, right)]`)."""
    height, width = inputs.shape[1:3]
    padded = keras.ops.pad(inputs, [[0, 0], *padding, [0, 0]])
    outputs = None
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            term = padded[:, i : i + height, j : j + width, :] * kernel[i, j, :, 0]
            outputs = term if outputs is None else outputs + term
    return outputs


@functools.cache
def _jax_depthwise_conv_same():
    """The shifted products with their gradient written out (`jax.custom_vjp`).

    The input gradient is the same sum over the output gradient, padded the
    other way, with the kernel flipped. The kernel gradient sums
    `padded[b, h + i, w + j, c] * d_outputs[b, h, w, c]` over every pixel;
    XLA:CPU sums a map over its pixels at a few GB/s, since each vector of
    channels strides through the whole map (MaX-DeepLab-S's `[1, 161, 161,
    256]` 5x5: 277 ms, where TensorFlow's kernel takes 72 ms for both
    gradients). A loop over the map's rows keeps each row's `[kh, W + kw - 1,
    C]` window in cache: 48 ms. Forward and backward: 83 against 317 ms.
    """
    import jax

    @jax.custom_vjp
    def depthwise(inputs, kernel):
        return _depthwise_by_shifted_products(inputs, kernel, _same_padding(kernel.shape[:2]))

    def forward(inputs, kernel):
        return depthwise(inputs, kernel), (inputs, kernel)

    def backward(residuals, d_outputs):
        inputs, kernel = residuals
        d_outputs = jax.numpy.asarray(d_outputs)
        kernel_height, kernel_width = kernel.shape[:2]
        height, width = inputs.shape[1:3]
        padding = _same_padding((kernel_height, kernel_width))
        flipped = kernel[::-1, ::-1]
        d_inputs = _depthwise_by_shifted_products(d_outputs, flipped, [p[::-1] for p in padding])
        padded = jax.numpy.pad(inputs, [(0, 0), *padding, (0, 0)])

        def add_row(index, d_kernel):
            b, h = index // height, index % height
            window = jax.lax.dynamic_slice_in_dim(padded[b], h, kernel_height, axis=0)
            d_row = d_outputs[b, h]
            taps = [
                (window[i, j : j + width] * d_row).sum(axis=0)
                for i in range(kernel_height)
                for j in range(kernel_width)
            ]
            return d_kernel + jax.numpy.stack(taps).reshape(kernel.shape)

        d_kernel = jax.lax.fori_loop(0, inputs.shape[0] * height, add_row, jax.numpy.zeros_like(kernel))
        return d_inputs, d_kernel

    depthwise.defvjp(forward, backward)
    return depthwise


def adam_step_in_place(optimizer, grads, variables, learning_rate, decayed, weight_decay_rate):
    """One Adam step (without amsgrad) of `optimizer`'s slots on `variables`,
    with deeplab2's decoupled weight decay first on the `decayed` ones
    (`variable *= 1 - learning_rate * weight_decay_rate`); True when done
    here, False where the caller's per-variable `update_step` should run.

    Keras runs an Adam subclass's update one variable at a time, about ten
    small operations each; XLA fuses them, but PyTorch runs every one from
    Python: on MaX-DeepLab-S that was a quarter of a training step. Here,
    on PyTorch, each of Adam's operations runs once over all the variables
    (`torch._foreach_*`). On TensorFlow outside a distribution strategy,
    each variable takes one `ResourceApplyAdam` (Keras' formula in one
    kernel): TensorFlow traces one operation per variable instead of ten.
    The values differ only in float rounding.

    Example:
    >>> decayed = [v.path.endswith("kernel") for v in variables]
    >>> adam_step_in_place(optimizer, grads, variables, 1e-3, decayed, 0.05)
    """
    backend = keras.backend.backend()
    if optimizer.amsgrad or backend not in ("torch", "tensorflow"):
        return False
    if backend == "tensorflow":
        return _tensorflow_adam_step(
            optimizer, grads, variables, learning_rate, decayed, weight_decay_rate
        )
    import torch

    with torch.no_grad():
        values = [variable.value for variable in variables]
        grads = [keras.ops.convert_to_tensor(grad, values[0].dtype) for grad in grads]
        rate = keras.ops.convert_to_tensor(learning_rate, values[0].dtype)
        step = keras.ops.cast(optimizer.iterations + 1, values[0].dtype)
        if weight_decay_rate:
            shrunk = [value for value, decay in zip(values, decayed) if decay]
            if shrunk:
                torch._foreach_mul_(shrunk, 1 - rate * weight_decay_rate)
        slots = [optimizer._get_variable_index(variable) for variable in variables]
        m = [optimizer._momentums[i].value for i in slots]
        v = [optimizer._velocities[i].value for i in slots]
        # In place but for one list of temporaries: at MaX-DeepLab-S's 62M
        # parameters each new list is 250 MB to allocate and fault in.
        torch._foreach_lerp_(m, grads, 1 - optimizer.beta_1)
        torch._foreach_mul_(v, optimizer.beta_2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - optimizer.beta_2)
        alpha = rate * torch.sqrt(1 - optimizer.beta_2**step) / (1 - optimizer.beta_1**step)
        # variable -= alpha * m / (sqrt(v) + epsilon), as m / ((sqrt(v) + epsilon) / alpha).
        denominators = torch._foreach_sqrt(v)
        torch._foreach_add_(denominators, optimizer.epsilon)
        torch._foreach_div_(denominators, alpha)
        torch._foreach_addcdiv_(values, m, denominators, value=-1)
    return True


def _tensorflow_adam_step(optimizer, grads, variables, learning_rate, decayed, weight_decay_rate):
    import tensorflow as tf

    # A strategy's mirrored variables update through its cross-replica
    # merge, which Keras' own per-variable step goes through.
    if tf.distribute.has_strategy():
        return False
    dtype = variables[0].dtype
    rate = tf.cast(learning_rate, dtype)
    step = tf.cast(optimizer.iterations + 1, dtype)
    beta1 = tf.cast(optimizer.beta_1, dtype)
    beta2 = tf.cast(optimizer.beta_2, dtype)
    constants = {
        "beta1_power": tf.pow(beta1, step),
        "beta2_power": tf.pow(beta2, step),
        "lr": rate,
        "beta1": beta1,
        "beta2": beta2,
        "epsilon": tf.cast(optimizer.epsilon, dtype),
    }
    decay_factor = rate * weight_decay_rate  # traced once, not per decayed variable
    for grad, variable, decay in zip(grads, variables, decayed):
        if weight_decay_rate and decay:
            variable.assign_sub(decay_factor * variable)
        slot = optimizer._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=optimizer._momentums[slot].handle,
            v=optimizer._velocities[slot].handle,
            grad=tf.cast(tf.convert_to_tensor(grad), dtype),
            **constants,
        )
    return True


def native_resize_bilinear_align_corners(images, size):
    """The engine's own align-corners bilinear resize of `[B, H, W, C]`
    float32 images to `size` `(H', W')`, or None where the `keras.ops` form
    (two matrix products) serves.

    PyTorch's upsampling kernel reads the channels-last view as it is and
    computes the same interpolation as TF1's `align_corners=True` (source =
    destination * (in - 1) / (out - 1) in float32): 161 -> 641 upsampling of
    128 mask logits in 113 ms against 264 ms for the matrix products, 81 ->
    161 of 256 channels in 1.6 ms against 17.8 ms. The values differ only in
    float rounding.

    Example:
    >>> native_resize_bilinear_align_corners(x, (161, 161))  # x [1, 81, 81, 256]; None off PyTorch
    """
    if not _runs_torch_float32(images):
        return None
    import torch

    images = keras.ops.convert_to_tensor(images)
    resized = torch.nn.functional.interpolate(
        images.permute(0, 3, 1, 2), size=tuple(size), mode="bilinear", align_corners=True
    )
    return resized.permute(0, 2, 3, 1)


def resizes_by_gathers():
    """Whether align-corners bilinear resizing should gather each output row's
    two source rows and interpolate them, rather than multiply by the
    `[out, in]` interpolation matrices (`layers.resize`).

    On JAX: XLA runs the gathers and the interpolation as one pass over the
    output, where the matrix products do `in` multiply-adds per value (most of
    them by zero). 161 -> 641 upsampling of 128 mask logits (post-processing
    at 641) 63 ms against 212 ms, 81 -> 161 of 256 channels (the decoder) 1.5
    ms against 22 ms. Their gradient (a scatter-add) costs more than the
    matrices' (32 ms against 10 ms at 81 -> 161): in a training step at 641
    the decoder's four resizes save 55 ms forward and add 72 ms backward, 0.1%
    of the step. PyTorch has its own kernel
    (`native_resize_bilinear_align_corners`); TensorFlow keeps the matrix
    products, the form its exporters convert everywhere.

    Example:
    >>> resizes_by_gathers()  # True on JAX
    """
    return keras.backend.backend() == "jax"


def reduces_rows_in_blocks(shape):
    """Whether a map computed only to be reduced (the post-processor's
    upsampled mask logits), `shape` per image (`[H, W, N]`, static), should
    be computed and reduced a block of rows at a time (`map_row_blocks`)
    rather than whole.

    On JAX on CPU, from `_ROW_LOOP_MIN_VALUES` values per image: XLA:CPU
    writes the whole upsampled map to memory and reads it back once per
    reduction (five in the pixelwise post-processor), or upsamples again
    inside each; a block of rows stays in cache. The pixelwise
    post-processor (`postprocessing.panoptic._upsampled_slot_reductions`),
    128 slots, whole against by rows: 641, batch 1 272 -> 97 ms, batch 4
    1063 -> 365 ms; 257 43 -> 15 ms; 129, batch 1 4.5 ms either way, batch 4
    46 -> 23 ms; 65 1.6 against 2.3 ms.

    Example:
    >>> reduces_rows_in_blocks((641, 641, 128))  # True on JAX on CPU
    """
    return _runs_jax_on_cpu() and math.prod(shape) >= _ROW_LOOP_MIN_VALUES


_ROW_LOOP_MIN_VALUES = 2**21


def map_row_blocks(function, num_rows, values_per_row):
    """`function(rows)` over every row: `function` maps int32 row indices
    `[k]` to a tuple of `[B, k, ...]` tensors; the tuple of `[B, num_rows,
    ...]` tensors that `function(arange(num_rows))` would give.

    JAX only (where `reduces_rows_in_blocks`): a loop over blocks of rows
    holding about `_ROW_BLOCK_VALUES` of the `values_per_row` (per image,
    static: the batch may be symbolic, as in `export`) each row's computation
    goes through, then the rows after the last whole block.

    Example:
    >>> top, = map_row_blocks(lambda rows: (max_over_slots(rows),), 641, 641 * 128)
    """
    import jax

    block = max(1, min(num_rows, _ROW_BLOCK_VALUES // values_per_row))
    blocks = num_rows // block

    def rows(start, count):
        return function(start + jax.numpy.arange(count, dtype="int32"))

    def write(outputs, values, start):
        return tuple(
            jax.lax.dynamic_update_slice_in_dim(output, value, start, axis=1)
            for output, value in zip(outputs, values)
        )

    shapes = jax.eval_shape(lambda: rows(0, block))
    outputs = tuple(
        jax.numpy.zeros((shape.shape[0], num_rows, *shape.shape[2:]), shape.dtype)
        for shape in shapes
    )
    outputs = jax.lax.fori_loop(
        0, blocks, lambda i, outputs: write(outputs, rows(i * block, block), i * block), outputs
    )
    if blocks * block < num_rows:
        tail = blocks * block
        outputs = write(outputs, rows(tail, num_rows - tail), tail)
    return outputs


_ROW_BLOCK_VALUES = 2**19


def _jax_platform():
    import jax

    return jax.default_backend()


def jax_compiler_options():
    """The XLA options `BatchPredictor` compiles with on JAX: on CPU, XLA's
    YNNPACK fusions off (`xla_cpu_experimental_ynn_fusion_type`) where the
    installed jaxlib has them; otherwise none.

    jax 0.10.2 fuses products with their neighbours through YNNPACK by
    default, which slows this model on CPU: MaX-DeepLab-S's network at 641 on
    2 cores took 1.54 s with them and 1.12 s without (jax 0.7.1, which has no
    such fusions: 1.01-1.12 s); a 641 training step 7.32 s against 6.47 s (set
    `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=` for Keras' own
    compiled steps). An option this jaxlib does not know is left out: XLA
    refuses the whole compilation over it.

    Example:
    >>> jax.jit(f, compiler_options=jax_compiler_options())
    """
    if not _runs_jax_on_cpu():
        return {}
    global _JAX_CPU_OPTIONS_FOUND
    if _JAX_CPU_OPTIONS_FOUND is None:
        _JAX_CPU_OPTIONS_FOUND = {
            name: value
            for name, value in _JAX_CPU_WANTED_OPTIONS.items()
            if _jax_knows_compiler_option(name, value)
        }
    return dict(_JAX_CPU_OPTIONS_FOUND)


# The options `jax_compiler_options` sets on CPU where the jaxlib knows them
# (an empty list of fusion types: no YNNPACK fusions), and those it found.
_JAX_CPU_WANTED_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
_JAX_CPU_OPTIONS_FOUND = None


def _jax_knows_compiler_option(name, value):
    import jax

    try:
        jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(np.float32(0)).compile()
    except Exception as error:
        # jaxlib's error type for it has changed names (XlaRuntimeError,
        # JaxRuntimeError); its message has not.
        if "No such compile option" in str(error):
            return False
        raise
    return True


# The formats of `keras.Model.export` each backend can write, and the Python
# module each needs besides the backend (Keras' exporter for it).
_EXPORT_FORMATS = {
    "tensorflow": {
        "tf_saved_model": "tensorflow",
        "onnx": "tf2onnx",
        "openvino": "openvino",
        "litert": "tensorflow",
    },
    # No "openvino" on JAX: Keras converts through jax2tf without XLA, which
    # cannot convert the backbone's axial-attention gathers.
    "jax": {"tf_saved_model": "tensorflow", "onnx": "jax2onnx"},
    # No "openvino": Keras' OpenVINO route on PyTorch is a TorchScript trace,
    # which fixes the batch size and cannot trace a dict of outputs.
    "torch": {
        "tf_saved_model": "torch_xla",
        "onnx": "onnxscript",
        "litert": "litert_torch",
        "torch": "torch",
    },
}


def export_formats(installed=True):
    """The `keras.Model.export` formats the current backend can write, in
    Keras' order; with `installed`, only those whose exporter is importable.

    Example:
    >>> export_formats()  # TensorFlow with tf2onnx: ('tf_saved_model', 'onnx', 'litert')
    """
    needs = _EXPORT_FORMATS.get(keras.backend.backend(), {})
    return tuple(
        name
        for name, module in needs.items()
        if not installed or importlib.util.find_spec(module) is not None
    )


def check_export_format(format, formats):
    """Raises a ValueError unless this backend can export `format` (one of
    `formats`) with the packages installed, saying what to do instead."""
    if format not in formats:
        raise ValueError(f"Unknown export format {format!r}; expected one of {formats}.")
    backend = keras.backend.backend()
    module = _EXPORT_FORMATS.get(backend, {}).get(format)
    if module is None:
        able = [name for name, needs in _EXPORT_FORMATS.items() if format in needs]
        reason = _EXPORT_REFUSALS.get((backend, format), "")
        raise ValueError(
            f"Keras cannot export format {format!r} on the {backend} backend{reason} (it exports "
            f"{', '.join(export_formats(installed=False))}); run with KERAS_BACKEND set to "
            f"one of {', '.join(able)}: the same weights give the same artifact."
        )
    if importlib.util.find_spec(module) is None:
        package = _PIP_NAMES.get(module, module)
        raise ValueError(
            f"Exporting {format!r} on the {backend} backend needs the {module!r} module: "
            f"pip install {package}{_PIP_NOTES.get(module, '')}."
        )


# Why a format Keras offers for a backend is not in `_EXPORT_FORMATS` there.
_EXPORT_REFUSALS = {
    ("jax", "openvino"): ": its OpenVINO route converts through jax2tf without XLA, which cannot "
    "convert the backbone's axial-attention gathers",
    ("torch", "openvino"): " with the post-processor inside: its OpenVINO route is a "
    "TorchScript trace, which fixes the batch size and cannot trace the serving model's dict "
    "of outputs",
}
_PIP_NAMES = {"litert_torch": "litert-torch"}
_PIP_NOTES = {
    "torch_xla": " built for the installed PyTorch (Keras converts through StableHLO; or export "
    "the SavedModel with KERAS_BACKEND=tensorflow or jax: the same weights give the same artifact)",
    "jax2onnx": " (it requires a JAX newer than 0.7.1; or export ONNX with "
    "KERAS_BACKEND=tensorflow or torch: the same weights give the same artifact)"
}


def export_model(model, path, format, verbose=False):
    """`model.export(path, format)` for a one-input model, with the input's
    batch size left variable in every format.

    Keras' exporters do so except on PyTorch, where `torch.export` needs the
    batch marked dynamic and Keras' ONNX route for a dynamic batch (the
    TorchScript exporter) fails on Keras' constants: there the dynamo ONNX
    exporter is called with the batch marked.

    Args:
        model: a functional Keras model with one input named as the
            artifact's input; its outputs a dict.
        path: the file or folder to write.
        format: a `keras.Model.export` format this backend can write.
    """
    (spec,) = model.inputs
    name = spec.name
    signature = [keras.InputSpec(shape=spec.shape, dtype=spec.dtype, name=name)]
    backend = keras.backend.backend()
    if backend == "torch" and format in ("torch", "onnx"):
        import torch

        # A batch of 2 to trace with: PyTorch fixes a dimension of size 1.
        batch = torch.export.Dim("batch", min=1, max=4096)
        with _torch_device_as_object():
            if format == "torch":
                return keras.Model.export(
                    model, path, format=format, verbose=verbose, dynamic_shapes={0: batch}
                )
            sample = keras.ops.zeros((2, *spec.shape[1:]), spec.dtype)
            model.eval()
            program = torch.onnx.export(
                model,
                (sample,),
                dynamo=True,
                input_names=[name],
                # The outputs in the order the traced dict has them.
                output_names=list(model(sample)),
                dynamic_shapes=(({0: batch},),),
                verbose=bool(verbose),
            )
        program.save(path)
        return None
    options = {}
    if backend == "jax" and format == "tf_saved_model":
        # The artifact serves inference (its pipeline ends in argmaxes): without
        # jax2tf's custom gradients, `tf.saved_model.save` no longer traces a
        # gradient function for each converted function, which took most of
        # the export's time.
        options["jax2tf_kwargs"] = {"with_gradient": False}
    with _no_default_save_signatures(model):
        return keras.Model.export(
            model, path, format=format, verbose=verbose, input_signature=signature, **options
        )


# PyTorch's `BatchPredictor` traces a batch shape once its eager calls at that
# shape have taken this long: about what tracing MaX-DeepLab-S's panoptic
# pipeline takes on a 2-core CPU (8.7 s), so a run never spends more than
# twice what the better choice, known in advance, would have cost.
TORCH_EXPORT_AFTER_SECONDS = 10.0


class BatchPredictor:
    """`model.predict_on_batch(batch)`, compiled on every backend.

    TensorFlow compiles `predict_on_batch` on its first call at a batch
    shape. On JAX the model's `stateless_call` is compiled instead (per batch
    shape, as `jax.jit` does, with `jax_compiler_options`) and called with
    its variables' current values:
    Keras' JAX `predict_on_batch` collects the variables from the layers and
    assigns every one back after each call: MaX-DeepLab-S's pipeline (856
    variables) at 129 took 0.114 s a call that way, 0.106 s this way. Under
    a Keras distribution it is `predict_on_batch`, which lays the batch out
    over the devices. On PyTorch Keras runs eagerly, op by op through every
    layer's Python: there, once the eager calls at a batch shape have taken
    `TORCH_EXPORT_AFTER_SECONDS`, the model is traced at that shape with
    `torch.export` and later calls run the traced program. MaX-DeepLab-S's
    `predict_panoptic` pipeline (network + post-processor) at 129: 0.18 s a
    call instead of 0.28 s; at 641: 2.28 s instead of 2.55 s; the same maps
    bit for bit; each trace 8.7 s. The program holds the model's own
    parameters, so weights assigned or trained later are used; if a parameter
    is replaced by another tensor, the next call traces again.

    Args:
        model: a Keras model of one input, called with `training=False`.

    Example:
    >>> predict = BatchPredictor(pipeline)
    >>> maps = predict(images)  # a dict of NumPy arrays, as `predict_on_batch`
    """

    def __init__(self, model):
        self.model = model
        self._eager_seconds = {}
        self._programs = {}
        self._jax_call = None

    def __call__(self, batch):
        backend = keras.backend.backend()
        if backend == "jax" and keras.distribution.distribution() is None:
            return self._call_jax(batch)
        if backend != "torch":
            return self.model.predict_on_batch(batch)
        import torch

        batch = keras.ops.convert_to_tensor(batch)
        key = (tuple(batch.shape), batch.dtype)
        program, traced_tensors = self._programs.get(key, (None, None))
        if program is not None and traced_tensors != self._variable_tensors():
            program = None
        if program is None:
            spent = self._eager_seconds.get(key, 0.0)
            if spent < TORCH_EXPORT_AFTER_SECONDS:
                start = time.perf_counter()
                outputs = self.model.predict_on_batch(batch)
                self._eager_seconds[key] = spent + time.perf_counter() - start
                return outputs
            with _torch_device_as_object(), torch.no_grad():
                exported = torch.export.export(
                    self.model, (batch,), kwargs={"training": False}, strict=False
                )
            program = exported.module()
            self._programs[key] = (program, self._variable_tensors())
        with torch.no_grad():
            outputs = program(batch, training=False)
        return keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)

    def _call_jax(self, batch):
        model = self.model
        if self._jax_call is None:
            import jax

            def outputs(trainable_values, non_trainable_values, batch):
                return model.stateless_call(
                    trainable_values, non_trainable_values, batch, training=False
                )[0]

            self._jax_call = jax.jit(outputs, compiler_options=jax_compiler_options())
            self._jax_weights = model.weights
            self._jax_split = None
        # `stateless_call` takes the values in the order of the model's
        # (non-)trainable variables, which freezing a layer changes.
        split = tuple(v.trainable for v in self._jax_weights)
        if split != self._jax_split:
            self._jax_split = split
            self._jax_variables = (model.trainable_variables, model.non_trainable_variables)
        trainable, non_trainable = self._jax_variables
        outputs = self._jax_call(
            [v.value for v in trainable],
            [v.value for v in non_trainable],
            keras.ops.convert_to_tensor(batch),
        )
        return keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)

    def _variable_tensors(self):
        # The tensors the model's variables hold now: a trace computes with
        # those it was traced with.
        return [id(v.value) for v in self.model.weights]

    @property
    def traced_shapes(self):
        """The batch shapes whose calls run a traced program (PyTorch)."""
        return sorted(shape for shape, _ in self._programs)


@contextlib.contextmanager
def _torch_device_as_object():
    """Keras' PyTorch device, while a graph is traced, as a `torch.device`
    rather than its default string.

    Keras' `convert_to_tensor` moves a tensor whose `device` differs from
    Keras' device, and PyTorch's `torch.device("cpu") != "cpu"` holds: every
    op's inputs got a `.to(device)`, a no-op when run eagerly that a trace
    keeps. The tiny model's `.pt2` held 1,418 of these (with 1,494 metadata
    checks) in its 5,834 nodes; with a `torch.device` none, 2,998 nodes in
    all, its export 15 s instead of 21 s. The device stays the one Keras
    would use.
    """
    from keras.src.backend.common import global_state
    from keras.src.backend.torch.core import get_device
    import torch

    previous = global_state.get_global_attribute("torch_device", None)
    global_state.set_global_attribute("torch_device", torch.device(get_device()))
    try:
        yield
    finally:
        global_state.set_global_attribute("torch_device", previous)


@contextlib.contextmanager
def _no_default_save_signatures(model):
    """On TensorFlow, hides Keras' `_default_save_signature` of `model` and its
    nested models while they export.

    Keras' SavedModel archive (behind the SavedModel, LiteRT, ONNX and
    OpenVINO formats) walks the tracked model for lookup tables, and on the way
    TensorFlow traces every `tf.function` attribute it finds: each Keras
    model's default signature, a fresh trace of that whole model. The archive
    writes the endpoints' own signatures, so these traces are thrown away:
    without them the tiny model's SavedModel export took 12.9 s instead of
    20.5 s, its LiteRT export 25.0 s instead of 36.1 s.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    classes = set()
    pending = [model]
    while pending:
        layer = pending.pop()
        if isinstance(layer, keras.Model):
            classes.add(type(layer))
            pending.extend(layer.layers)
    # Shadowing the property on each class (instances cannot override it).
    shadowed = [c for c in classes if "_default_save_signature" not in vars(c)]
    for cls in shadowed:
        cls._default_save_signature = None
    try:
        yield
    finally:
        for cls in shadowed:
            del cls._default_save_signature
