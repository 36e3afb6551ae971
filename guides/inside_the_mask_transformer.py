"""
Title: Inside the mask transformer: what MaX-DeepLab computes
Author: keras-maxdeeplab contributors
Date created: 2026/12/01
Last modified: 2026/12/01
Description: Mask slots, class probabilities, the Hungarian assignment and the loss terms, shown on one image.
Accelerator: None
"""

"""
## Introduction

MaX-DeepLab keeps a small set of learned *memory slots* (128 in MaX-DeepLab-S, 32 in the
tiny model used here) next to the image's pixels. Dual-path transformer blocks let the
slots and the pixels attend to each other; at the end each slot yields

* a **mask**: the similarity of every pixel's embedding with the slot's mask embedding,
  turned into a per-pixel distribution over the slots (`pixel_space_mask_logits`);
* a **class**: a distribution over the dataset's classes plus "no object"
  (`transformer_class_logits`).

Training matches the slots to the ground-truth segments with the Hungarian algorithm and
scores the match with a PQ-style loss. This guide shows each of these on one image, from
the model's documented outputs and public functions.

The model is the tiny MaX-DeepLab embedded in the package (trained on synthetic scenes
of shapes), in both scales, because the image needs annotations in the model's own
categories and the guide must run offline. `GUIDES_SMALL=1` shortens the training run of
the last section.
"""

"""
## Setup
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import matplotlib.pyplot as plt
import numpy as np

import keras_maxdeeplab as kmd
from keras_maxdeeplab.data import COCOPanopticDataset
from keras_maxdeeplab.data import SYNTHETIC_CATEGORIES
from keras_maxdeeplab.data import write_synthetic_panoptic_dataset
from keras_maxdeeplab.losses import hungarian_matching
from keras_maxdeeplab.visualization import overlay_panoptic

SMALL = os.environ.get("GUIDES_SMALL") == "1"
TRAIN_STEPS = 30 if SMALL else 300
print(f"backend: {keras.backend.backend()}, scale: {'small' if SMALL else 'full'}")
print("preset: max_deeplab_tiny_synthetic")

model = kmd.MaXDeepLab.from_preset("max_deeplab_tiny_synthetic")
CROP = model.backbone.image_shape[0]
data = COCOPanopticDataset(*write_synthetic_panoptic_dataset("scene", 1, seed=7))
# deeplab2's evaluation preprocessing and training targets for the one image.
images, y_true = next(iter(data.as_dataset(crop_size=CROP, batch_size=1, training=False)))
y_true = {key: keras.ops.convert_to_numpy(value) for key, value in y_true.items()}
image = keras.ops.convert_to_numpy(images[0]).astype("uint8")
outputs = model.predict(images, verbose=0)  # the preprocessor scales pixels to [-1, 1]
for key, value in outputs.items():
    print(f"{key:32s} {value.shape}")

"""
The outputs are at stride 4: a 129x129 input gives 33x33 maps. `semantic_logits` come from
an auxiliary semantic head, used only by the loss.

## Masks: a distribution over slots at every pixel

`pixel_space_mask_logits[..., n]` is the dot product of each pixel's (L2-normalised)
embedding with slot `n`'s mask embedding; a softmax over the slots gives, at each pixel,
the probability that it belongs to each slot's mask.
"""

mask_probs = keras.ops.convert_to_numpy(
    keras.ops.softmax(outputs["pixel_space_mask_logits"][0], axis=-1)
)  # [33, 33, slots]
class_probs = keras.ops.convert_to_numpy(
    keras.ops.softmax(outputs["transformer_class_logits"][0], axis=-1)
)  # [slots, classes + 1]: class k + 1 in channel k, "no object" last
names = [c["name"] for c in model.categories]
num_slots = class_probs.shape[0]
print(f"{num_slots} slots; each pixel's probabilities sum to",
      float(mask_probs.sum(-1).mean().round(4)))

"""
## Classes: most slots say "no object"

