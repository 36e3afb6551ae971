"""
Title: Fine-tuning MaX-DeepLab on your own panoptic dataset
Author: keras-maxdeeplab contributors
Date created: 2026/12/01
Last modified: 2026/12/01
Description: Your data in COCO panoptic format, your categories, deeplab2's recipe, `fit` with streaming PQ, on JAX, TensorFlow or PyTorch.
Accelerator: GPU
"""

"""
## Introduction

MaX-DeepLab predicts a set of class-labelled masks directly, so fine-tuning it on a new
dataset needs only three things: the data in COCO panoptic format, the dataset's category
list (which classes are *things*, counted instance by instance, and which are *stuff*), and
a pretrained preset whose class heads are replaced for those categories.

This guide walks through all of it:

1. write a small dataset in COCO panoptic format and give it our own categories;
2. load a pretrained model with new class heads (`from_preset(..., categories=...)`);
3. train with deeplab2's recipe (`compile(learning_rate=..., training_steps=...)`) and a
   streaming panoptic-quality metric, with Keras callbacks;
4. measure PQ before and after with the official COCO rules, save the result as a preset
   and load it back.

The script is backend-agnostic: run it with `KERAS_BACKEND=jax`, `tensorflow` or `torch`.

**Scale.** With `GUIDES_SMALL=1` the guide uses tiny images, few steps and a small
substitute preset (the tiny MaX-DeepLab embedded in the package), so it runs in about a
minute on a laptop CPU; this is how the project's tests run it on every backend. Without
it, it fine-tunes `max_deeplab_s_coco` (downloaded from Hugging Face on first use) at
deeplab2's 641x641 crop, which wants an accelerator.
"""

"""
## Setup
"""

import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import matplotlib.pyplot as plt
import numpy as np

import keras_maxdeeplab as kmd
from keras_maxdeeplab.data import COCOPanopticDataset
from keras_maxdeeplab.data import write_synthetic_panoptic_dataset
from keras_maxdeeplab.evaluation import evaluate_dataset
from keras_maxdeeplab.evaluation import format_results
from keras_maxdeeplab.visualization import coco_panoptic_to_segments
from keras_maxdeeplab.visualization import plot_panoptic

SMALL = os.environ.get("GUIDES_SMALL") == "1"
if SMALL:
    # The embedded tiny MaX-DeepLab (129x129 inputs), trained on synthetic scenes.
    PRESET, CROP, IMAGE_SIZE = "max_deeplab_tiny_synthetic", 129, (128, 128)
    TRAIN_IMAGES, VAL_IMAGES, BATCH, STEPS, STEPS_PER_EPOCH = 64, 8, 4, 40, 20
    # A 40-step schedule needs a higher peak rate than deeplab2's 1e-3 to train new heads.
    LEARNING_RATE = 3e-3
else:
    PRESET, CROP, IMAGE_SIZE = "max_deeplab_s_coco", 641, (480, 640)
    TRAIN_IMAGES, VAL_IMAGES, BATCH, STEPS, STEPS_PER_EPOCH = 2000, 96, 8, 5000, 500
    LEARNING_RATE = 1e-3

keras.utils.set_random_seed(0)
print(f"backend: {keras.backend.backend()}, scale: {'small' if SMALL else 'full'}")
print(f"preset: {PRESET}")

"""
## Your dataset in COCO panoptic format

A COCO panoptic dataset is a folder of images, a folder of PNGs whose pixels encode
segment ids (`R + 256 G + 256^2 B`, 0 = void), and a JSON file listing the `categories`
and, per image, the `segments_info` (segment id, category id, `iscrowd`, area, bbox).

We write one with `write_synthetic_panoptic_dataset`: scenes of shapes on textured
bands. A training set and a held-out validation set come from different seeds.
"""

train_paths = write_synthetic_panoptic_dataset(
    "my_dataset/train", TRAIN_IMAGES, image_size=IMAGE_SIZE, seed=10
)
val_paths = write_synthetic_panoptic_dataset(
    "my_dataset/val", VAL_IMAGES, image_size=IMAGE_SIZE, seed=11
)
with open(train_paths.panoptic_json) as f:
    annotations = json.load(f)
print(len(annotations["images"]), "training images")
print("first annotation:", json.dumps(annotations["annotations"][0])[:300], "...")

