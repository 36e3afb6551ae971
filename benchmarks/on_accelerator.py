"""Parity and speed on an accelerator (GPU), where neither TensorFlow nor ../shared may be.

Two steps. Where TensorFlow and ../shared are (it reads deeplab2's checkpoint):

    python benchmarks/on_accelerator.py prepare KIT

writes to the folder KIT deeplab2's tiny MaX-DeepLab checkpoint converted at 65
and 129 (`tiny_65.weights.h5`, `tiny_129.weights.h5`), deeplab2's outputs for
it (`io.npz`) and a COCO photo. Then, on the accelerator, once per backend:

    KERAS_BACKEND=jax python benchmarks/on_accelerator.py run KIT OUT.json
        [--precision highest] [--parity-only]

* parity: the converted tiny model's outputs against deeplab2's (max relative
  error of the eager call and of the compiled `predict_on_batch`), and the
  share of pixels of the post-processed panoptic map equal to deeplab2's;
* speed, full MaX-DeepLab-S with random weights: `predict_panoptic` on the
  photo, the forward pass alone, `predict_panoptic` on 8 copies at once, at
  641 and 1025; `train_on_batch` at 641, batch 1 and 8, and batch 8 under
  `mixed_bfloat16`. First call (compilation included) and median of the
  timed calls; peak device memory.

`--precision highest` computes float32 matrix products and convolutions in full
float32 (`jax_default_matmul_precision`; PyTorch's `allow_tf32` flags) instead
of the frameworks' GPU default, TF32 (10-bit mantissas). The JSON is rewritten
after each result, so a run stopped early keeps what it measured.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
PHOTO = "000000439180.jpg"
OUTPUTS = (
    "pixel_space_mask_logits",
    "transformer_class_logits",
    "semantic_logits",
    "pixel_space_normalized_feature",
)


def tiny_model(crop):
    from keras_maxdeeplab import build_model

    return build_model("max_deeplab_tiny", crop, {"preprocessor": None})


def prepare(kit):
    from keras_maxdeeplab.conversion import load_deeplab2_checkpoint

    reference = os.path.join(SHARED, "reference", "max_deeplab_tiny")
    os.makedirs(kit, exist_ok=True)
    for crop in (65, 129):
        model = tiny_model(crop)
        load_deeplab2_checkpoint(model, os.path.join(reference, "ckpt"))
        model.save_weights(os.path.join(kit, f"tiny_{crop}.weights.h5"))
    shutil.copy(os.path.join(reference, "io.npz"), kit)
    shutil.copy(os.path.join(SHARED, "data", "coco_panoptic_sample", "input_images", PHOTO), kit)


class Device:
    """The precision switch and peak memory of the backend's first device."""

    def __init__(self, backend, highest):
        self.backend = backend
        if backend == "jax":
            import jax

            if highest:
                jax.config.update("jax_default_matmul_precision", "highest")
            self.name = str(jax.devices()[0])
        elif backend == "torch":
            import torch

            if highest:
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
            self.cuda = torch.cuda.is_available()
            self.name = torch.cuda.get_device_name(0) if self.cuda else "cpu"
        else:
            raise SystemExit("run it with KERAS_BACKEND=jax or torch (TensorFlow: not measured)")

    def peak_bytes(self):
        if self.backend == "jax":
            import jax

            return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0)
        import torch

        return torch.cuda.max_memory_allocated() if self.cuda else 0

    def reset_peak(self):
        if self.backend == "torch" and self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()