Each slot also predicts a class. Slots that do not describe anything in the image put
their probability on the last channel, "no object". deeplab2's post-processor keeps a slot
when its best real class has probability >= 0.7 (`transformer_class_confidence_threshold`).
"""

best_class = class_probs[:, :-1].argmax(-1)
confidence = class_probs[:, :-1].max(-1)
threshold = model.postprocess_options["transformer_class_confidence_threshold"]
kept = np.flatnonzero(confidence >= threshold)
print(f"slots above {threshold}: {len(kept)} of {num_slots}")
for n in kept:
    print(f"  slot {n:2d}: {names[best_class[n]]:10s} p={confidence[n]:.2f} "
          f"mask covers {int((mask_probs.argmax(-1) == n).sum())} of 1089 pixels")

figure, axis = plt.subplots(figsize=(10, 2.5))
order = np.argsort(-confidence)
axis.bar(range(num_slots), confidence[order], color=["C0" if c >= threshold else "C7"
                                                     for c in confidence[order]])
axis.plot(range(num_slots), class_probs[order, -1], "k.", label='p("no object")')
axis.axhline(threshold, color="C3", lw=1, label="class threshold")
axis.set_xlabel("slot (sorted by confidence)")
axis.set_ylabel("best class probability")
axis.legend(fontsize=8)
plt.show()

"""
The masks of the confident slots, each slot's probability map over the image:
"""

figure, axes = plt.subplots(1, len(kept) + 1, figsize=(2.2 * (len(kept) + 1), 2.6))
axes[0].imshow(image)
axes[0].set_title("input")
for axis, n in zip(axes[1:], kept):
    axis.imshow(mask_probs[..., n], vmin=0, vmax=1, cmap="magma")
    axis.set_title(f"slot {n}\n{names[best_class[n]]} {confidence[n]:.2f}", fontsize=9)
for axis in axes:
    axis.axis("off")
plt.show()

"""
Post-processing assigns each pixel to its most probable slot, keeps the pixel when that
slot is confident and the pixel's mask probability exceeds 0.4, and drops segments below
the area limits. `predict_panoptic` does all of it:
"""

result = model.predict_panoptic(image)[0]
figure, axes = plt.subplots(1, 2, figsize=(7, 3.5))
axes[0].imshow(mask_probs.argmax(-1), cmap="tab20", interpolation="nearest")
axes[0].set_title("most probable slot per pixel")
axes[1].imshow(overlay_panoptic(image, result["segmentation"], result["segments_info"],
                                categories=model.categories, draw_labels=True))
axes[1].set_title("predict_panoptic")
for axis in axes:
    axis.axis("off")
plt.show()

"""
## The Hungarian assignment of slots to ground-truth masks

