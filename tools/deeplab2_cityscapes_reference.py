"""Makes the Cityscapes reference of kMaX-DeepLab with deeplab2's own code.

    source WORKDIR/env.sh   # ../shared/tools/deeplab2/setup.sh's venv (deeplab2, TF + tf-keras)
    python tools/deeplab2_cityscapes_reference.py ../shared/reference/kmax_deeplab_tiny/io.npz \
        tests/models/deeplab2_cityscapes

deeplab2 builds kMaX-DeepLab differently when the dataset is Cityscapes
(`model/kmax_deeplab.py`): a 5-stage pixel decoder down to the stem's stride,
256 mask slots, no auxiliary semantic decoder (the semantic head reads the
stride-32 `stage5`), 19 classes with void label 255 and panoptic label
divisor 1000. This builds deeplab2's `KMaXDeepLab` from its
`configs/cityscapes/kmax_deeplab/kmax_meta_r50_os32.textproto`, reduced as
`../shared/reference/kmax_deeplab_tiny` reduces the COCO model (the same proto
knobs; while the model is constructed, deeplab2's factories get the same
reduced arguments: encoder width 0.0625, stem 0.125, layers 0.5; transformer
expansion 0.125, FFN 16) with a 5-stage pixel decoder of dims
(32, 16, 8, 4, 2) and blocks (1, 2, 1, 1, 1), at a non-square 65x129 crop.

Weights: deeplab2's initialisers (seed 0), then, so that masks pass the
post-processing thresholds: the final transformer class head's kernel x 30
and its class biases + 4 + N(0, 1) (`np.random.RandomState(1234)`), the
mask logits' batch-norm gamma x 300.

Writes into the output folder:
* `ckpt/`: the model's checkpoint items as deeplab2's trainer saves them.
* `io.npz`: `images` (the first 65 rows of the kMaX reference's 129x129
  input, `s129/input/image_0_255` of INPUT_NPZ, normalised `x / 127.5 - 1`),
  `encoder/stageN`, `pixel_decoder/decoder_stageN` and `decoder_output`,
  `output/<key>` (the four outputs), and deeplab2's post-processed maps
  `postprocess/<key>` with the Cityscapes evaluator options and
  `postprocess_tuned/<key>` with `TUNED` (deeplab2's ids: void 255, divisor 1000).
* `variables_full_r50.txt`: every variable of the full Cityscapes ResNet-50
  model's checkpoint, with its shape.
* `params_full.json`: trainable and non-trainable parameter counts of the six
  full Cityscapes models (ResNet-50, Axial-ResNet-50, ConvNeXt-T/S/B/L).

It needs deeplab2 importable and imports nothing from keras_maxdeeplab.
"""

import contextlib
import functools
import json
import os
import sys
import tempfile

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from deeplab2 import config_pb2  # noqa: E402
from deeplab2.data import dataset  # noqa: E402
from deeplab2.model import builder  # noqa: E402
from deeplab2.model.pixel_decoder import kmax as kmax_pixel_decoder  # noqa: E402
from deeplab2.model.pixel_encoder import axial_resnet  # noqa: E402
from deeplab2.model.transformer_decoder import kmax as kmax_transformer_decoder  # noqa: E402
from deeplab2.trainer import train_lib  # noqa: E402
from google.protobuf import text_format  # noqa: E402

CROP = (65, 129)
DATASET = dataset.MAP_NAME_TO_DATASET_INFO["cityscapes_panoptic"]
# Evaluator options giving segments on this small random model.
TUNED = {
    "pixel_confidence_threshold": 0.1,
    "transformer_class_confidence_threshold_thing": 0.1,
    "transformer_class_confidence_threshold_stuff": 0.1,
    "overlapping_threshold": 0.5,
    "thing_area_limit": 4,
    "stuff_area_limit": 8,
}
BACKBONES = {
    "r50": "kmax_meta_r50_os32",
    "axial_r50": "kmax_meta_axial_r50_os32",
    "convnext_tiny": "kmax_meta_convnext_tiny_os32",
    "convnext_small": "kmax_meta_convnext_small_os32",
    "convnext_base": "kmax_meta_convnext_base_os32",
    "convnext_large": "kmax_meta_convnext_large_os32",
}


