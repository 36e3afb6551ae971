"""Converts deeplab2 MaX-DeepLab and kMaX-DeepLab TensorFlow checkpoints into our models.

deeplab2 checkpoints are keyed by Python attribute paths (e.g.
`encoder/_stage4/_block2/_attention/_height_axis/qkv_kernel`). Our layers carry
the same names without the leading underscores, so a key maps to a Keras
variable path by a few fixed rules (`deeplab2_key_to_path`). The accounting is
strict: every checkpoint variable must find exactly one weight of the same
shape and every weight must be assigned, else nothing is assigned and a
`ValueError` lists the offenders. Optimizer slots and counters are skipped by
rule. Layouts need no transposes (TF HWIO convs, `[1, in, out]` Conv1D kernels,
multi-axis BN parameters in broadcast shape are kept as they are).
"""

import contextlib
import functools
import os

import numpy as np

_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"

# Checkpoint roots of deeplab2's `DeepLab.checkpoint_items` -> our layer paths.
_ROOTS = {
    "encoder": "",
    "semantic_decoder": "semantic_decoder",
    "semantic_head_without_last_layer": "semantic_head/conv_block",
    "semantic_last_layer": "semantic_head/final_conv",
    "pixel_space_head": "pixel_space_head",
    "transformer_mask_head": "transformer_mask_head",
    "transformer_class_head": "transformer_class_head",
    "pixel_space_feature_batch_norm": "pixel_space_feature_batch_norm",
    "pixel_space_mask_batch_norm": "pixel_space_mask_logits/batch_norm",
}
# Roots that are not model weights: training state.
_IGNORED_ROOTS = ("optimizer", "backbone_optimizer", "global_step", "save_counter")
# Leaves named differently by tf.keras and Keras 3.
_LEAVES = {"depthwise_kernel": "kernel"}


def is_model_variable(key):
    """False for optimizer slots, step counters and the object graph."""
    if key == "_CHECKPOINTABLE_OBJECT_GRAPH" or ".OPTIMIZER_SLOT" in key:
        return False
    return key.split("/")[0] not in _IGNORED_ROOTS


def deeplab2_key_to_path(key):
    """Maps a deeplab2 checkpoint key to our Keras variable path.

    Returns None for a key under a root that deeplab2's MaX-DeepLab does not
    have (the caller reports it).

    Example:
    >>> deeplab2_key_to_path(
    ...     "encoder/_stage4/_block2/_attention/_height_axis/qkv_kernel/.ATTRIBUTES/VARIABLE_VALUE")
    'stage4/block2/attention/height_axis/qkv_kernel'
    """
    if key.endswith(_SUFFIX):
        key = key[: -len(_SUFFIX)]
    root, _, rest = key.partition("/")
    if root not in _ROOTS:
        return None
    parts = [part[1:] if part.startswith("_") else part for part in rest.split("/")]
    parts[-1] = _LEAVES.get(parts[-1], parts[-1])
    if root == "encoder" and parts == ["memory_feature"]:
        parts = ["memory_feature", "memory_feature"]
    prefix = _ROOTS[root]
    return "/".join([prefix] + parts if prefix else parts)


# kMaX-DeepLab's checkpoint roots -> our layer paths (the encoder keeps its names).
_KMAX_ROOTS = {
    "encoder": "",
    "pixel_decoder": "pixel_decoder",
    "transformer_decoder": "",
    "semantic_decoder": "semantic_decoder",
    "semantic_head_without_last_layer": "semantic_head/conv_block",
    "semantic_last_layer": "semantic_head/final_conv",
    "pixel_space_head": "predictor/pixel_space_head",
    "transformer_mask_head": "predictor/transformer_mask_head",
    "transformer_class_head": "predictor/transformer_class_head",
    "pixel_space_feature_batch_norm": "predictor/pixel_space_feature_batch_norm",
    "pixel_space_mask_batch_norm": "predictor/pixel_space_mask_logits/batch_norm",
}
# deeplab2 keeps the pixel decoder's and transformer decoder's parts in Python
# lists (numeric path components); our layers are named per index.
_KMAX_LISTS = {
    "backbone_norms": "backbone_norm{}",
    "stages": "stage{}",
    "skip_connections": "skip_connection{}",
}


