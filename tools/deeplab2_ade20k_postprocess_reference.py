"""Makes the ADE20K post-processing reference with deeplab2's own MaX-DeepLab post-processor.

    source WORKDIR/env.sh   # ../shared/tools/deeplab2/setup.sh's venv (deeplab2, TF + tf-keras)
    python tools/deeplab2_ade20k_postprocess_reference.py tests/postprocessing/deeplab2_ade20k

ADE20K is the first class layout where deeplab2's channel order (its 100 thing
ids first, then its 50 stuff ids, then "no object") is not the identity: its
things are interspersed among the stuff ids 1..150. One synthetic, seeded
batch of confident logits goes through deeplab2's `max_deeplab.PostProcessor`,
built from deeplab2's ADE20K kMaX-DeepLab config
(`configs/ade20k/kmax_deeplab/kmax_meta_r50_os32.textproto`, eval crop set to
65x65) and its `ade20k_panoptic` dataset descriptor (thing ids, void label 0,
label divisor 1000), once per case:
* `maskwise_ade20k`: the config's own evaluator options (maskwise; pixel 0.4,
  class thresholds thing 0.4 / stuff 0.4, overlap 0.8, reorder weights 1 / 1,
  area limits 0 / 0).
* `pixelwise_defaults`: `transformer_post_processing: "pixelwise"` and every
  other post-processing option cleared to `evaluator.proto`'s defaults (class
  0.7, pixel 0.4, area limits 0 / 0).
* `pixelwise_area_limits`: the same with MaX-DeepLab's COCO-641 area limits
  (thing 100, stuff 1600).

Writes into the output folder `cases.npz` (inputs once, per case the config
as JSON and the post-processor's five outputs) and `README.md`. Before writing
it reruns every case on inputs perturbed by 1e-3 and checks the id maps do not
change, so that the layout, not float noise, decides every outcome.

It needs deeplab2 importable and imports nothing from keras_maxdeeplab.
"""

import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from deeplab2 import common  # noqa: E402
from deeplab2 import config_pb2  # noqa: E402
from deeplab2.data import ade20k_constants  # noqa: E402
from deeplab2.data import dataset  # noqa: E402
from deeplab2.model import utils  # noqa: E402
from deeplab2.model.post_processor import max_deeplab  # noqa: E402
from google.protobuf import text_format  # noqa: E402

DEEPLAB2_COMMIT = "64bc1c1a6505b6cd1779b65f9127180840b8a4fa"
CONFIG = os.path.join("configs", "ade20k", "kmax_deeplab", "kmax_meta_r50_os32.textproto")
DATASET = dataset.ADE20K_PANOPTIC_INFORMATION
CROP = 65  # mask logits at stride 4: 17x17
GRID = 17
# Mask logits inside / outside a slot's region; outside, slot s is 0.1 * s
# lower, so that where every detected slot is outside, the first one is the
# argmax by a margin (deeplab2's mask id there).
HIGH, LOW = 8.0, -8.0
OUTPUTS = ("panoptic_pred", "instance_pred", "semantic_pred", "instance_scores", "semantic_scores")
ID_MAPS = ("panoptic_pred", "instance_pred", "semantic_pred")