def load_config(name, crop):
    root = os.path.dirname(os.path.dirname(dataset.__file__))
    path = os.path.join(root, "configs", "cityscapes", "kmax_deeplab", f"{name}.textproto")
    with open(path) as f:
        config = text_format.Parse(f.read(), config_pb2.ExperimentOptions())
    for options in (config.train_dataset_options, config.eval_dataset_options):
        options.crop_size[:] = list(crop)
    config.model_options.ClearField("initial_checkpoint")
    config.model_options.backbone.ClearField("pretrained_weights")
    return config


@contextlib.contextmanager
def tiny_construction():
    """deeplab2's factories with the reduced arguments, while the model is built."""
    saved = (
        axial_resnet.get_model,
        builder.create_kmax_meta_pixel_decoder,
        kmax_transformer_decoder.transformer_decoder_block,
    )
    axial_resnet.get_model = functools.partial(
        saved[0], width_multiplier=0.0625, stem_width_multiplier=0.125, backbone_layer_multiplier=0.5
    )

    def pixel_decoder(norm_layer, high_resolution_output_stride=4):
        assert high_resolution_output_stride == 2  # deeplab2's Cityscapes choice.
        return kmax_pixel_decoder.KMaXPixelDecoder(
            name="kmax_pixel_decoder",
            norm_layer=norm_layer,
            dims=(32, 16, 8, 4, 2),
            num_blocks=(1, 2, 1, 1, 1),
            block_type=("axial", "axial", "bottleneck", "bottleneck", "bottleneck"),
        )

    builder.create_kmax_meta_pixel_decoder = pixel_decoder
    block = saved[2]
    kmax_transformer_decoder.transformer_decoder_block = functools.partial(
        block,
        transformer_expansion=0.125,
        dual_path_transformer_layer_config={
            **block.keywords["dual_path_transformer_layer_config"],
            "feed_forward_network_channels": 16,
        },
    )
    try:
        yield
    finally:
        (
            axial_resnet.get_model,
            builder.create_kmax_meta_pixel_decoder,
            kmax_transformer_decoder.transformer_decoder_block,
        ) = saved


def tiny_config():
    config = load_config(BACKBONES["r50"], CROP)
    options = config.model_options
    options.decoder.decoder_channels = 32
    options.decoder.aspp_channels = 16
    options.max_deeplab.pixel_space_head.output_channels = 16
    options.max_deeplab.pixel_space_head.head_channels = 32
    options.max_deeplab.auxiliary_low_level[0].channels_project = 16
    options.max_deeplab.auxiliary_low_level[1].channels_project = 8
    options.max_deeplab.auxiliary_semantic_head.head_channels = 32
    options.max_deeplab.instance_discrimination_sample_k = 64
    return config


def postprocessed(model, config, outputs, overrides):
    config = config_pb2.ExperimentOptions.FromString(config.SerializeToString())
    evaluator = config.evaluator_options
    for key, value in overrides.items():
        if key in ("pixel_confidence_threshold", "thing_area_limit", "stuff_area_limit"):
            setattr(evaluator, key, value)
        else:
            setattr(evaluator.maskwise_postprocessing, key, value)
    from deeplab2.model.post_processor import post_processor_builder

    processor = post_processor_builder.get_post_processor(config, DATASET)
    return {key: value.numpy() for key, value in processor(outputs).items()}


