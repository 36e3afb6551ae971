"""Data-parallel training equals single-device training on the same global batch.

Each test runs a child process whose virtual CPU devices are configured before
the engine starts (XLA's host device count on JAX, logical CPU devices on
TensorFlow). The child trains one step single-device, then one step from the
same weights on the same global batch of 4 under `backend_seam.data_parallel`,
and prints the losses and weight differences as JSON.
"""

import json
import os

import pytest

import keras

from keras_maxdeeplab import backend_seam
from tests.helpers import run_python
from tests.helpers import save_one_block_preset

# XLA's in-process CPU collectives aborted a step when the virtual devices reached
# an all-reduce more than 10 s apart, which a starved device thread on a loaded
# 2-core machine was (fixed in jaxlib 0.7.1). These tests still run after the rest
# of their backend's suite (scripts/test.sh), while the other backends' suites run:
# they passed so on JAX and TensorFlow with five other test processes on 2 cores.
pytestmark = pytest.mark.serial

# The child: argv[1] = the device count.
CHILD = r"""
import json
import sys

count = int(sys.argv[1])
import keras

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * count
    )
import numpy as np

from keras_maxdeeplab import backend_seam
from keras_maxdeeplab import build_model
from tests.helpers import ONE_BLOCK_PER_STAGE
from tests.models.test_max_deeplab_fit import _scenes


def step(images, y_true, initial):
    # The tiny architecture with one block per stage (every layer type, a
    # faster trace), without drop path or dropout: their masks are drawn per
    # replica on TensorFlow, so they could not match a single-device draw.
    model = build_model(
        "max_deeplab_tiny",
        65,
        {"preprocessor": None, "drop_path_keep_prob": 1.0, **ONE_BLOCK_PER_STAGE},
    )
    model.semantic_decoder.aspp.proj_drop.rate = 0.0
    # SGD: the update is the gradient itself (Adam's first step is its sign,
    # which float noise flips on gradients that are zero in exact arithmetic).
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    if initial is not None:
        for variable, value in zip(model.weights, initial):
            variable.assign(value)
    before = [keras.ops.convert_to_numpy(v) for v in model.weights]
    history = model.fit(images, y_true, batch_size=len(images), epochs=1, shuffle=False, verbose=0)
    after = [keras.ops.convert_to_numpy(v) for v in model.weights]
    logs = {key: float(values[-1]) for key, values in history.history.items()}
    return logs, before, after, [v.path for v in model.weights]


keras.utils.set_random_seed(1)
images, y_true = _scenes(4, seed=0)
y_true.pop("panoptic_gt")
logs, initial, single, paths = step(images, y_true, None)
result = {"1": {"logs": logs}}
moving = [i for i, path in enumerate(paths) if "moving" in path]
with backend_seam.data_parallel(count):
    logs, _, weights, _ = step(images, y_true, initial)
updates = [np.max(np.abs(s - i)) for s, i in zip(single, initial)]
differences = [np.max(np.abs(w - s)) for w, s in zip(weights, single)]
result[str(count)] = {
    "logs": logs,
    "max_weight_difference": float(max(differences)),
    "max_update": float(max(updates)),
    "max_moving_statistic_difference": float(max(differences[i] for i in moving)),
    "max_moving_statistic_update": float(max(updates[i] for i in moving)),
}
print("RESULT " + json.dumps(result))
"""


def _child_env(devices):
    env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
    if keras.backend.backend() == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
        # XLA's CPU client runs each virtual device's program on its thread
        # pool, sized by NPROC (default: the cores). Programs waiting in an
        # all-reduce hold their threads, so with too few the others never
        # start: the 4-device step died at XLA's fixed 10 s rendezvous
        # timeout with the default (2 here, under load) and with NPROC=4
        # (even idle); twice the devices passed both ways.
        env["NPROC"] = str(max(2 * devices, os.cpu_count() or 1))
    return env