def _convnext_parts(parts):
    """deeplab2's ConvNeXt keeps its layers in lists of `Sequential`s
    (`downsample_layers/1/layer_with_weights-0/...`); ours are named layers."""
    group, index, layer = parts[0], int(parts[1]), parts[2]
    if not layer.startswith("layer_with_weights-"):
        return None
    position = int(layer.rpartition("-")[2])
    if group == "stages":
        return [f"convnext_block_{index}_{position}"] + parts[3:]
    # The stem is conv then norm; the transitions norm then conv.
    order = ("conv", "norm") if index == 0 else ("norm", "conv")
    if position >= len(order):
        return None
    name = "stem" if index == 0 else f"downsampling_block_{index - 1}"
    return [name, order[position]] + parts[3:]


def kmax_key_to_path(key, block_names):
    """Maps a deeplab2 kMaX-DeepLab checkpoint key to our Keras variable path.

    Args:
        key: a checkpoint key.
        block_names: our k-means block layer names in deeplab2's
            `_kmax_decoder` list order.

    Returns None for a key under a root kMaX-DeepLab does not have.

    Example:
    >>> kmax_key_to_path(
    ...     "transformer_decoder/_kmax_decoder/3/_block1_transformer/_pixel_v_conv_bn/_conv/kernel",
    ...     names)
    'kmax_transformer_decoder_os16_1/pixel_v_conv_bn/conv/kernel'
    """
    if key.endswith(_SUFFIX):
        key = key[: -len(_SUFFIX)]
    root, _, rest = key.partition("/")
    if root not in _KMAX_ROOTS:
        return None
    parts = [part[1:] if part.startswith("_") else part for part in rest.split("/")]
    parts[-1] = _LEAVES.get(parts[-1], parts[-1])
    if root == "encoder" and parts[0] in ("downsample_layers", "stages") and len(parts) > 3:
        parts = _convnext_parts(parts)
        if parts is None:
            return None
    if root == "pixel_decoder" and parts[0] in _KMAX_LISTS:
        parts = [_KMAX_LISTS[parts[0]].format(parts[1])] + parts[2:]
    if root == "transformer_decoder":
        if parts == ["cluster_centers"]:
            parts = ["cluster_centers", "memory_feature"]
        elif parts[0] == "kmax_decoder":
            index = int(parts[1])
            if index >= len(block_names) or parts[2] != "block1_transformer":
                return None
            parts = [block_names[index]] + parts[3:]
    # The predictors' scalar mask BN sits in our `MaskLogits` layer.
    parts = [
        "pixel_space_mask_logits/batch_norm" if part == "pixel_space_mask_batch_norm" else part
        for part in parts
    ]
    prefix = _KMAX_ROOTS[root]
    return "/".join([prefix] + parts if prefix else parts)


def open_checkpoint(path):
    """TensorFlow's reader of a checkpoint and the shapes of its model variables.

    Nothing is read but the index: values are read one at a time with
    `reader.get_tensor(key)`, so converting needs about the model's memory,
    not the checkpoint's (deeplab2's training checkpoints also hold two Adam
    slots per weight).

    Args:
        path: a checkpoint prefix (`.../ckpt-0`) or a folder holding one.

    Returns:
        `(reader, {deeplab2 key: shape tuple})`, optimizer slots and counters
        left out.

    Raises:
        ValueError: if nothing readable is there, naming the path.
    """
    import tensorflow as tf  # Only conversion needs TensorFlow's reader.

    prefix = path
    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            index = sorted(f for f in os.listdir(path) if f.endswith(".index"))
            if len(index) != 1:
                raise ValueError(
                    f"No TensorFlow checkpoint found in {path!r}: expected a 'checkpoint' "
                    f"file or exactly one '*.index' file, found {index or 'none'}."
                )
            prefix = os.path.join(path, index[0][: -len(".index")])
    with _reading_checkpoint(prefix):
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
    shapes = {key: tuple(shape) for key, shape in sorted(shapes.items()) if is_model_variable(key)}
    return _CheckpointReader(reader, prefix), shapes


