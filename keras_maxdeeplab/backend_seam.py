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
# module each needs besides the backend (Keras' exporter for it).
_EXPORT_FORMATS = {
    "tensorflow": {
        "tf_saved_model": "tensorflow",
        "onnx": "tf2onnx",
        "openvino": "openvino",
        "litert": "tensorflow",
    },
    "jax": {"tf_saved_model": "tensorflow", "onnx": "jax2onnx", "openvino": "openvino"},
    "torch": {
        "tf_saved_model": "torch_xla",
        "onnx": "onnxscript",
        "openvino": "openvino",
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
        raise ValueError(
            f"Keras cannot export format {format!r} on the {backend} backend (it exports "
            f"{', '.join(export_formats(installed=False))}); run with KERAS_BACKEND set to "
            f"one of {', '.join(able)}."
        )
    if importlib.util.find_spec(module) is None:
        package = _PIP_NAMES.get(module, module)
        raise ValueError(
            f"Exporting {format!r} on the {backend} backend needs the {module!r} module: "
            f"pip install {package}{_PIP_NOTES.get(module, '')}."
        )


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
    return keras.Model.export(
        model, path, format=format, verbose=verbose, input_signature=signature
    )