def tiny_model(inputs, out):
    config = tiny_config()
    tf.keras.utils.set_random_seed(0)
    with tiny_construction():
        model = train_lib.create_deeplab_model(config, DATASET)
    train_lib.build_deeplab_model(model, list(CROP))
    # Peakier class and mask distributions than at initialisation, so that
    # post-processing keeps segments.
    random = np.random.RandomState(1234)
    for variable in model._predictor._transformer_class_head.weights:
        value = variable.numpy()
        if "kernel" in variable.name:
            value = value * 30.0
        else:
            value[:-1] += 4.0 + random.normal(0.0, 1.0, value[:-1].shape)
        variable.assign(value)
    norm = model._predictor._pixel_space_mask_batch_norm
    norm.gamma.assign(norm.gamma * 300.0)
    tf.train.Checkpoint(**model.checkpoint_items).write(os.path.join(out, "ckpt", "ckpt-0"))

    image = inputs["s129/input/image_0_255"][:, : CROP[0]].astype(np.float32)
    normalized = image / np.float32(127.5) - np.float32(1.0)
    arrays = {"images": normalized}
    encoder = model._pixel_encoder(tf.constant(normalized), training=False)
    decoder = model._pixel_decoder(encoder, training=False)
    transformer = model._transformer_decoder(decoder, training=False)
    outputs = model._predictor(transformer, training=False)
    for k in range(1, 6):
        arrays[f"encoder/stage{k}"] = encoder[f"stage{k}"].numpy()
    for k in range(1, 5):
        arrays[f"pixel_decoder/decoder_stage{k}"] = decoder[f"decoder_stage{k}"].numpy()
    arrays["pixel_decoder/decoder_output"] = decoder["decoder_output"].numpy()
    # The auxiliary predictions (a tuple) are a training output.
    final = {key: value for key, value in outputs.items() if isinstance(value, tf.Tensor)}
    for key, value in final.items():
        arrays[f"output/{key}"] = value.numpy()
    # The whole model's own call, to be sure the pieces above are its forward pass.
    whole = model(tf.constant(image), training=False)
    np.testing.assert_array_equal(whole["pixel_space_mask_logits"], arrays["output/pixel_space_mask_logits"])
    for prefix, overrides in (("postprocess", {}), ("postprocess_tuned", TUNED)):
        for key, value in postprocessed(model, config, final, overrides).items():
            arrays[f"{prefix}/{key}"] = value
    np.savez_compressed(os.path.join(out, "io.npz"), **arrays)
    for key, value in arrays.items():
        print(key, value.shape, value.dtype, flush=True)
    tuned = arrays["postprocess_tuned/panoptic_pred"]
    print("tuned segments", np.unique(tuned), flush=True)


def full_models(out):
    counts = {}
    for backbone, name in BACKBONES.items():
        config = load_config(name, CROP)
        model = train_lib.create_deeplab_model(config, DATASET)
        train_lib.build_deeplab_model(model, list(CROP))
        counts[f"kmax_{backbone}"] = {
            "trainable": int(sum(np.prod(v.shape) for v in model.trainable_weights)),
            "non_trainable": int(sum(np.prod(v.shape) for v in model.non_trainable_weights)),
        }
        if backbone == "r50":
            with tempfile.TemporaryDirectory() as folder:
                prefix = tf.train.Checkpoint(**model.checkpoint_items).write(
                    os.path.join(folder, "ckpt")
                )
                listed = tf.train.list_variables(prefix)
            with open(os.path.join(out, "variables_full_r50.txt"), "w") as f:
                f.write(
                    "# checkpoint_key\tshape (tf.train.list_variables of the full kMaX-DeepLab "
                    "ResNet-50 Cityscapes model's checkpoint items)\n"
                )
                for key, shape in listed:
                    f.write(f"{key}\t{list(shape)}\n")
        print(backbone, counts[f"kmax_{backbone}"], flush=True)
        del model
    with open(os.path.join(out, "params_full.json"), "w") as f:
        json.dump(counts, f, indent=1)
        f.write("\n")


def main(input_npz, out):
    os.makedirs(out, exist_ok=True)
    tiny_model(np.load(input_npz), out)
    if "--tiny-only" not in sys.argv:
        full_models(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