For training, every ground-truth segment (each thing instance and each stuff class) is
matched to one slot. The cost of giving mask `i` to slot `n` is `-dice(i, n) x p_n(class
of i)`: a slot scores well when its mask overlaps the segment *and* it predicts the
segment's class. deeplab2 computes the dice on the stride-4 grid, with the ground truth
subsampled at every 4th pixel (`[::4, ::4]`) and void pixels left out; we do the same from
the targets `as_dataset` built, and solve the assignment with
`keras_maxdeeplab.losses.hungarian_matching` (the matcher the loss uses).
"""

semantic = y_true["semantic_gt"][0, ::4, ::4]
thing_id = y_true["thing_id_mask_gt"][0, ::4, ::4]
gt_masks, gt_classes = [], []
for t, label in enumerate(y_true["thing_id_class_gt"][0]):
    if label >= 0 and (thing_id == t).any():
        gt_masks.append(thing_id == t)
        gt_classes.append(int(label))
for label in np.unique(semantic):
    if label > 0 and label not in model.thing_class_ids:
        gt_masks.append(semantic == label)
        gt_classes.append(int(label))
gt_masks = np.stack(gt_masks).reshape(len(gt_masks), -1).astype("float32")  # [R, pixels]
probs = mask_probs.reshape(-1, num_slots) * (semantic.reshape(-1, 1) > 0)  # void left out
dice = 2 * gt_masks @ probs / (gt_masks.sum(1)[:, None] + probs.sum(0)[None] + 1e-5)
class_similarity = class_probs[:, np.array(gt_classes) - 1].T  # [R, slots]
costs = -dice * class_similarity
square = np.zeros((num_slots, num_slots), "float32")  # pad masks to a square: rows of 0
square[: len(gt_masks)] = costs
permutation = keras.ops.convert_to_numpy(hungarian_matching(square[None]))[0]
assigned = permutation[: len(gt_masks)].argmax(-1)
for i, n in enumerate(assigned):
    print(f"GT mask {i} ({names[gt_classes[i] - 1]:9s}) -> slot {n:2d}: dice {dice[i, n]:.2f}, "
          f"p(class) {class_similarity[i, n]:.2f}")

figure, axis = plt.subplots(figsize=(10, 2.8))
axis.imshow(-costs, cmap="viridis", aspect="auto")
axis.plot(assigned, range(len(gt_masks)), "rx", markersize=8, label="assignment")
axis.set_yticks(range(len(gt_masks)), [names[c - 1] for c in gt_classes], fontsize=8)
axis.set_xlabel("slot")
axis.set_title("matching score dice x p(class) per ground-truth mask and slot")
axis.legend(fontsize=8, loc="upper right")
plt.show()

"""
The trained model has learned to put each segment in one confident slot: the matched
slots are confident ones. A confident slot that no segment is matched to owns (almost) no
pixels, and the pixel-confidence and area rules of post-processing drop it.
"""

print("matched slots:", sorted(assigned.tolist()))
print("confident slots:", kept.tolist())
owned = mask_probs.argmax(-1)
for n in sorted(set(kept.tolist()) - set(assigned.tolist())):
    print(f"  unmatched confident slot {n}: {int((owned == n).sum())} pixels")

"""
## The loss terms

`model.compile()` builds the `MaXDeepLabLoss` of the model's classes
(`model.max_deeplab_loss`); `compute_terms` returns every term, already weighted as
deeplab2 weights them:

* `pq_style_loss_class_term`: matched slots learn their segment's class (weighted by the
  dice), the others "no object";