def box(rows, cols):
    region = np.zeros((GRID, GRID), bool)
    region[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = True
    return region


def pixel(row, col):
    return box((row, row), (col, col))


# Image 0, on the 17x17 grid of mask logits: (name, ADE20K class id, class
# confidence (None: "no object" wins), region, extra mask logit in the region,
# what it tests).
# Confidences are distinct so that maskwise's reorder score has no near-ties.
SLOTS = (
    ("wall", 1, 0.99, box((0, 2), (0, 16)), 0.0, "stuff id 1, before every thing id"),
    ("no_object", 6, None, box((0, 2), (12, 16)), 2.0,
     "'no object' logit 12 over ceiling (6) at 3: undetected, void where it outbids the "
     "wall; ceiling there in the semantic pass only"),
    ("person_a", 13, 0.985, box((3, 8), (0, 3)), 0.3, "thing id 13 (channel 3)"),
    ("low_confidence", 8, 0.3, box((3, 8), (4, 4)), 0.6,
     "bed at 0.3, under every class threshold: its column is void"),
    ("person_b", 13, 0.98, box((3, 8), (5, 8)), 0.1, "second instance of person"),
    ("chair", 20, 0.9, box((3, 8), (6, 8)), 0.3,
     "thing inside person_b, +0.2 over it: owns that part pixelwise; maskwise it is "
     "pasted after person_b and loses all its pixels (> 20%), so it is dropped"),
    ("grass", 10, 0.55, box((3, 8), (9, 9)), 1.3,
     "stuff id 10 at 0.55: kept by maskwise (0.4), void pixelwise (0.7); its mask logit is "
     "high enough that no earlier mask takes its border pixels"),
    ("bed", 8, 0.975, box((3, 8), (10, 13)), 0.35, "thing id 8 (channel 0)"),
    ("flag", 150, 0.97, pixel(5, 15), 0.7,
     "thing id 150 (channel 99, the last thing) on one grid cell: under thing area limit 100"),
    ("pier", 141, 0.965, box((3, 8), (14, 16)) & ~pixel(5, 15), 0.5,
     "stuff id 141 (channel 147, after every thing id): under stuff area limit 1600"),
    ("sidewalk_left", 12, 0.96, box((9, 16), (0, 7)), 0.0,
     "stuff id 12, first half: under 1600 alone"),
    ("sidewalk_right", 12, 0.955, box((9, 16), (8, 14)), 0.2,
     "stuff id 12, second half: merged with the first, over 1600 together"),
    ("car", 21, 0.93, box((9, 16), (15, 16)) | box((15, 16), (14, 14)), 0.1,
     "thing overlapping sidewalk_right on 2 of 18 cells: maskwise keeps it without them"),
    ("tree", 5, 0.95, np.zeros((GRID, GRID), bool), 0.0,
     "confident stuff with no pixels (mask score 0)"),
)


def class_ids():
    """deeplab2's class id of each class-head channel (the last is "no object")."""
    things = list(DATASET.class_has_instances_list)
    stuff = utils.get_stuff_class_ids(DATASET.num_classes - 1, things, DATASET.ignore_label)
    return things + stuff


def inputs(seed=0):
    """`[2, 17, 17, N]` mask logits and `[2, N, 151]` class logits: image 0 is
    the scene of SLOTS, image 1 the same with every slot's "no object" logit
    raised to 12 (no class confidence reaches 0.1)."""
    random = np.random.RandomState(seed)
    channels = class_ids()
    num_slots, num_channels = len(SLOTS), len(channels) + 1
    mask = random.normal(0.0, 0.01, (GRID, GRID, num_slots)) + LOW - 0.1 * np.arange(num_slots)
    classes = random.normal(0.0, 0.3, (num_slots, num_channels))
    for slot, (_, class_id, confidence, region, extra, _) in enumerate(SLOTS):
        mask[region, slot] += HIGH - LOW + 0.1 * slot + extra
        channel = channels.index(class_id)
        if confidence is None:  # "no object", with class_id the runner-up
            classes[slot, -1] = 12.0
            classes[slot, channel] = 3.0
            continue
        # The logit that makes the softmax probability of the class exactly `confidence`.
        others = np.exp(np.delete(classes[slot], channel)).sum()
        classes[slot, channel] = np.log(confidence / (1.0 - confidence) * others)
    undetected = classes.copy()
    undetected[:, -1] = 12.0
    mask = np.stack([mask, mask]).astype(np.float32)
    return mask, np.stack([classes, undetected]).astype(np.float32)


def experiment_config(case):
    root = os.path.dirname(os.path.dirname(dataset.__file__))
    with open(os.path.join(root, CONFIG)) as f:
        config = text_format.Parse(f.read(), config_pb2.ExperimentOptions())
    config.eval_dataset_options.crop_size[:] = [CROP, CROP]
    options = config.evaluator_options
    if case.startswith("pixelwise"):
        options.transformer_post_processing = "pixelwise"
        for field in ("maskwise_postprocessing", "transformer_class_confidence_threshold",
                      "pixel_confidence_threshold", "thing_area_limit", "stuff_area_limit"):
            options.ClearField(field)
    if case == "pixelwise_area_limits":
        options.thing_area_limit = 100
        options.stuff_area_limit = 1600
    return config


def config_json(config):
    """The post-processing options deeplab2 read, under its names."""
    options = config.evaluator_options

    def number(value):
        return float(f"{value:.7g}")

    keys = ["transformer_post_processing", "pixel_confidence_threshold", "thing_area_limit",
            "stuff_area_limit"]
    result = {key: getattr(options, key) for key in keys}
    if options.transformer_post_processing == "maskwise":
        maskwise = options.maskwise_postprocessing
        for key in ("transformer_class_confidence_threshold_thing",
                    "transformer_class_confidence_threshold_stuff", "overlapping_threshold",
                    "reorder_class_weight", "reorder_mask_weight"):
            result[key] = getattr(maskwise, key)
    else:
        result["transformer_class_confidence_threshold"] = (
            options.transformer_class_confidence_threshold)
    result = {key: number(v) if isinstance(v, float) else v for key, v in result.items()}
    result.update(
        eval_crop_size=list(config.eval_dataset_options.crop_size),
        label_divisor=DATASET.panoptic_label_divisor,
        void_label=DATASET.ignore_label,
    )
    return result


def run(post_processor, mask_logits, class_logits):
    outputs = post_processor({
        common.PRED_PIXEL_SPACE_MASK_LOGITS_KEY: tf.constant(mask_logits),
        common.PRED_TRANSFORMER_CLASS_LOGITS_KEY: tf.constant(class_logits),
    })
    return {key: outputs[key].numpy() for key in OUTPUTS}


def segments(panoptic):
    """`id (class name): pixels` for each segment of one panoptic map."""
    names = {m["id"]: m["name"] for m in ade20k_constants.get_ade20k_meta()}
    ids, counts = np.unique(panoptic, return_counts=True)
    divisor = DATASET.panoptic_label_divisor
    return ", ".join(
        f"{i} ({'void' if i // divisor == DATASET.ignore_label else names[i // divisor]}): {n}"
        for i, n in zip(ids, counts)
    )


README = """# deeplab2's MaX-DeepLab post-processor on ADE20K's class layout

Made by unmodified deeplab2 (google-research/deeplab2, commit `{commit}`), TensorFlow
{tf_version} + tf-keras, with

    source WORKDIR/env.sh   # ../shared/tools/deeplab2/setup.sh's venv
    python tools/deeplab2_ade20k_postprocess_reference.py tests/postprocessing/deeplab2_ade20k

(the script's docstring says how the cases are built). ADE20K: 151 class-head channels, 150 classes
and "no object" last; channel k is class `thing_class_ids + stuff_class_ids` [k] (deeplab2's order,
its 100 things first), e.g. channel 0 is bed (8), 3 person (13), 99 flag (150), 100 wall (1),
108 sidewalk (12), 147 pier (141). deeplab2 decides thing vs stuff by the channel (`< 100`), not by
the class id.

## cases.npz
- `in/pixel_space_mask_logits` `[2, 17, 17, {num_slots}]` and `in/transformer_class_logits`
  `[2, {num_slots}, 151]` float32: the inputs of every case. Image 0 is the scene below; image 1 is
  the same with every slot's "no object" logit raised to 12, so nothing is detected: deeplab2's
  empty maps, but the semantic pass (no thresholds) still gives image 0's classes.
- `thing_class_ids` (100,) int32: deeplab2's ADE20K thing ids
  (`ade20k_constants.get_ade20k_class_has_instances_list()`); `class_ids` (150,) int32: the class id
  of each channel but the last.
- `<case>/config`: JSON string of the post-processing options deeplab2 used (its names, which are
  also our keyword names), the eval crop `[65, 65]`, `label_divisor` 1000, `void_label` 0.
- `<case>/out/{{panoptic_pred, instance_pred, semantic_pred}}` `[2, 65, 65]` int32 and
  `<case>/out/{{instance_scores, semantic_scores}}` float32: `max_deeplab.PostProcessor`'s outputs
  (`semantic_pred` from its second pass with every threshold 0).

Cases (`PostProcessor` built from `{config}` and the `ade20k_panoptic` descriptor):
- `maskwise_ade20k`: the config's options: maskwise, pixel 0.4, thing 0.4, stuff 0.4, overlap 0.8,
  reorder weights 1 / 1, area limits 0 / 0.
- `pixelwise_defaults`: pixelwise with `evaluator.proto`'s defaults: class 0.7, pixel 0.4, area
  limits 0 / 0.
- `pixelwise_area_limits`: the same with MaX-DeepLab's COCO-641 area limits, thing 100, stuff 1600.

Every case was rerun on inputs perturbed by up to 1e-3 with identical id maps.

## The scene (image 0; slot: class, class confidence, grid cells, purpose)
{slots}

## Segments of image 0 (panoptic id (class): pixels)
{segments}
"""


def main(out):
    os.makedirs(out, exist_ok=True)
    mask_logits, class_logits = inputs()
    channels = class_ids()
    arrays = {
        "in/pixel_space_mask_logits": mask_logits,
        "in/transformer_class_logits": class_logits,
        "thing_class_ids": np.array(DATASET.class_has_instances_list, np.int32),
        "class_ids": np.array(channels, np.int32),
    }
    random = np.random.RandomState(1)
    perturbed = [x + random.uniform(-1e-3, 1e-3, x.shape).astype(np.float32)
                 for x in (mask_logits, class_logits)]
    summary = []
    for case in ("maskwise_ade20k", "pixelwise_defaults", "pixelwise_area_limits"):
        config = experiment_config(case)
        post_processor = max_deeplab.PostProcessor(config, DATASET)
        outputs = run(post_processor, mask_logits, class_logits)
        again = run(post_processor, *perturbed)
        for key in ID_MAPS:
            changed = int(np.sum(outputs[key] != again[key]))
            assert changed == 0, f"{case}/{key}: {changed} pixels change under 1e-3 noise"
        arrays[f"{case}/config"] = np.array(json.dumps(config_json(config)))
        for key, value in outputs.items():
            arrays[f"{case}/out/{key}"] = value
        summary.append(f"- `{case}`: {segments(outputs['panoptic_pred'][0])}")
        print(summary[-1], flush=True)
    np.savez_compressed(os.path.join(out, "cases.npz"), **arrays)
    slots = []
    for slot, (name, class_id, confidence, region, _, purpose) in enumerate(SLOTS):
        score = "no object" if confidence is None else confidence
        slots.append(f"- {slot} `{name}` ({class_id}, channel {channels.index(class_id)}, {score}, "
                     f"{int(region.sum())} cells): {purpose}")
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(README.format(
            commit=DEEPLAB2_COMMIT, tf_version=tf.__version__, config=CONFIG,
            num_slots=len(SLOTS), slots="\n".join(slots), segments="\n".join(summary)))


if __name__ == "__main__":
    main(*sys.argv[1:])
