"""Makes the ConvNeXt reference of kMaX-DeepLab with deeplab2's own code.

    source WORKDIR/env.sh   # ../shared/tools/deeplab2/setup.sh's venv (deeplab2, TF + tf-keras)
    python tools/deeplab2_convnext_reference.py ../shared/reference/kmax_deeplab_tiny/io.npz \
        tests/models/deeplab2_convnext

Writes into the output folder:
* `ckpt/`: a TF checkpoint of a reduced deeplab2 `ConvNeXt` pixel encoder
  (depths 1, 1, 2, 1, dims 8, 16, 32, 64, `zero_padding_for_downstream=True`
  as kMaX builds it), under the root `encoder` as deeplab2's trainer saves it.
  Weights: deeplab2's initialisers (seed 0), then, drawn in `model.weights`
  order from `np.random.RandomState(1234)`: layer scales (initialised to 1e-6,
  which would make every block an identity) U(0.2, 1.0), LayerNorm gammas
  x U(0.8, 1.2), betas + N(0, 0.1), biases + N(0, 0.02); kernels x 10, so that
  each block's branch is of the size of its input.
* `encoder.npz`: `s65/images`, the kMaX reference's padded input
  (`s65/input/image_0_255` of INPUT_NPZ) normalised as deeplab2 does
  (`x / 127.5 - 1`), and the encoder's endpoints on it, `s65/stageN` and
  `s65/resN` (N = 1..5); the same for `s129`.
* `variables_full_convnext_tiny.txt`: every variable of the full kMaX-DeepLab
  ConvNeXt-T COCO model (`configs/coco/kmax_deeplab/kmax_meta_convnext_tiny_os32`)
  as its trainer checkpoint names it, with its shape.
* `params_full.json`: trainable and non-trainable parameter counts of the
  full COCO models with ConvNeXt-T, -S, -B and -L.

It needs deeplab2 importable and imports nothing from keras_maxdeeplab.
"""

import json
import os
import sys
import tempfile

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from deeplab2 import config_pb2  # noqa: E402
from deeplab2.data import dataset  # noqa: E402
from deeplab2.model.pixel_encoder import convnext  # noqa: E402
from deeplab2.trainer import train_lib  # noqa: E402
from google.protobuf import text_format  # noqa: E402

DEPTHS = (1, 1, 2, 1)
DIMS = (8, 16, 32, 64)
SIZES = ("tiny", "small", "base", "large")


def perturb(model, seed=1234):
    random = np.random.RandomState(seed)
    for variable in model.weights:
        value = variable.numpy()
        name = variable.name.split("/")[-1].split(":")[0]
        if name == "layer_scale":
            value = random.uniform(0.2, 1.0, value.shape)
        elif name == "gamma":
            value = value * random.uniform(0.8, 1.2, value.shape)
        elif name == "beta":
            value = value + random.normal(0.0, 0.1, value.shape)
        elif name == "bias":
            value = value + random.normal(0.0, 0.02, value.shape)
        elif name == "kernel":
            value = value * 10.0
        variable.assign(value.astype(np.float32))


def tiny_encoder(inputs, out):
    tf.keras.utils.set_random_seed(0)
    model = convnext.ConvNeXt(
        name="convnext_tiny_reference",
        depths=DEPTHS,
        dims=DIMS,
        drop_path_keep_prob=1.0,
        zero_padding_for_downstream=True,
    )
    model(tf.keras.Input(shape=(65, 65, 3)))
    perturb(model)
    tf.train.Checkpoint(encoder=model).write(os.path.join(out, "ckpt", "ckpt-0"))
    arrays = {}
    for crop in (65, 129):
        image = inputs[f"s{crop}/input/image_0_255"].astype(np.float32)
        normalized = image / np.float32(127.5) - np.float32(1.0)
        arrays[f"s{crop}/images"] = normalized
        endpoints = model(tf.constant(normalized), training=False)
        for key, value in endpoints.items():
            arrays[f"s{crop}/{key}"] = value.numpy()
    np.savez_compressed(os.path.join(out, "encoder.npz"), **arrays)


def full_model(size):
    root = os.path.dirname(os.path.dirname(dataset.__file__))
    path = os.path.join(root, "configs", "coco", "kmax_deeplab", f"kmax_meta_convnext_{size}_os32.textproto")
    with open(path) as f:
        config = text_format.Parse(f.read(), config_pb2.ExperimentOptions())
    crop = [65, 65]
    config.train_dataset_options.crop_size[:] = crop
    config.model_options.backbone.ClearField("pretrained_weights")
    model = train_lib.create_deeplab_model(config, dataset.MAP_NAME_TO_DATASET_INFO["coco_panoptic"])
    train_lib.build_deeplab_model(model, crop)
    return model


def full_models(out):
    counts = {}
    for size in SIZES:
        model = full_model(size)
        counts[f"kmax_convnext_{size}"] = {
            "trainable": int(sum(np.prod(v.shape) for v in model.trainable_weights)),
            "non_trainable": int(sum(np.prod(v.shape) for v in model.non_trainable_weights)),
        }
        if size == "tiny":
            with tempfile.TemporaryDirectory() as folder:
                prefix = tf.train.Checkpoint(**model.checkpoint_items).write(os.path.join(folder, "ckpt"))
                listed = tf.train.list_variables(prefix)
            with open(os.path.join(out, "variables_full_convnext_tiny.txt"), "w") as f:
                f.write("# checkpoint_key\tshape (tf.train.list_variables of the full kMaX-DeepLab "
                        "ConvNeXt-T COCO model's checkpoint items)\n")
                for key, shape in listed:
                    f.write(f"{key}\t{list(shape)}\n")
        print(size, counts[f"kmax_convnext_{size}"], flush=True)
        del model
    with open(os.path.join(out, "params_full.json"), "w") as f:
        json.dump(counts, f, indent=1)
        f.write("\n")


def main(input_npz, out):
    os.makedirs(out, exist_ok=True)
    tiny_encoder(np.load(input_npz), out)
    full_models(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