def scenes(count, size, seed=0):
    """Three squares of a thing class on two stuff classes, and their targets."""
    rng = np.random.RandomState(seed)
    side = size // 4
    images = np.zeros((count, size, size, 3), np.float32)
    semantic = np.zeros((count, size, size), np.int32)
    thing_mask = np.full((count, size, size), -1, np.int32)
    thing_class = np.full((count, 128), -1, np.float32)
    for i in range(count):
        split = rng.randint(size // 3, 2 * size // 3)
        semantic[i, :split], semantic[i, split:] = 119, 125
        images[i, :split] = (0.2, 0.4, 0.9)
        images[i, split:] = (0.2, 0.7, 0.2)
        for t in range(3):
            y, x = rng.randint(0, size - side, 2)
            semantic[i, y : y + side, x : x + side] = 1
            thing_mask[i, y : y + side, x : x + side] = t
            images[i, y : y + side, x : x + side] = (0.9, 0.3, 0.2)
        thing_class[i, np.unique(thing_mask[i][thing_mask[i] >= 0])] = 1
    y_true = {
        "semantic_gt": semantic,
        "thing_id_mask_gt": thing_mask,
        "thing_id_class_gt": thing_class,
        "semantic_loss_weight": np.ones((count, size, size), np.float32),
        "panoptic_gt": semantic * 256 + np.where(thing_mask >= 0, thing_mask + 1, 0),
    }
    return images * 2.0 - 1.0, y_true


def run(kit, out, highest, parity_only):
    import keras
    from PIL import Image

    from keras_maxdeeplab import build_model
    from keras_maxdeeplab.postprocessing import postprocess_panoptic

    device = Device(keras.backend.backend(), highest)
    result = {"backend": device.backend, "device": device.name}
    result["precision"] = "highest" if highest else "default"

    def save():
        with open(out + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(out + ".tmp", out)
        print(device.backend, sorted(result), flush=True)

    def to_numpy(tree):
        return keras.tree.map_structure(keras.ops.convert_to_numpy, tree)

    def relative_error(actual, reference):
        return float(np.max(np.abs(actual - reference)) / np.max(np.abs(reference)))

    def timed(fn, repeats):
        # Copying the results to the host waits for the device to finish them.
        start = time.perf_counter()
        to_numpy(fn())
        first = time.perf_counter() - start
        to_numpy(fn())
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            to_numpy(fn())
            runs.append(time.perf_counter() - start)
        return {"first_s": round(first, 3), "median_s": round(statistics.median(runs), 5)}

    io = np.load(os.path.join(kit, "io.npz"))
    for crop in (65, 129):
        model = tiny_model(crop)
        model.load_weights(os.path.join(kit, f"tiny_{crop}.weights.h5"))
        images = io[f"s{crop}/input/image_normalized"]
        eager = to_numpy(model(images, training=False))
        compiled = to_numpy(model.predict_on_batch(images))
        entry = {}
        for key in OUTPUTS:
            reference = io[f"s{crop}/output/{key}"]
            entry[key] = [relative_error(eager[key], reference), relative_error(compiled[key], reference)]
        maps = to_numpy(
            postprocess_panoptic(
                eager["pixel_space_mask_logits"], eager["transformer_class_logits"], (crop, crop)
            )
        )
        reference = io[f"s{crop}/postprocess_default/panoptic_pred"]
        entry["panoptic_agreement"] = float(np.mean(maps["panoptic_pred"] == reference))
        result[f"parity_tiny_{crop}"] = entry
        save()
    if parity_only:
        return

    photo = np.asarray(Image.open(os.path.join(kit, PHOTO)).convert("RGB"))
    for crop in (641, 1025):
        keras.utils.set_random_seed(0)
        device.reset_peak()
        model = build_model("max_deeplab_s", crop)
        pixels = model.image_converter(photo[None])
        entry = result[f"s{crop}"] = {}
        entry["predict_panoptic"] = timed(lambda: model.predict_panoptic(photo), 10)
        entry["forward"] = timed(lambda: model.predict_on_batch(pixels), 10)
        batched = timed(lambda: model.predict_panoptic([photo] * 8, batch_size=8), 3)
        entry["batched_predict_8"] = batched
        entry["images_per_s_batch8"] = round(8 / batched["median_s"], 2)
        entry["peak_bytes_inference"] = device.peak_bytes()
        save()
        if crop != 641:
            continue
        model.compile()
        for batch in (1, 8):
            x, y = scenes(batch, crop)
            device.reset_peak()
            entry[f"train_step_batch{batch}"] = timed(lambda: model.train_on_batch(x, y), 5)
            entry[f"peak_bytes_train_batch{batch}"] = device.peak_bytes()
            save()
        del model
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        keras.utils.set_random_seed(0)
        model = build_model("max_deeplab_s", crop)
        model.compile()
        x, y = scenes(8, crop)
        entry["bf16_train_step_batch8"] = timed(lambda: model.train_on_batch(x, y), 5)
        entry["bf16_forward"] = timed(lambda: model.predict_on_batch(pixels), 10)
        keras.mixed_precision.set_global_policy("float32")
        save()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare").add_argument("kit")
    runner = commands.add_parser("run")
    runner.add_argument("kit")
    runner.add_argument("out")
    runner.add_argument("--precision", choices=["default", "highest"], default="default")
    runner.add_argument("--parity-only", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    if args.command == "prepare":
        prepare(args.kit)
    else:
        run(args.kit, args.out, args.precision == "highest", args.parity_only)


if __name__ == "__main__":
    main()
