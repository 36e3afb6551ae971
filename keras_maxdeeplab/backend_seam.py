"""The one place that branches on the Keras backend.

`host_call` runs a NumPy function on the host from inside a compiled step
(`jax.pure_callback`, `tf.numpy_function`, a plain call on PyTorch). XLA cannot
compile a host call on TensorFlow, so `host_calls_supported` says when callers
must use a pure `keras.ops` path instead.
"""

import importlib.util

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


def host_call(fn, inputs, output_shape, output_dtype):
    """Calls `fn(*numpy_arrays) -> numpy array` on the host; the result has no gradient.

    Args:
        fn: a NumPy function.
        inputs: list of tensors.
        output_shape: static shape of the result (the batch axis may be the
            inputs' dynamic batch size: pass `None` there).
        output_dtype: dtype string of the result.

    Example:
    >>> permutation = host_call(solve, [cost], cost.shape, "float32")
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

        shape = tuple(inputs[0].shape[0] if d is None else d for d in output_shape)
        return jax.pure_callback(
            lambda *a: np.asarray(fn(*a), dtype=output_dtype),
            jax.ShapeDtypeStruct(shape, output_dtype),
            *inputs,
        )
    if backend == "tensorflow":
        import tensorflow as tf

        result = tf.numpy_function(
            lambda *a: np.asarray(fn(*a), dtype=output_dtype), inputs, output_dtype
        )
        result.set_shape(output_shape)
        return result
    raise ValueError(f"Unsupported Keras backend {backend!r}; expected jax, tensorflow or torch.")


# The formats of `keras.Model.export` each backend can write, and the Python
# module each needs besides the backend (None: nothing more).
_EXPORT_FORMATS = {
    "tensorflow": {
        "tf_saved_model": None,
        "onnx": "tf2onnx",
        "openvino": "openvino",
        "litert": None,
    },
    "jax": {"tf_saved_model": "tensorflow", "onnx": "jax2onnx", "openvino": "openvino"},
    "torch": {
        "tf_saved_model": "tensorflow",
        "onnx": "onnxscript",
        "openvino": "openvino",
        "litert": "litert_torch",
        "torch": None,
    },
}


def export_formats():
    """The `keras.Model.export` formats the current backend can write with
    the packages installed, in Keras' order.

    Example:
    >>> export_formats()  # TensorFlow with tf2onnx: ('tf_saved_model', 'onnx', 'litert')
    """
    needs = _EXPORT_FORMATS.get(keras.backend.backend(), {})
    return tuple(
        name
        for name, module in needs.items()
        if module is None or importlib.util.find_spec(module) is not None
    )
