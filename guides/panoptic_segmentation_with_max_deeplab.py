"""
Title: Panoptic segmentation with a pretrained MaX-DeepLab
Author: keras-maxdeeplab contributors
Date created: 2026/12/01
Last modified: 2026/12/01
Description: Load a preset, segment images, read the segments, draw them, export COCO panoptic files and score them with PQ.
Accelerator: None
"""

"""
## Introduction

Panoptic segmentation gives every pixel a class, and every pixel of a countable object
(a *thing*: a person, a car) also the instance it belongs to, while amorphous regions
(*stuff*: sky, grass) form one segment per class. MaX-DeepLab predicts this directly: a
set of masks, each with a class, with no boxes, no non-maximum suppression and no
merging of separate thing and stuff predictions.

In a few lines this guide loads a pretrained model, segments images, reads the result,
draws it, exports it in COCO panoptic format and scores it against annotations with the
panoptic quality (PQ) metric.

**Scale.** By default the guide uses the COCO preset `max_deeplab_s_coco` (downloaded from
Hugging Face on first use) on scikit-image's sample photos, and scores it on COCO val2017
if you have it (`COCO_DIR`, see the last section). With `GUIDES_SMALL=1` it runs offline
in about a minute on a CPU: the preset is then the tiny MaX-DeepLab embedded in the
package, trained on synthetic scenes of shapes, and the images are such scenes (that
model knows nothing about photos). The output below says which preset produced it.
"""

"""
## Setup
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import matplotlib.pyplot as plt

import keras_maxdeeplab as kmd
from keras_maxdeeplab.data import COCOPanopticDataset
from keras_maxdeeplab.data import write_synthetic_panoptic_dataset
from keras_maxdeeplab.evaluation import format_results
from keras_maxdeeplab.evaluation import pq_compute
from keras_maxdeeplab.postprocessing import save_coco_panoptic
from keras_maxdeeplab.visualization import overlay_panoptic
from keras_maxdeeplab.visualization import plot_panoptic

SMALL = os.environ.get("GUIDES_SMALL") == "1"
PRESET = "max_deeplab_tiny_synthetic" if SMALL else "max_deeplab_s_coco"
print(f"backend: {keras.backend.backend()}, scale: {'small' if SMALL else 'full'}")
print(f"preset: {PRESET}")

"""
## Load a pretrained model

`MaXDeepLab.from_preset` takes a preset name (the table below), a preset folder (what
`save_to_preset` and `maxdeeplab convert` write) or a Hugging Face handle
(`hf://org/name`). The model carries its categories and deeplab2's post-processing
settings.
"""

print("named presets:", ", ".join(kmd.MaXDeepLab.presets))
model = kmd.MaXDeepLab.from_preset(PRESET)
print(f"{model.count_params():,} parameters, input {model.backbone.image_shape}")
print(f"{len(model.categories)} categories, e.g.",
      [(c["id"], c["name"], "thing" if c["isthing"] else "stuff") for c in model.categories[:3]])

"""
## Segment images

`predict_panoptic` takes uint8 images of any size (one, a list, or a batch). It resizes
and pads them as deeplab2 does, runs the model and deeplab2's post-processor, and maps
the result back to each image's own size.
"""

if SMALL:
    # Held-out synthetic scenes (a seed the embedded model was not trained on).
    scenes = COCOPanopticDataset(*write_synthetic_panoptic_dataset("scenes", 3, seed=5))
    images = [scenes.load(i)[0] for i in range(3)]
else:
    from skimage import data as sample_photos

    images = [sample_photos.astronaut(), sample_photos.coffee(), sample_photos.chelsea()]

results = model.predict_panoptic(images)
result = results[0]
print("segmentation:", result["segmentation"].shape, result["segmentation"].dtype)

"""
`segmentation` numbers the segments 1..K (0 = void: pixels no mask claimed confidently),
and `segments_info` describes each one in the model's dataset ids and names:
"""

print(f"{'id':>3} {'label':14s} {'category_id':>11} {'thing':>5} {'score':>6} {'area':>7}")
for s in result["segments_info"]:
    print(f"{s['id']:>3} {s['label']:14s} {s['category_id']:>11} {s['isthing']:>5} "
          f"{s['score']:6.2f} {s['area']:>7}")
print("void pixels:", int((result["segmentation"] == 0).sum()))

"""
The thresholds of the post-processor (class confidence, pixel confidence, smallest thing
and stuff areas) are in `model.postprocess_options`; pass any of them to
`predict_panoptic` to override them for one call.
"""

print(model.postprocess_options)
relaxed = model.predict_panoptic(images[0], transformer_class_confidence_threshold=0.3)[0]
print("segments at class confidence 0.3:", len(relaxed["segments_info"]),
      "(default:", len(result["segments_info"]), ")")

"""
## Draw the results