"""
### Your categories and thing/stuff split

The categories are whatever your JSON says. Here we make the dataset ours: the red circles
become `ball`, every polygon (rectangle, triangle, star) becomes `block`, and the four
background bands keep their names under new ids. `ball` and `block` are *things*: each
instance is its own segment; the bands are *stuff*: one segment per category and image.

Relabelling a thing category only changes `category_id` in the JSON; the PNGs (segment
ids) stay as they are.
"""

MY_CATEGORIES = [
    {"id": 1, "name": "ball", "isthing": 1, "color": [220, 50, 50]},
    {"id": 2, "name": "block", "isthing": 1, "color": [150, 70, 210]},
    {"id": 11, "name": "sky", "isthing": 0, "color": [140, 195, 240]},
    {"id": 12, "name": "grass", "isthing": 0, "color": [70, 150, 60]},
    {"id": 13, "name": "water", "isthing": 0, "color": [35, 80, 150]},
    {"id": 14, "name": "sand", "isthing": 0, "color": [215, 190, 135]},
]
# The writer's category ids -> ours.
NEW_ID = {1: 1, 2: 2, 3: 2, 4: 2, 101: 11, 102: 12, 103: 13, 104: 14}


def relabel(panoptic_json):
    with open(panoptic_json) as f:
        data = json.load(f)
    data["categories"] = MY_CATEGORIES
    for annotation in data["annotations"]:
        for segment in annotation["segments_info"]:
            segment["category_id"] = NEW_ID[segment["category_id"]]
    with open(panoptic_json, "w") as f:
        json.dump(data, f)


relabel(train_paths.panoptic_json)
relabel(val_paths.panoptic_json)

train_data = COCOPanopticDataset(*train_paths)
val_data = COCOPanopticDataset(*val_paths)
print("categories:", [(c["id"], c["name"], "thing" if c["isthing"] else "stuff")
                      for c in train_data.categories])
print("contiguous thing classes:", train_data.thing_class_ids)

"""
`COCOPanopticDataset` checks every sample against its JSON (missing files, ids absent from
the PNG, wrong areas, unknown categories: pass `on_error="skip"` to leave bad samples out)
and maps the category ids to deeplab2's contiguous classes: class `k` is the `k`-th
category by id, 0 is void.

`as_dataset` turns it into a `tf.data` pipeline that feeds `fit` on every backend. For
training it applies deeplab2's augmentation (random scale 0.5-1.5, crop, flip; seeded and
stateless) and builds MaX-DeepLab's targets; with `training=False` it is deeplab2's
evaluation preprocessing.
"""

train_ds = train_data.as_dataset(crop_size=CROP, batch_size=BATCH, seed=0)
# Endless, in a fixed order: each validation below reads every image once.
val_ds = val_data.as_dataset(crop_size=CROP, batch_size=BATCH, training=False, repeat=True)
images, targets = next(iter(train_ds))
print("images:", tuple(images.shape))
for key, value in targets.items():
    print(f"  {key:22s} {tuple(value.shape)} {value.dtype.name}")

"""
## A pretrained model with new class heads

`from_preset(..., categories=...)` keeps every weight that does not depend on the classes
(backbone, pixel-space head, mask head, semantic decoder) and re-initialises the
transformer class head and the last layer of the semantic head for our 6 categories
(+ void, + "no object"). Predictions then come back in our ids and names.
"""

model = kmd.MaXDeepLab.from_preset(PRESET, categories=train_data.categories)
print("classes including void:", model.num_classes)
print("class head output:", model.output["transformer_class_logits"].shape)
print("post-processing:", model.postprocess_options)

"""
### Before fine-tuning

`evaluate_dataset` runs `predict_panoptic` on every validation image and scores it
against the ground-truth PNGs with the official COCO rules (the same numbers `pq_compute`
gives on exported predictions). With fresh class heads no slot is confident about any of
our categories yet.
"""

before, _ = evaluate_dataset(model, val_data)
print(format_results(before))

"""
## deeplab2's recipe and `fit`

`compile(learning_rate=..., training_steps=...)` sets up deeplab2's MaX-DeepLab recipe:
Adam, linear warm-up then polynomial decay to 0 at `training_steps`, the backbone at 0.1x
the learning rate, and the MaX-DeepLab loss (PQ-style class and mask terms with Hungarian
matching, mask-id cross-entropy, instance discrimination, auxiliary semantic loss). Each
loss term is reported as a metric.

`model.panoptic_quality()` is a streaming PQ metric with this model's classes and
post-processing; it reads `panoptic_gt` from the targets, so it runs on the validation
set at the end of every epoch. Any Keras callback works; here one keeps the weights with
the best validation PQ and one logs every epoch to CSV.
"""

