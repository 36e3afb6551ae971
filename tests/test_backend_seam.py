"""The backend seam's array operations: whichever way an engine runs them
(the depthwise convolution as fused shifted products on JAX on CPU, the
convolutions in channels-last memory and large 1x1 products as oneDNN
convolutions on PyTorch), the values are those of the operation by definition;
and PyTorch's traced `BatchPredictor` gives the eager call's maps."""

import json
import os

import numpy as np
import pytest

import keras

from keras_maxdeeplab import backend_seam
from keras_maxdeeplab.backend_seam import conv
from keras_maxdeeplab.backend_seam import count_by_index
from keras_maxdeeplab.backend_seam import depthwise_conv_same
from keras_maxdeeplab.backend_seam import first_argmax
from keras_maxdeeplab.backend_seam import pointwise
from keras_maxdeeplab.conversion.deeplab2 import load_deeplab2_checkpoint
from tests.helpers import shared_path
from tests.helpers import tiny_model
from tests.helpers import to_numpy


def _reference(inputs, kernel):
    """The convolution by definition, in float64 (TensorFlow's "same" padding:
    the odd pixel goes after)."""
    kh, kw = kernel.shape[:2]
    top, left = (kh - 1) // 2, (kw - 1) // 2
    padded = np.pad(inputs.astype("float64"), [(0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)])
    height, width = inputs.shape[1:3]
    out = np.zeros(inputs.shape, "float64")
    for i in range(kh):
        for j in range(kw):
            out += padded[:, i : i + height, j : j + width, :] * kernel[i, j, :, 0]
    return out


@pytest.mark.parametrize("kernel_size", [(5, 5), (3, 3), (4, 2)])
def test_depthwise_conv_same_is_tensorflows_same_convolution(kernel_size):
    rng = np.random.RandomState(0)
    inputs = rng.randn(2, 9, 7, 6).astype("float32")
    kernel = rng.randn(*kernel_size, 6, 1).astype("float32")
    got = to_numpy(depthwise_conv_same(inputs, kernel))
    assert got.shape == inputs.shape
    np.testing.assert_allclose(got, _reference(inputs, kernel), rtol=1e-5, atol=1e-5)



