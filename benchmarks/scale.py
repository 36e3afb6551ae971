"""Training throughput and memory per precision and device count.

One fresh process per row (devices must be configured before the engine
starts): the tiny MaX-DeepLab at `--size`, the default training recipe, one
warm-up `fit` step (compilation) then `--steps` timed steps on a global batch
of `--batch`. Run once per backend:

    KERAS_BACKEND=jax python benchmarks/scale.py [--devices 1 2] [--precisions fp32 bf16 fp16]

Without accelerators the devices are virtual CPU devices sharing the host's
cores, so multi-device rows measure overhead, not speed-up; GPU/TPU numbers
need a machine with them (the same command; memory is then the device's peak).
"""

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.measured_child import run_measured  # noqa: E402

_CHILD = r"""
import sys
import time

size, batch, steps, devices, precision = sys.argv[1:6]
size, batch, steps, devices = int(size), int(batch), int(steps), int(devices)
import keras

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices
        )
import numpy as np

from benchmarks.training_step import _targets
from keras_maxdeeplab import backend_seam
from keras_maxdeeplab import build_model
from keras_maxdeeplab.cli.train import PRECISIONS

keras.mixed_precision.set_global_policy(PRECISIONS[precision])
rng = np.random.RandomState(0)
images = rng.uniform(-1, 1, (batch * (steps + 1), size, size, 3)).astype("float32")
y_true = _targets(batch * (steps + 1), size, rng)
with backend_seam.data_parallel(devices):
    model = build_model("max_deeplab_tiny", size, {"preprocessor": None})
    model.compile(warmup_steps=0)
    warm = {k: v[:batch] for k, v in y_true.items()}
    model.fit(images[:batch], warm, batch_size=batch, epochs=1, verbose=0)
    rest = {k: v[batch:] for k, v in y_true.items()}
    start = time.perf_counter()
    history = model.fit(images[batch:], rest, batch_size=batch, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
result = {"images_per_second": batch * steps / seconds, "loss": history.history["loss"][-1]}
try:
    import jax

    stats = jax.devices()[0].memory_stats() if keras.backend.backend() == "jax" else None
except ImportError:
    stats = None
if stats and "peak_bytes_in_use" in stats:
    result["device_peak"] = stats["peak_bytes_in_use"]
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=65)
    parser.add_argument("--batch", type=int, default=4, help="global batch")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    args = parser.parse_args()
    import keras

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    backend = keras.backend.backend()
    print(
        f"backend {backend}, tiny MaX-DeepLab {args.size}x{args.size}, global batch "
        f"{args.batch}, {args.steps} timed steps"
    )
    print("| precision | devices | images/s | peak host RSS (MB) | device peak (MB) | loss |")
    print("|---|---|---|---|---|---|")
    for precision in args.precisions:
        for devices in args.devices:
            env = {**os.environ, "PYTHONPATH": repo, "TF_CPP_MIN_LOG_LEVEL": "2"}
            if backend == "jax":
                flags = env.get("XLA_FLAGS", "")
                env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}"
            values = [str(v) for v in (args.size, args.batch, args.steps, devices, precision)]
            try:
                row = run_measured(_CHILD, values, repo, env)
            except subprocess.CalledProcessError as error:  # the row says why; the table goes on
                reason = (error.stderr or "").strip().splitlines()[-1:] or ["no output"]
                print(f"| {precision} | {devices} | failed: {reason[0][:120]} | | | |")
                continue
            device = row.get("device_peak")
            device = f"{device / 2**20:.0f}" if device else "n/a (CPU)"
            print(
                f"| {precision} | {devices} | {row['images_per_second']:.2f} | "
                f"{row['peak_rss'] / 2**20:.0f} | {device} | {row['loss']:.3f} |"
            )


if __name__ == "__main__":
    main()