model.compile(
    learning_rate=LEARNING_RATE,
    training_steps=STEPS,
    warmup_steps=STEPS // 10,
    metrics=[model.panoptic_quality()],
)
callbacks = [
    keras.callbacks.ModelCheckpoint(
        "checkpoints/best.weights.h5",
        monitor="val_panoptic_quality",
        mode="max",
        save_best_only=True,
        save_weights_only=True,
    ),
    keras.callbacks.CSVLogger("training_log.csv"),
]
os.makedirs("checkpoints", exist_ok=True)
start = time.time()
history = model.fit(
    train_ds,
    validation_data=val_ds,
    validation_steps=VAL_IMAGES // BATCH,
    steps_per_epoch=STEPS_PER_EPOCH,
    epochs=STEPS // STEPS_PER_EPOCH,
    callbacks=callbacks,
    verbose=2,
)
print(f"trained {STEPS} steps in {time.time() - start:.0f}s on {keras.backend.backend()}")

"""
The training stream is endless (deeplab2 trains by steps), so `steps_per_epoch` sets how
often Keras reports and validates. The total loss and its largest terms:
"""

figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for term in ("loss", "pq_style_loss_class_term", "mask_id_cross_entropy_loss", "semantic_loss"):
    axes[0].plot(history.history[term], label=term)
axes[0].set_xlabel("epoch")
axes[0].legend(fontsize=8)
axes[1].plot(history.history["val_panoptic_quality"], marker="o")
axes[1].set_xlabel("epoch")
axes[1].set_ylabel("validation PQ (streaming)")
plt.tight_layout()
plt.show()
print("loss per epoch:", [round(v, 3) for v in history.history["loss"]])
print("validation PQ per epoch:", [round(v, 3) for v in history.history["val_panoptic_quality"]])

"""
## After fine-tuning

The same evaluation as before, on the same held-out images, at their own size:
"""

after, predictions = evaluate_dataset(model, val_data)
print(format_results(after))
print(f"PQ before: {100 * before['All']['pq']:.1f}, after: {100 * after['All']['pq']:.1f}")

"""
A held-out image with its prediction and ground truth, in our categories:
"""

image, _ = val_data.load(0)
sample = val_data.samples[0]
ground_truth = coco_panoptic_to_segments(
    np.asarray(keras.utils.load_img(sample["panoptic_file"])),
    sample["segments_info"],
    model.categories,
)
for segment in predictions[0]["segments_info"]:
    print(f"  {segment['label']:6s} score {segment['score']:.2f} area {segment['area']}")
figure = plot_panoptic(image, predictions[0], ground_truth, categories=model.categories,
                       title="held-out image after fine-tuning")
figure.savefig("held_out_after_fine_tuning.png")
figure  # a notebook displays it

"""
## Save, reload, share

`save_to_preset` writes a keras-hub preset folder (architecture, weights, categories,
post-processing, preprocessing) that `from_preset` loads on any backend, and that
`maxdeeplab upload` or `keras_maxdeeplab.hub.upload_preset` can publish.
"""

model.compile()  # a fresh optimizer: a preset ships weights, not Adam's moments
model.save_to_preset("my_preset")
reloaded = kmd.MaXDeepLab.from_preset("my_preset")
print(sorted(os.listdir("my_preset")))
print("reloaded categories:", [c["name"] for c in reloaded.categories])
same = reloaded.predict_panoptic(image)[0]["segmentation"]
print("reloaded model segments identically:",
      bool(np.array_equal(same, predictions[0]["segmentation"])))

"""
## The same script on every backend

Nothing above is backend-specific: the data pipeline is `tf.data` (it feeds JAX and
PyTorch too), the model and loss are `keras.ops`, and the Hungarian matching runs on the
host. Run it on the backend you prefer:

```bash
KERAS_BACKEND=jax python guides/fine_tuning_max_deeplab.py
KERAS_BACKEND=tensorflow python guides/fine_tuning_max_deeplab.py
KERAS_BACKEND=torch python guides/fine_tuning_max_deeplab.py
```

The command line does the same in one call, with checkpoints and resuming:
`maxdeeplab train my_dataset/train --preset max_deeplab_s_coco --crop-size 641 --steps 20000
--output runs/mine`.
"""
