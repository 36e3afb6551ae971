"""Runs deeplab2's own MaX-DeepLab on one input: the reference side of the
parity check in `tools/make_presets.py`.

    TF_USE_LEGACY_KERAS=1 python tools/deeplab2_outputs.py \
        CONFIG.textproto CHECKPOINT_PREFIX INPUT.npy OUTPUT.npz

`INPUT.npy` is `[H, W, 3]` float32 in 0..255, already resized and padded to
the crop (what deeplab2's `DeepLab.call` receives). `OUTPUT.npz` gets the raw
outputs and the post-processed maps deeplab2 returns.

It runs in a process of its own: deeplab2 is written for the legacy tf.keras
(`TF_USE_LEGACY_KERAS=1` with the `tf-keras` package, e.g. for
`SyncBatchNormalization`), which cannot share a process with Keras 3. It needs
deeplab2 importable: a clone of github.com/google-research/deeplab2 with its
protos compiled (`protoc deeplab2/*.proto --python_out=.`) and the clone's
parent folder on `PYTHONPATH`. It imports nothing from keras_maxdeeplab.
"""

import os
import sys

# Must be set before TensorFlow is imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from deeplab2 import config_pb2  # noqa: E402
from deeplab2.data import dataset  # noqa: E402
from deeplab2.model import deeplab  # noqa: E402
from google.protobuf import text_format  # noqa: E402

OUTPUT_KEYS = (
    "pixel_space_mask_logits",
    "transformer_class_logits",
    "pixel_space_normalized_feature",
    "semantic_logits",
    "panoptic_pred",
    "semantic_pred",
    "instance_pred",
)


def run(config_path, checkpoint_prefix, input_path, output_path):
    with tf.io.gfile.GFile(config_path) as f:
        config = text_format.Parse(f.read(), config_pb2.ExperimentOptions())
    # As deeplab2's export_model.py: drop path is a training-only layer.
    config.model_options.backbone.drop_path_keep_prob = 1.0
    descriptor = dataset.MAP_NAME_TO_DATASET_INFO[config.eval_dataset_options.dataset]
    model = deeplab.DeepLab(config, descriptor)
    image = np.load(input_path).astype("float32")[None]
    # Built on a symbolic input first, as deeplab2's train_lib.build_deeplab_model.
    model(tf.keras.Input(image.shape[1:], batch_size=1), training=False)
    status = tf.train.Checkpoint(**model.checkpoint_items).read(checkpoint_prefix)
    status.expect_partial().assert_existing_objects_matched()
    outputs = model(tf.constant(image), training=False)
    np.savez(output_path, **{key: outputs[key].numpy() for key in OUTPUT_KEYS if key in outputs})


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    run(*sys.argv[1:])