class _CheckpointReader:
    """`get_tensor` of TF's reader, with read errors reported as ValueError."""

    def __init__(self, reader, prefix):
        self._reader = reader
        self.prefix = prefix

    def get_tensor(self, key):
        with _reading_checkpoint(self.prefix):
            return self._reader.get_tensor(key)


@contextlib.contextmanager
def _reading_checkpoint(prefix):
    import tensorflow as tf

    try:
        yield
    # TF's reader raises OpError, ValueError, or IndexError on a short read.
    except (tf.errors.OpError, ValueError, IndexError) as error:
        raise ValueError(
            f"Cannot read a TensorFlow checkpoint at {prefix!r} (missing, truncated or "
            f"not a checkpoint): {error}"
        ) from error


def read_checkpoint(path):
    """Reads every model variable of a TF checkpoint into `{key: ndarray}`.

    Args:
        path: a checkpoint prefix (`.../ckpt-0`) or a folder holding one.

    Raises:
        ValueError: if nothing readable is there, naming the path.
    """
    reader, shapes = open_checkpoint(path)
    return {key: reader.get_tensor(key) for key in shapes}


def match_checkpoint(
    model,
    shapes,
    allow_unused_prefixes=(),
    key_to_path=deeplab2_key_to_path,
    model_name="MaX-DeepLab",
):
    """Pairs checkpoint variables with model variables; raises on any mismatch.

    Args:
        model: a `MaXDeepLab` or `MaXDeepLabBackbone` (or a `KMaXDeepLab`
            with `key_to_path` of `load_kmax_checkpoint`).
        shapes: `{deeplab2 key: shape tuple}`, as `open_checkpoint` returns.
        allow_unused_prefixes: our variable path prefixes that may be absent
            from the checkpoint (e.g. heads when loading a backbone
            checkpoint); they keep their initial values.
        key_to_path: maps a checkpoint key to our variable path (or None).
        model_name: the architecture named in the error message.

    Returns:
        A list of `(variable, deeplab2 key)` pairs covering every model
        variable (but the allowed unused ones).

    Raises:
        ValueError: checkpoint variables without a home, shape mismatches or
            model weights missing from the checkpoint, counted and named.
    """
    variables = {}
    for variable in model.weights:
        if variable.path in variables:
            raise ValueError(f"Two model variables share the path {variable.path!r}.")
        variables[variable.path] = variable
    pairs, unmapped, mismatched, assigned = [], [], [], set()
    for key, shape in shapes.items():
        path = key_to_path(key)
        variable = variables.get(path)
        if variable is None:
            unmapped.append(key)
            continue
        if tuple(variable.shape) != tuple(shape):
            mismatched.append(f"{key} {tuple(shape)} -> {path} {tuple(variable.shape)}")
            continue
        pairs.append((variable, key))
        assigned.add(path)
    missing = [
        path
        for path in variables
        if path not in assigned and not path.startswith(tuple(allow_unused_prefixes))
    ]
    problems = [
        _problem(unmapped, "checkpoint variables map to no model weight"),
        _problem(mismatched, "shape mismatches"),
        _problem(missing, "model weights are not in the checkpoint"),
    ]
    problems = [problem for problem in problems if problem]
    if problems:
        raise ValueError(
            f"The checkpoint does not match this {model_name} architecture (is it a {model_name} "
            "checkpoint of this configuration?). " + "; ".join(problems)
        )
    return pairs


def _problem(names, what, shown=10):
    if not names:
        return None
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} {what}: {names[:shown]}{more}"