`overlay_panoptic` blends per-category colours (a distinct shade for each instance)
over the image, with white boundaries and, optionally, each segment's label and score.
"""

figure, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 4))
for axis, image, r in zip(axes, images, results):
    axis.imshow(overlay_panoptic(image, r["segmentation"], r["segments_info"],
                                 categories=model.categories, draw_labels=True))
    axis.set_title(f"{len(r['segments_info'])} segments")
    axis.axis("off")
plt.tight_layout()
plt.show()

"""
`plot_panoptic` makes a figure of the image, the prediction and, when given, the ground
truth, with a legend of the categories present:
"""

figure = plot_panoptic(images[0], result, categories=model.categories, title="prediction")
figure.savefig("prediction.png")
figure  # a notebook displays it

"""
## Export in COCO panoptic format

`save_coco_panoptic` writes the results as a COCO panoptic prediction set: a PNG per
image with segment ids encoded as `R + 256 G + 256^2 B`, and a JSON file with each
segment's category, area and bounding box. Any COCO panoptic tool reads it.
"""

names = [f"image_{i}.png" for i in range(len(images))]
json_path = save_coco_panoptic(results, names, "predictions", model.categories)
print(json_path, sorted(os.listdir("predictions/panoptic")))
print(open(json_path).read()[:400], "...")

"""
## Score against annotations with PQ

Panoptic quality matches each predicted segment to the ground-truth segment of the same
category that it overlaps with IoU > 0.5, then `PQ = SQ x RQ`: the mean IoU of the
matches (segmentation quality) times an F1 score of the matching (recognition quality),
averaged over categories. `pq_compute` reads COCO panoptic files and applies the
official COCO rules (it is a drop-in for panopticapi's `pq_compute`).

We segment an annotated set, export the predictions and score them. At small scale the
set is 20 held-out synthetic scenes; at full scale, COCO val2017's 5,000 images
(`COCO_DIR` with `val2017/`, `panoptic_val2017/` and `panoptic_val2017.json`).
"""

if SMALL:
    annotated = write_synthetic_panoptic_dataset("annotated", 20, seed=6)
    gt_images, gt_panoptic, gt_json = annotated
else:
    coco = os.environ.get("COCO_DIR", "coco")
    gt_images = os.path.join(coco, "val2017")
    gt_panoptic = os.path.join(coco, "panoptic_val2017")
    gt_json = os.path.join(coco, "panoptic_val2017.json")
dataset = COCOPanopticDataset(gt_images, gt_panoptic, gt_json)
# One image at a time: the whole set need not fit in memory.
predictions = [model.predict_panoptic(dataset.load(i)[0])[0] for i in range(len(dataset))]
pred_json = save_coco_panoptic(
    predictions,
    [os.path.basename(s["image_file"]) for s in dataset.samples],
    "annotated_predictions",
    model.categories,
    image_ids=[s["image_id"] for s in dataset.samples],
)
scores = pq_compute(gt_json, pred_json, gt_panoptic, "annotated_predictions/panoptic")
print(f"{len(dataset)} annotated images")
print(format_results(scores))

"""
`scores["per_class"]` has PQ, SQ and RQ per category id. The same PQ is available from
the command line (`maxdeeplab evaluate --annotations gt.json --predictions pred.json`) and
as a streaming Keras metric during `evaluate` and `fit` (`model.panoptic_quality()`, see
the fine-tuning guide).
"""

for category in model.categories:
    per_class = scores["per_class"].get(category["id"])
    if per_class is not None:
        print(f"{category['name']:10s} PQ {100 * per_class['pq']:5.1f}")