def _run(count):
    code, out, err = run_python(CHILD, str(count), env=_child_env(count), timeout=600)
    assert code == 0, err[-3000:]
    line = [line for line in out.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def _check_same_step(result, count):
    single, multi = result["1"], result[str(count)]
    assert multi["logs"].keys() == single["logs"].keys()
    for key, value in single["logs"].items():
        # Same loss and terms: the matching and the batch averages span the global batch.
        assert abs(multi["logs"][key] - value) <= 1e-5 * max(1.0, abs(value)), (key, result)
    # The updates are of order 1 (SGD, learning rate 0.5); float32 sums in
    # another order (per replica, then all-reduced) differ by ~1e-3 of that.
    assert multi["max_weight_difference"] <= 5e-3 * multi["max_update"], result
    # Synchronised batch norm: moving statistics of the global batch. Per-replica
    # statistics differ from them by ~1e-2 on these scenes.
    assert multi["max_moving_statistic_difference"] <= 1e-4 * max(
        1.0, multi["max_moving_statistic_update"]
    ), result


needs_multi_device_engine = pytest.mark.skipif(
    keras.backend.backend() not in ("jax", "tensorflow"),
    reason="Keras distributes training only on JAX and TensorFlow",
)


@needs_multi_device_engine
def test_data_parallel_step_equals_single_device_step():
    # JAX: four devices, one sample each, the hardest split for the synchronised
    # batch norm and the matching over the global batch. TensorFlow traces the
    # step once per replica (20 s each here): two devices, which run the same
    # tf.distribute code (its collectives keep their group size for the
    # process, so more counts would take more children).
    count = 4 if keras.backend.backend() == "jax" else 2
    result = _run(count)
    print(json.dumps(result))
    _check_same_step(result, count)


def test_data_parallel_refuses_bad_device_counts():
    with pytest.raises(ValueError, match="at least 1"):
        with backend_seam.data_parallel(0):
            pass
    if keras.backend.backend() == "torch":
        with pytest.raises(ValueError, match="not available on the 'torch' backend"):
            with backend_seam.data_parallel(2):
                pass
    else:
        with pytest.raises(ValueError, match="1000 devices requested"):
            with backend_seam.data_parallel(1000):
                pass
    with backend_seam.data_parallel(1) as distribution:
        assert distribution is None


# The child: argv[1] = a synthetic dataset folder, argv[2] = the output folder,
# argv[3] = the preset to fine-tune.
TRAIN_CHILD = r"""
import json
import os
import sys

import keras

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab.cli import main

data, output, preset = sys.argv[1:4]
command = ["train", data, "--output", output, "--preset", preset]
command += ["--devices", "2", "--batch-size", "2", "--precision", "bf16", "--quiet"]
code = main(command + ["--steps", "2", "--steps-per-epoch", "1"])
with open(os.path.join(output, "training.json")) as f:
    record = json.load(f)
model = MaXDeepLab.from_preset(os.path.join(output, "preset"))
print("RESULT " + json.dumps({"code": code, "record": record, "policy": model.backbone.dtype_policy.name}))
"""


@needs_multi_device_engine
def test_train_command_on_two_devices_in_bfloat16(tmp_path):
    """`maxdeeplab train --preset ... --devices 2 --precision bf16`: the
    README's command, through the COCO-panoptic tf.data pipeline the engine
    distributes."""
    from keras_maxdeeplab.data import write_synthetic_panoptic_dataset

    data = str(tmp_path / "data")
    write_synthetic_panoptic_dataset(data, 4, seed=0)
    output, preset = str(tmp_path / "run"), str(tmp_path / "tiny")
    save_one_block_preset(preset)
    code, out, err = run_python(TRAIN_CHILD, data, output, preset, env=_child_env(2), timeout=600)
    assert code == 0, err[-3000:]
    line = [line for line in out.splitlines() if line.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT ") :])
    assert result["code"] == 0
    assert result["record"]["steps_done"] == 2
    assert result["record"]["arguments"]["devices"] == 2
    loss = result["record"]["last_logs"]["loss"]
    assert 0 < loss < 100, result
    # Saved under mixed_bfloat16, loaded under the global policy (float32).
    assert result["policy"] == "float32"
