"""Times deeplab2's two panoptic post-processors on the current Keras backend.

    KERAS_BACKEND=torch python benchmarks/postprocessing.py --sizes 641 1281

`postprocess_panoptic` (MaX-DeepLab, pixelwise) and `postprocess_panoptic_maskwise`
(kMaX-DeepLab) on one image's outputs: 128 mask slots at stride 4 upsampled to
the crop, 133 classes + "no object", seeded logits with 40 confident slots.
JAX runs them under `jax.jit`, TensorFlow under `tf.function`, as
`predict_panoptic` does; PyTorch runs them eagerly, as `predict_panoptic` does
there until its calls at a batch shape have taken 10 s (then it runs them
traced with the network: `backend_seam.BatchPredictor`). Medians (and minima)
of `--repeats` calls after a warm-up call, which is reported as the first call
(it includes compilation).
"""

import argparse
import statistics
import time

import numpy as np

import keras

from keras_maxdeeplab.postprocessing import MASKWISE_POSTPROCESS_OPTIONS
from keras_maxdeeplab.postprocessing import postprocess_panoptic
from keras_maxdeeplab.postprocessing import postprocess_panoptic_maskwise


def _inputs(size, seed=0):
    rng = np.random.RandomState(seed)
    strided = (size - 1) // 4 + 1
    mask_logits = (rng.randn(1, strided, strided, 128) * 5).astype("float32")
    class_logits = (rng.randn(1, 128, 134) * 3).astype("float32")
    class_logits[0, :40, rng.randint(0, 133, 40)] += 12.0  # 40 confident slots
    return mask_logits, class_logits


def _compiled(function):
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function)
    return function


def _time(function, inputs, repeats):
    start = time.perf_counter()
    keras.ops.convert_to_numpy(function(*inputs)["panoptic_pred"])
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(function(*inputs)["panoptic_pred"])
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[641, 1281])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"backend {keras.backend.backend()}")
    print("| post-processor | size | first call | median | min |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        inputs = [keras.ops.convert_to_tensor(x) for x in _inputs(size)]
        post_processors = {
            "pixelwise (MaX-DeepLab)": lambda m, c: postprocess_panoptic(m, c, (size, size)),
            "maskwise (kMaX-DeepLab)": lambda m, c: postprocess_panoptic_maskwise(
                m, c, (size, size), **MASKWISE_POSTPROCESS_OPTIONS
            ),
        }
        for name, function in post_processors.items():
            first, median, fastest = _time(_compiled(function), inputs, args.repeats)
            print(f"| {name} | {size} | {first:.2f} s | {median:.3f} s | {fastest:.3f} s |")


if __name__ == "__main__":
    main()