def assign_from_checkpoint(reader, pairs, transforms=None):
    """Assigns each `(variable, key)` pair its checkpoint value, all or nothing.

    Values are streamed one variable at a time, twice: a first pass reads
    (and so checksums) every value without keeping it, so that a truncated or
    corrupt data file fails before any variable changes; the second assigns.
    Peak memory stays one variable above the model's. `transforms` maps a
    key to a function applied to its value before assignment.
    """
    transforms = transforms or {}
    for _, key in pairs:
        reader.get_tensor(key)
    for variable, key in pairs:
        value = reader.get_tensor(key)
        if key in transforms:
            value = transforms[key](value)
        variable.assign(np.asarray(value, dtype=variable.dtype))


# The void channel given to a semantic head that deeplab2 trained without one:
# a logit no softmax gives weight to, as if the channel were absent.
VOID_CHANNEL_LOGIT = -1e4


def _with_void_channel(value, is_bias):
    """deeplab2's semantic head of a dataset whose void label is not a class
    channel (Cityscapes: 19 classes, void 255) with our void channel 0 in
    front: a zero kernel column and a `VOID_CHANNEL_LOGIT` bias."""
    pad = [(0, 0)] * (value.ndim - 1) + [(1, 0)]
    return np.pad(value, pad, constant_values=VOID_CHANNEL_LOGIT if is_bias else 0.0)


def void_channel_transforms(model, shapes):
    """`({key: transform}, shapes)`: for the semantic head's last layer when
    the checkpoint's has one channel fewer than the model's (deeplab2's
    Cityscapes models), the transforms adding our void channel 0 and the
    checkpoint `shapes` with it; else `({}, shapes)`.

    Example:
    >>> transforms, shapes = void_channel_transforms(model, open_checkpoint(path)[1])
    """
    head = getattr(model, "semantic_head", None)
    keys = [k for k in shapes if k.startswith("semantic_last_layer/")]
    if head is None or not keys:
        return {}, shapes
    channels = head.final_conv.kernel.shape[-1]
    if any(shapes[k][-1] != channels - 1 for k in keys):
        return {}, shapes
    transforms = {k: functools.partial(_with_void_channel, is_bias="/bias/" in k) for k in keys}
    shapes = {k: (*v[:-1], v[-1] + 1) if k in transforms else v for k, v in shapes.items()}
    return transforms, shapes


def load_deeplab2_checkpoint(model, path, allow_unused_prefixes=()):
    """Loads a deeplab2 MaX-DeepLab checkpoint into `model`, all or nothing.

    The whole checkpoint is matched against the model before any value is
    read; values are then streamed one variable at a time.

    Example:
    >>> load_deeplab2_checkpoint(model, "max_deeplab_s_os16_res641_400k/ckpt-400000")
    """
    reader, shapes = open_checkpoint(path)
    assign_from_checkpoint(reader, match_checkpoint(model, shapes, allow_unused_prefixes))
    return model


def load_kmax_checkpoint(model, path):
    """Loads a deeplab2 kMaX-DeepLab checkpoint into a `KMaXDeepLab`, all or nothing.

    Strict as `load_deeplab2_checkpoint`: every checkpoint variable must find
    exactly one weight of the same shape and every weight must be set. The
    one exception: a semantic head with one channel fewer than the model's
    (deeplab2's Cityscapes models, whose void label 255 has no channel) gets
    our void channel 0 (`_with_void_channel`).

    Example:
    >>> load_kmax_checkpoint(model, "kmax_meta_r50_os32/ckpt-150000")
    """
    names = [block.name for block in model.transformer_blocks]
    reader, shapes = open_checkpoint(path)
    transforms, shapes = void_channel_transforms(model, shapes)
    pairs = match_checkpoint(
        model,
        shapes,
        key_to_path=lambda key: kmax_key_to_path(key, names),
        model_name="kMaX-DeepLab",
    )
    assign_from_checkpoint(reader, pairs, transforms)
    return model
