"""Shared test helpers: reference data paths and keras-hub-style checks."""

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

import keras

from keras_maxdeeplab import MAX_DEEPLAB_CONFIGS
from keras_maxdeeplab import MAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
# deeplab2's reduced MaX-DeepLab of ../shared/reference/max_deeplab_tiny.
TINY_BACKBONE = MAX_DEEPLAB_CONFIGS["max_deeplab_tiny"]
TINY_HEADS = MAX_DEEPLAB_HEAD_CONFIGS["max_deeplab_tiny"]


def shared_path(*parts):
    """A path under ../shared, or skip the test with the reason."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"reference data {path} is absent (it lives beside the repo in ../shared)")
    return path


# For tests of training behaviour rather than of deeplab2's numbers: the tiny
# architecture with one block per stage (every layer type still there), which
# compiles its training step in about two thirds of the time.
ONE_BLOCK_PER_STAGE = {"num_blocks": (2, 2, 2, 2)}  # halved by the tiny's layer multiplier
# kMaX-DeepLab's twin: one block per encoder stage, per pixel decoder stage and
# per transformer decoder stage (3 auxiliary predictions instead of 6).
KMAX_ONE_BLOCK_PER_STAGE = {
    **ONE_BLOCK_PER_STAGE,
    "pixel_decoder_num_blocks": (1, 1, 1, 1),
    "transformer_num_blocks": (1, 1, 1),
}


@contextlib.contextmanager
def values_not_drawn():
    """Variables created inside keep their shapes but draw no random values:
    for checks of full-size models' parameter counts, names and output shapes
    (MaX-DeepLab-L's 450M values took 45 s on JAX and 24 s on PyTorch).

    On JAX and TensorFlow the variables stay uninitialised (a
    `keras.StatelessScope` that does not initialise them when it ends).
    PyTorch registers every variable as a `torch.nn.Parameter`, which needs a
    tensor: there they live on PyTorch's "meta" device, tensors with a shape
    and no storage. Build the backbone inside and the task outside (its
    `compile` makes the optimizer's variables, which need values)."""
    if keras.backend.backend() == "torch":
        with keras.device("meta"):
            yield
        return
    with keras.StatelessScope(initialize_variables=False):
        yield
    # Keras would initialise the deferred variables when the next stateless
    # scope ends (the heads' symbolic build); clearing the session forgets them.
    keras.utils.clear_session()


def shapes_only_backbone(config_name, image_shape):
    """A full-size `MaXDeepLabBackbone` built under `values_not_drawn()`."""
    from keras_maxdeeplab import MaXDeepLabBackbone

    with values_not_drawn():
        return MaXDeepLabBackbone(image_shape=image_shape, **MAX_DEEPLAB_CONFIGS[config_name])


def tiny_model(size=65, **overrides):
    """deeplab2's reduced MaX-DeepLab, taking inputs already normalised (no
    preprocessor); `overrides` change its config (e.g. `**ONE_BLOCK_PER_STAGE`)."""
    return build_model("max_deeplab_tiny", size, {"preprocessor": None, **overrides})


def save_one_block_preset(folder):
    """Saves a tiny MaX-DeepLab preset (COCO's classes, 65x65 inputs, one block
    per stage) to `folder`: what the CLI training tests fine-tune with
    `--preset`, as the README trains."""
    build_model("max_deeplab_tiny", 65, ONE_BLOCK_PER_STAGE).save_to_preset(folder)


def to_numpy(tree):
    return keras.tree.map_structure(keras.ops.convert_to_numpy, tree)


def relative_error(actual, reference):
    """max |actual - reference| / max |reference|."""
    return float(np.max(np.abs(actual - reference)) / np.max(np.abs(reference)))


def run_layer_test(layer, inputs, call_kwargs=None, atol=1e-6):
    """keras-hub-style layer check: config round trip gives the same outputs,
    and eager equals compiled (`keras.Model.predict`) execution.

    `inputs` is a single array or a list of positional arguments (arrays or
    lists of arrays).
    """
    call_kwargs = call_kwargs or {}
    args = inputs if isinstance(inputs, list) else [inputs]
    expected = to_numpy(layer(*args, **call_kwargs))

    clone = layer.__class__.from_config(layer.get_config())
    clone(*args, **call_kwargs)
    assert len(clone.weights) == len(layer.weights)
    for source, target in zip(layer.weights, clone.weights):
        assert source.path.split("/", 1)[-1] == target.path.split("/", 1)[-1]
        target.assign(source)
    for got, want in zip(
        keras.tree.flatten(to_numpy(clone(*args, **call_kwargs))), keras.tree.flatten(expected)
    ):
        np.testing.assert_allclose(got, want, atol=atol)
    assert clone.get_config() == layer.get_config()

    symbolic = keras.tree.map_structure(
        lambda a: keras.Input(batch_shape=a.shape, dtype=a.dtype), args
    )
    model = keras.Model(keras.tree.flatten(symbolic), layer(*symbolic, **call_kwargs))
    flat = keras.tree.flatten(args)
    compiled = model.predict(flat if len(flat) > 1 else flat[0], verbose=0)
    for got, want in zip(keras.tree.flatten(to_numpy(compiled)), keras.tree.flatten(expected)):
        np.testing.assert_allclose(got, want, atol=atol * 10, rtol=1e-5)
    return expected


def _outputs_close(got, want, atol):
    got, want = to_numpy(got), to_numpy(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=atol, rtol=1e-4, err_msg=key)


def run_backbone_test(backbone, images):
    """Backbone checks: config round trip, eager == compiled, mixed precision."""
    expected = backbone(images)
    clone = backbone.__class__.from_config(backbone.get_config())
    assert clone.get_config() == backbone.get_config()
    for source, target in zip(backbone.weights, clone.weights):
        assert source.path == target.path
        target.assign(source)
    _outputs_close(clone(images), expected, 1e-5)
    _outputs_close(backbone.predict(images, verbose=0), expected, 1e-4)
    mixed = backbone.__class__.from_config(dict(backbone.get_config(), dtype="mixed_bfloat16"))
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in mixed.weights)
    outputs = mixed(images)
    for key, value in outputs.items():
        assert keras.backend.standardize_dtype(value.dtype) == "bfloat16", key


def run_task_test(model, images, tmp_path):
    """Task checks: `.keras` save/load and config round trips give the same
    outputs; eager == compiled predict; mixed precision keeps float32 weights,
    computes in bfloat16 and stays close to float32."""
    import os

    expected = model(images)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, model.__class__)
    _outputs_close(restored(images), expected, 1e-6)

    clone = model.__class__.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert [v.path for v in clone.weights] == [v.path for v in model.weights]

    _outputs_close(model.predict(images, verbose=0), expected, 1e-4)

    config = model.get_config()
    backbone = model.backbone.__class__.from_config(
        dict(model.backbone.get_config(), dtype="mixed_bfloat16")
    )
    heads = {k: v for k, v in config.items() if k not in ("backbone", "preprocessor", "name")}
    mixed = model.__class__(backbone, **heads)
    for source, target in zip(model.weights, mixed.weights):
        target.assign(source)
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in mixed.weights)
    outputs = mixed(images)
    for key, value in outputs.items():
        assert keras.backend.standardize_dtype(value.dtype) == "bfloat16", key
    reference = to_numpy(expected)["transformer_class_logits"]
    got = to_numpy(keras.ops.cast(outputs["transformer_class_logits"], "float32"))
    np.testing.assert_allclose(got, reference, atol=0.1)


def python_child(code, *args, env=None):
    """Starts `python -c code args...` in the repository, with the package importable;
    stdout and stderr are pipes (text)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_python(code, *args, env=None, timeout=300):
    """Runs `python -c code args...` like `python_child`; returns
    `(returncode, stdout, stderr)`. The timeout turns a hang into a failure."""
    child = python_child(code, *args, env=env)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        raise
    return child.returncode, out, err