def _gradients(fn, arrays, d_outputs):
    """d(sum(fn(*arrays) * d_outputs)) for every array, by the backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.grad(lambda *a: (fn(*a) * d_outputs).sum(), argnums=tuple(range(len(arrays))))(*arrays)
    if backend == "tensorflow":
        import tensorflow as tf

        arrays = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(arrays)
            loss = tf.reduce_sum(fn(*arrays) * d_outputs)
        return tape.gradient(loss, arrays)
    import torch

    arrays = [torch.tensor(a, requires_grad=True) for a in arrays]
    (fn(*arrays) * torch.tensor(d_outputs)).sum().backward()
    return [a.grad for a in arrays]


@pytest.mark.parametrize("input_shape, kernel_size", [((2, 9, 7, 6), (5, 5)), ((1, 6, 8, 3), (4, 3))])
def test_depthwise_conv_same_gradients_are_the_convolutions_adjoint(input_shape, kernel_size):
    """Input gradient: the output gradient convolved with the flipped kernel;
    kernel gradient: each tap's padded inputs times the output gradient,
    summed over batch and pixels (float64, by definition)."""
    rng = np.random.RandomState(4)
    inputs = rng.randn(*input_shape).astype("float32")
    kernel = rng.randn(*kernel_size, input_shape[-1], 1).astype("float32")
    d_outputs = rng.randn(*input_shape).astype("float32")
    d_inputs, d_kernel = to_numpy(_gradients(depthwise_conv_same, [inputs, kernel], d_outputs))
    kh, kw = kernel_size
    top, left = (kh - 1) // 2, (kw - 1) // 2
    height, width = input_shape[1:3]
    padded = np.pad(inputs.astype("float64"), [(0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)])
    want_d_padded = np.zeros(padded.shape)
    want_d_kernel = np.zeros(kernel.shape)
    for i in range(kh):
        for j in range(kw):
            window = (slice(None), slice(i, i + height), slice(j, j + width))
            want_d_padded[window] += d_outputs * kernel[i, j, :, 0]
            want_d_kernel[i, j, :, 0] = (padded[window] * d_outputs).sum((0, 1, 2))
    want_d_inputs = want_d_padded[:, top : top + height, left : left + width]
    np.testing.assert_allclose(d_inputs, want_d_inputs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_kernel, want_d_kernel, rtol=1e-5, atol=1e-4)


def _conv_reference(inputs, kernel, strides, padding, dilation):
    """TensorFlow's convolution by definition, in float64: "same" pads
    `max((ceil(H / s) - 1) * s + k_eff - H, 0)` pixels, the odd one after;
    groups = input channels / the kernel's third dimension."""
    kh, kw, group_in, filters = kernel.shape
    groups = inputs.shape[-1] // group_in
    eff_h, eff_w = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    pads = []
    for size, eff in ((inputs.shape[1], eff_h), (inputs.shape[2], eff_w)):
        total = max((-(-size // strides) - 1) * strides + eff - size, 0) if padding == "same" else 0
        pads.append((total // 2, total - total // 2))
    x = np.pad(inputs.astype("float64"), [(0, 0), pads[0], pads[1], (0, 0)])
    out_h = (x.shape[1] - eff_h) // strides + 1
    out_w = (x.shape[2] - eff_w) // strides + 1
    out = np.zeros((inputs.shape[0], out_h, out_w, filters), "float64")
    per_group = filters // groups
    for g in range(groups):
        cin, cout = slice(g * group_in, (g + 1) * group_in), slice(g * per_group, (g + 1) * per_group)
        for i in range(kh):
            for j in range(kw):
                rows = x[:, i * dilation : i * dilation + strides * (out_h - 1) + 1 : strides]
                taps = rows[:, :, j * dilation : j * dilation + strides * (out_w - 1) + 1 : strides]
                out[..., cout] += taps[..., cin] @ kernel[i, j, :, cout]
    return out


@pytest.mark.parametrize(
    "input_shape, kernel_shape, strides, padding, dilation",
    [
        ((2, 9, 7, 6), (3, 3, 6, 5), 1, "same", 1),
        ((2, 9, 7, 6), (3, 3, 6, 5), 2, "valid", 1),
        ((1, 11, 11, 4), (3, 3, 4, 8), 1, "same", 3),  # atrous
        ((2, 5, 7, 4), (3, 3, 4, 8), 1, "same", 6),  # atrous: rows of taps off the map
        ((1, 9, 8, 3), (4, 2, 3, 5), 1, "same", 2),  # atrous, even kernel: odd padding after
        ((1, 10, 10, 4), (4, 4, 4, 3), 4, "valid", 1),  # ConvNeXt's stem
        ((1, 9, 9, 6), (7, 7, 1, 6), 1, "same", 1),  # grouped (depthwise)
        ((1, 8, 9, 6), (3, 3, 6, 4), 2, "same", 1),  # strided "same": Keras' own path
        ((2, 9, 7, 6), (1, 1, 6, 5), 1, "same", 1),  # 1x1, few rows: a matrix product
        ((1, 24, 24, 6), (1, 1, 6, 5), 1, "valid", 1),  # 1x1, many rows: PyTorch's 1x1 conv
        ((2, 9, 8, 6), (1, 1, 6, 5), 2, "valid", 1),  # strided 1x1: JAX's every other pixel
        ((1, 9, 10, 6), (1, 1, 6, 5), 3, "same", 1),
    ],
)
def test_conv_is_tensorflows_convolution(input_shape, kernel_shape, strides, padding, dilation):
    rng = np.random.RandomState(1)
    inputs = rng.randn(*input_shape).astype("float32")
    kernel = rng.randn(*kernel_shape).astype("float32")
    got = to_numpy(conv(inputs, kernel, strides=strides, padding=padding, dilation_rate=dilation))
    want = _conv_reference(inputs, kernel, strides, padding, dilation)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [7, backend_seam._POINTWISE_CONV_MIN_ROWS])
def test_pointwise_is_a_matrix_product_on_the_last_axis(rows):
    rng = np.random.RandomState(2)
    inputs = rng.randn(1, rows, 8).astype("float32")
    kernel = rng.randn(8, 5).astype("float32")
    got = to_numpy(pointwise(inputs, kernel))
    np.testing.assert_allclose(got, inputs.astype("float64") @ kernel, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's own pointwise gradient")
@pytest.mark.parametrize("with_bias", [False, True])
def test_pointwise_gradients_on_pytorch_are_the_matrix_products(with_bias):
    import torch

    rng = np.random.RandomState(3)
    rows = backend_seam._POINTWISE_CONV_MIN_ROWS + 3
    inputs = torch.tensor(rng.randn(1, rows, 8).astype("float32"), requires_grad=True)
    kernel = torch.tensor(rng.randn(8, 5).astype("float32"), requires_grad=True)
    bias = torch.tensor(rng.randn(5).astype("float32"), requires_grad=True) if with_bias else None
    d_outputs = rng.randn(1, rows, 5)
    outputs = pointwise(inputs, kernel, bias)
    (outputs * torch.tensor(d_outputs, dtype=torch.float32)).sum().backward()
    x, k = inputs.detach().numpy().astype("float64")[0], kernel.detach().numpy().astype("float64")
    expected = x @ k + (bias.detach().numpy() if with_bias else 0.0)
    np.testing.assert_allclose(outputs.detach().numpy()[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inputs.grad.numpy()[0], d_outputs[0] @ k.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kernel.grad.numpy(), x.T @ d_outputs[0], rtol=1e-5, atol=1e-4)
    if with_bias:
        np.testing.assert_allclose(bias.grad.numpy(), d_outputs[0].sum(0), rtol=1e-5, atol=1e-4)


def test_first_argmax_takes_the_first_maximum_and_ties_signed_zeros():
    values = np.array(
        [
            [0.5, 2.0, 2.0, -1.0],  # a tie: the first
            [-0.0, 0.0, -3.0, -0.0],  # -0.0 ties with 0.0 (tf.argmax in deeplab2)
            [-7.0, -8.0, -7.5, -9.0],
            [1.0, 1.0, 1.0, 1.0],
        ],
        "float32",
    )
    got = to_numpy(first_argmax(values))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [1, 0, 0, 0])
    # The same from the maximum a caller already has (a comparison and a min).
    given = to_numpy(first_argmax(values, maximum=keras.ops.max(values, axis=-1)))
    assert given.dtype == np.int32
    np.testing.assert_array_equal(given, [1, 0, 0, 0])
    # The last axis of a [B, H, W, N] map, as the post-processors use it.
    rng = np.random.RandomState(0)
    maps = np.round(rng.randn(2, 5, 7, 6), 1).astype("float32")
    np.testing.assert_array_equal(to_numpy(first_argmax(maps)), np.argmax(maps, axis=-1))
    np.testing.assert_array_equal(to_numpy(first_argmax(maps, axis=1)), np.argmax(maps, axis=1))
    np.testing.assert_array_equal(
        to_numpy(first_argmax(maps, axis=1, maximum=maps.max(axis=1))), np.argmax(maps, axis=1)
    )


def test_count_by_index_sums_weights_per_index_per_image():
    rng = np.random.RandomState(1)
    index = rng.randint(0, 5, (3, 9, 11)).astype("int32")
    weights = rng.rand(3, 9, 11) > 0.3
    expected = np.stack(
        [np.bincount(i.ravel(), w.ravel(), minlength=6) for i, w in zip(index, weights)]
    )
    got = to_numpy(count_by_index(index, weights, 6))
    assert got.shape == (3, 6) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_export_model_skips_the_nested_models_default_signature_traces(tmp_path):
    """On TensorFlow, Keras' SavedModel archive traces each nested model's
    default signature on its way to the lookup tables, and throws the traces
    away; `export_model` hides those signatures while it exports (the tiny
    MaX-DeepLab's SavedModel export 20.5 s -> 12.9 s), then puts them back."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the default signatures are TensorFlow's (jax2tf traces the model itself)")
    traces = []

    class Counted(keras.layers.Layer):
        def call(self, inputs):
            traces.append(1)
            return inputs * 2.0

    images = keras.Input((4,), name="images")
    inner = keras.Model(images, Counted()(images))
    outer_images = keras.Input((4,), name="images")
    outer = keras.Model(outer_images, {"doubled": inner(outer_images)})

    def export_traces(export, path):
        traces.clear()
        export(outer, str(tmp_path / path), "tf_saved_model")
        return len(traces)

    def keras_export(model, path, format):
        keras.Model.export(model, path, format=format, verbose=False)

    by_keras = export_traces(keras_export, "keras")
    by_seam = export_traces(backend_seam.export_model, "seam")
    assert by_seam < by_keras, (by_seam, by_keras)
    # Put back: the classes hold no shadow, and Keras' property answers again.
    assert not any("_default_save_signature" in vars(type(m)) for m in (inner, outer))
    assert outer._default_save_signature is not None


torch_only = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="BatchPredictor traces only on PyTorch; on JAX and TensorFlow it is "
    "`predict_on_batch`, which compiles itself (every predict_panoptic test runs it)",
)


def _deeplab2_tiny_at_65():
    """deeplab2's tiny MaX-DeepLab with its tuned 65x65 thresholds, its
    reference outputs and its input image."""
    folder = shared_path("reference", "max_deeplab_tiny")
    io = np.load(os.path.join(folder, "io.npz"))
    model = tiny_model(65)
    load_deeplab2_checkpoint(model, os.path.join(folder, "ckpt"))
    with open(os.path.join(folder, "config.json")) as f:
        model.postprocess_options.update(json.load(f)["post_processing"]["tuned_thresholds"]["65"])
    return model, io, io["s65/input/image_0_255"][0]


def _assert_maps_equal(actual, expected):
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def _assert_jax_maps_match(actual, expected):
    """BatchPredictor's maps against `predict_on_batch`'s on JAX: the same
    program, exactly, unless `jax_compiler_options` changed it (a jaxlib with
    YNNPACK fusions, which `predict_on_batch` keeps): then the integer maps
    exactly and the scores to float rounding."""
    if not backend_seam.jax_compiler_options():
        _assert_maps_equal(actual, expected)
        return
    for key in expected:
        if np.issubdtype(expected[key].dtype, np.integer):
            np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
        else:
            np.testing.assert_allclose(actual[key], expected[key], rtol=0, atol=2e-5, err_msg=key)


def _perturb_weights(model):
    """Adds seeded noise to every weight but the moving variances, as
    training or `load_weights` would assign new values."""
    rng = np.random.RandomState(0)
    for variable in model.weights:
        if "moving_variance" not in variable.path:
            value = keras.ops.convert_to_numpy(variable)
            variable.assign(value + rng.normal(0, 0.3, value.shape).astype(value.dtype))


def test_jax_compiler_options_are_the_wanted_options_this_jaxlib_knows():
    """On JAX on CPU: every option returned compiles and computes as without
    it, and every wanted option left out is one this jaxlib refuses by name
    (nothing dropped for another reason). Elsewhere there are none."""
    options = backend_seam.jax_compiler_options()
    if not backend_seam._runs_jax_on_cpu():
        assert options == {}
        return
    import jax

    def affine(x):
        return x * 2.0 + 1.0

    x = np.arange(6, dtype="float32")
    for name, value in backend_seam._JAX_CPU_WANTED_OPTIONS.items():
        compiled = jax.jit(affine, compiler_options={name: value})
        if name in options:
            assert options[name] == value
            np.testing.assert_array_equal(np.asarray(compiled(x)), affine(x))
        else:
            with pytest.raises(Exception, match="No such compile option"):
                compiled(x)
    assert set(options) <= set(backend_seam._JAX_CPU_WANTED_OPTIONS)


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="on JAX BatchPredictor compiles the model's stateless_call itself; "
    "elsewhere see the PyTorch test below",
)
def test_batch_predictor_on_jax_gives_deeplab2_maps_and_follows_the_weights():
    """deeplab2's maps exactly (its tiny model at 65, tuned thresholds), the
    same as Keras' `predict_on_batch`, and weights assigned after the first
    call (as training or load_weights assign them) are the ones used."""
    model, io, image = _deeplab2_tiny_at_65()
    predict = model._panoptic_predictor(model.postprocess_options)
    pipeline = predict.model
    batch = model.image_converter(image[None])

    first = predict(batch)
    expected = pipeline.predict_on_batch(batch)
    _assert_jax_maps_match(first, expected)
    for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
        np.testing.assert_array_equal(first[key], io[f"s65/postprocess/{key}"], err_msg=key)

    _perturb_weights(model)
    changed = predict(batch)
    expected = pipeline.predict_on_batch(batch)
    assert not np.array_equal(changed["panoptic_pred"], first["panoptic_pred"])
    _assert_jax_maps_match(changed, expected)

    # Freezing a layer reorders the variables `stateless_call` takes.
    model.backbone.get_layer("stem").trainable = False
    frozen = predict(batch)
    _assert_jax_maps_match(frozen, expected)

    pair = keras.ops.concatenate([batch, keras.ops.flip(batch, axis=2)])
    np.testing.assert_array_equal(
        predict(pair)["panoptic_pred"], pipeline.predict_on_batch(pair)["panoptic_pred"]
    )


@torch_only
def test_batch_predictor_traces_pytorch_and_follows_the_weights(monkeypatch):
    """`predict_panoptic` through the traced program gives deeplab2's maps
    exactly (its tiny model at 65 with the tuned thresholds), and weights
    loaded after the trace are the ones used."""
    import torch

    model, io, image = _deeplab2_tiny_at_65()
    predict = model._panoptic_predictor(model.postprocess_options)

    # The default: eager calls until they have taken TORCH_EXPORT_AFTER_SECONDS.
    eager = model.predict_panoptic(image)[0]
    assert predict.traced_shapes == []
    monkeypatch.setattr(backend_seam, "TORCH_EXPORT_AFTER_SECONDS", 0.0)
    (traced,) = model.predict_panoptic(image)
    assert predict.traced_shapes == [(1, 65, 65, 3)]
    for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
        np.testing.assert_array_equal(traced[key], eager[key], err_msg=key)
        np.testing.assert_array_equal(traced[key], io[f"s65/postprocess/{key}"][0], err_msg=key)
    assert traced["segments_info"] == eager["segments_info"]

    # New weights after the trace (as training or load_weights assign them):
    # the traced program computes with them.
    pipeline = predict.model
    batch = model.image_converter(image[None])
    _perturb_weights(model)
    changed = predict(batch)
    expected = pipeline.predict_on_batch(batch)
    assert not np.array_equal(changed["panoptic_pred"], io["s65/postprocess/panoptic_pred"])
    _assert_maps_equal(changed, expected)
    assert predict.traced_shapes == [(1, 65, 65, 3)]

    # A batch of another shape gets its own trace.
    pair = keras.ops.concatenate([batch, keras.ops.flip(batch, axis=2)])
    np.testing.assert_array_equal(
        predict(pair)["panoptic_pred"], pipeline.predict_on_batch(pair)["panoptic_pred"]
    )
    assert predict.traced_shapes == [(1, 65, 65, 3), (2, 65, 65, 3)]

    # Keras assigns in place; should a variable hold another tensor instead
    # (set directly here, standing for any way a Keras version could), the
    # next call traces again rather than compute with the old one.
    variable = next(v for v in model.weights if v.path == "transformer_class_head/conv/kernel")
    variable._value = torch.nn.Parameter(variable._value.detach() * -3.0)
    replaced = predict(batch)
    expected = pipeline.predict_on_batch(batch)
    assert not np.array_equal(replaced["semantic_pred"], changed["semantic_pred"])
    _assert_maps_equal(replaced, expected)