* `pq_style_loss_mask_dice_term`: each segment's dice loss against its matched slot's
  mask (weighted by the slot's class probability);
* `mask_id_cross_entropy_loss`: per pixel, the cross-entropy of the matched slots' masks;
* `instance_discrimination_loss`: thing pixels' embeddings should be closer to their own
  instance's mean embedding than to the others';
* `semantic_loss`: the auxiliary per-pixel semantic classification.
"""

model.compile()
terms = model.max_deeplab_loss.compute_terms(y_true, outputs)
for term, value in terms.items():
    print(f"{term:30s} {float(keras.ops.convert_to_numpy(value)[0]):.4f}")

"""
## How the terms move during training

A freshly initialised tiny MaX-DeepLab (`keras_maxdeeplab.build_model`, the
named config `max_deeplab_tiny`) trained on a few scenes with deeplab2's recipe: every
term is reported as a metric, so `fit`'s history has each of them.
"""

keras.utils.set_random_seed(0)
fresh = kmd.build_model("max_deeplab_tiny", CROP, {"categories": SYNTHETIC_CATEGORIES})
fresh.compile(learning_rate=1e-3, training_steps=TRAIN_STEPS, warmup_steps=TRAIN_STEPS // 10)
train = COCOPanopticDataset(*write_synthetic_panoptic_dataset("train", 16, seed=8))
history = fresh.fit(
    train.as_dataset(crop_size=CROP, batch_size=4, seed=0),
    steps_per_epoch=5,
    epochs=TRAIN_STEPS // 5,
    verbose=0,
)
figure, axis = plt.subplots(figsize=(8, 3.5))
for term in ("loss",) + tuple(terms)[:-1]:
    axis.plot(5 * np.arange(1, TRAIN_STEPS // 5 + 1), history.history[term], label=term)
axis.set_xlabel("training step")
axis.set_yscale("log")
axis.legend(fontsize=8)
plt.show()
for term in ("loss",) + tuple(terms)[:-1]:
    values = history.history[term]
    print(f"{term:30s} first epoch {values[0]:.4f} -> last epoch {values[-1]:.4f}")

"""
## The dual-path attention

Inside each dual-path transformer block the memory slots and the pixels exchange
information in two attentions:

* the **memory path**: each slot attends, in one softmax, to every pixel and to every
  slot (memory-to-pixel and memory-to-memory);
* the **pixel path**: each pixel attends to the slots (pixel-to-memory).

`model.backbone.dual_path_attention(x)` returns those weights for every block, per head,
at the block's own feature size (stride 16: 9x9 for a 129x129 input). It takes the
backbone's input, the images as the preprocessor normalises them.
"""

attention = model.backbone.dual_path_attention(model.preprocessor(images))
for name, weights in attention.items():
    print(name, {key: value.shape for key, value in weights.items()})
last = attention[list(attention)[-1]]  # the last block, closest to the outputs

"""
What each confident slot looks at in the last block (the weights averaged over the
heads), beside its final mask: a slot gathers its features from the pixels of the segment
it will describe. The share of each slot's attention spent on pixels (the rest goes to
the other slots) is in the titles.
"""

to_pixels = last["memory_to_pixel"][0].mean(0)  # [slots, 9, 9]
pixel_share = last["memory_to_pixel"][0].sum((-2, -1)).mean(0)  # [slots]
figure, axes = plt.subplots(2, len(kept), figsize=(2.2 * len(kept), 4.6), squeeze=False)
for column, n in enumerate(kept):
    axes[0, column].imshow(to_pixels[n], cmap="magma")
    axes[0, column].set_title(f"slot {n} -> pixels\n({pixel_share[n]:.0%} on pixels)",
                              fontsize=9)
    axes[1, column].imshow(mask_probs[..., n], vmin=0, vmax=1, cmap="magma")
    axes[1, column].set_title(f"mask: {names[best_class[n]]}", fontsize=9)
for axis in axes.ravel():
    axis.axis("off")
plt.show()
for n in kept:
    print(f"slot {n:2d}: {pixel_share[n]:.0%} of its attention on pixels")

"""
The pixel path, the other way round: at every pixel of the 9x9 grid, the slot it attends
to most (heads averaged), and how often that is the slot that owns the pixel in the final
masks (the stride-4 masks sampled at the same 9x9 positions). The pixel path feeds the
slots' features back into the pixels, block after block; the masks come from the last
pixel and slot features together, so the two need not agree everywhere.
"""

from_pixels = last["pixel_to_memory"][0].mean(0)  # [9, 9, slots]
most_attended = from_pixels.argmax(-1)
owner = mask_probs.argmax(-1)[::4, ::4]  # stride 4 -> the stride-16 grid's positions
figure, axes = plt.subplots(1, 3, figsize=(10, 3.5))
axes[0].imshow(image)
axes[0].set_title("input")
axes[1].imshow(most_attended, cmap="tab20", vmin=0, vmax=num_slots - 1, interpolation="nearest")
axes[1].set_title("most attended slot per pixel\n(last block)")
axes[2].imshow(owner, cmap="tab20", vmin=0, vmax=num_slots - 1, interpolation="nearest")
axes[2].set_title("slot owning the pixel\n(final masks)")
for axis in axes:
    axis.axis("off")
plt.show()
print(f"pixels attending most to the slot that owns them: {np.mean(most_attended == owner):.0%}")
