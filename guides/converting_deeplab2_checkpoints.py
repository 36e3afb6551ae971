"""
Title: Converting deeplab2 checkpoints to Keras presets
Author: keras-maxdeeplab contributors
Date created: 2026/12/01
Last modified: 2026/12/01
Description: A deeplab2 MaX-DeepLab checkpoint to a keras-hub preset: convert, check parity with deeplab2, save and publish with a model card.
Accelerator: None
"""

"""
## Introduction

Google's [deeplab2](https://github.com/google-research/deeplab2) released MaX-DeepLab
checkpoints trained on COCO (and ImageNet backbones). keras-maxdeeplab builds the model
layer for layer as deeplab2 does, so a checkpoint converts with no loss: every variable
maps to exactly one Keras weight, and the converter refuses a checkpoint with a missing,
extra or mis-shaped variable.

This guide converts a deeplab2 checkpoint with the command line and with the Python API,
checks the converted model against outputs deeplab2 itself computed, saves the preset and
shows how it is published with its model card.

**The checkpoint.** Offline, the guide uses the tiny deeplab2 MaX-DeepLab checkpoint of
this project's reference data (`../shared/reference/max_deeplab_tiny` beside the
repository: a reduced MaX-DeepLab-S with deeplab2's own width/depth knobs, saved by
deeplab2's trainer code, with the inputs and outputs deeplab2 computed for one real
image). The calls are the same for a published checkpoint, e.g.
`max_deeplab_s_os16_res641_400k` with `config="max_deeplab_s"` and `crop_size=641`.
`GUIDES_SMALL` changes nothing here: the guide is small either way. Without the reference
data the guide says so and stops.
"""

"""
## Setup
"""

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

import keras_maxdeeplab as kmd

# The reference data sit in `shared/` beside the repository (not in it).
REFERENCE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(kmd.__file__))),
    "..",
    "shared",
    "reference",
    "max_deeplab_tiny",
)
CHECKPOINT = os.path.join(REFERENCE, "ckpt")
print(f"backend: {keras.backend.backend()}, scale: {'small' if os.environ.get('GUIDES_SMALL') == '1' else 'full'}")
if not os.path.isdir(CHECKPOINT):
    print(f"No deeplab2 checkpoint at {os.path.normpath(CHECKPOINT)}: this guide needs the "
          "project's reference data (shared/reference/max_deeplab_tiny). Stopping.")
    sys.exit(0)
print("checkpoint files:", sorted(os.listdir(CHECKPOINT)))
print("preset: converted from deeplab2 checkpoint max_deeplab_tiny")

"""
## Which architecture?

A checkpoint holds weights, not the architecture: the converter needs the named
configuration (`max_deeplab_s`, `max_deeplab_l`, or `max_deeplab_tiny` for this reduced
model) and the crop size the model runs at (641 or 1025 for the published checkpoints; the
attention's image-pooling and positional encodings depend on it). `MAX_DEEPLAB_CONFIGS`
lists deeplab2's knobs for each:
"""

print(sorted(kmd.MAX_DEEPLAB_CONFIGS))
tiny = kmd.MAX_DEEPLAB_CONFIGS["max_deeplab_tiny"]
print({k: tiny[k] for k in ("backbone_width_multiplier", "backbone_layer_multiplier",
                            "num_mask_slots", "memory_channels")})

"""
## Convert with the command line

```bash
maxdeeplab convert ../shared/reference/max_deeplab_tiny/ckpt \\
    --config max_deeplab_tiny --crop-size 129 --output tiny_preset
```

`keras_maxdeeplab.cli.main` is that command's entry point, so we run it from Python:
"""

from keras_maxdeeplab.cli import main

exit_code = main(["convert", CHECKPOINT, "--config", "max_deeplab_tiny",
                  "--crop-size", "129", "--output", "tiny_preset_cli"])
print("exit code:", exit_code)
print(sorted(os.listdir("tiny_preset_cli")))

"""
## Convert with the Python API

`convert_checkpoint` does the same and returns the model. It writes the preset atomically
(a failed conversion leaves nothing behind) and records the source in `conversion.json`:
"""

from keras_maxdeeplab.conversion import convert_checkpoint

model = convert_checkpoint(CHECKPOINT, "tiny_preset", config="max_deeplab_tiny", crop_size=129)
with open("tiny_preset/conversion.json") as f:
    record = json.load(f)
print(json.dumps({k: record[k] for k in ("config", "crop_size", "source_sha256")}, indent=1))
print(f"{model.count_params():,} parameters")

"""
A checkpoint that does not fit the architecture is refused with the variables that
disagree, for example when a knob is wrong:
"""

try:
    convert_checkpoint(CHECKPOINT, "wrong_preset", config="max_deeplab_tiny", crop_size=129,
                       overrides={"memory_channels": 64})
except ValueError as error:
    print(str(error)[:300], "...")
print("wrong_preset written:", os.path.exists("wrong_preset"))

"""
## Check parity with deeplab2

The reference data hold what deeplab2 computed for one real COCO image at 129x129: its
preprocessed input and every output. The converted model's preprocessor must reproduce
deeplab2's input from the decoded photo, and the model deeplab2's outputs up to float
noise (the reference README measures ~1e-5 of the range between TensorFlow's own kernels).
"""

io = np.load(os.path.join(REFERENCE, "io.npz"))
photo = io["image/decoded_uint8"]
print("photo:", photo.shape, photo.dtype)

preprocessed = keras.ops.convert_to_numpy(model.preprocessor(photo))
reference_input = io["s129/input/image_normalized"][0]
print(f"input: max |ours - deeplab2| = {np.abs(preprocessed - reference_input).max():.2e}")

outputs = model.predict(photo[None], verbose=0)
for key in ("pixel_space_mask_logits", "transformer_class_logits", "semantic_logits",
            "pixel_space_normalized_feature"):
    reference = io[f"s129/output/{key}"]
    error = np.abs(outputs[key] - reference).max() / np.abs(reference).max()
    print(f"{key:32s} max relative error {error:.1e}")

"""
The panoptic maps after deeplab2's post-processor (its default thresholds, COCO's thing
classes) must be identical, pixel for pixel:
"""

from keras_maxdeeplab.postprocessing import postprocess_panoptic

maps = postprocess_panoptic(outputs["pixel_space_mask_logits"],
                            outputs["transformer_class_logits"], (129, 129))
ours = keras.ops.convert_to_numpy(maps["panoptic_pred"])
theirs = io["s129/postprocess_default/panoptic_pred"]
print("differing pixels:", int((ours != theirs).sum()), "of", ours.size)
print("segments (semantic * 256 + instance):", sorted(np.unique(ours).tolist()))

"""
## Save and reload

The folder is a keras-hub preset: `from_preset` loads it on any backend, with the
preprocessing, categories and post-processing settings it was saved with. The reloaded
model computes exactly what the converted one does:
"""

reloaded = kmd.MaXDeepLab.from_preset("tiny_preset")
again = reloaded.predict(photo[None], verbose=0)
print("identical outputs:", all(np.array_equal(again[k], outputs[k]) for k in outputs))
print(f"{len(reloaded.categories)} categories (COCO panoptic), crop {reloaded.backbone.image_shape}")

"""
## Publish with a model card

`keras_maxdeeplab.hub.upload_preset(preset_dir, "hf://org/name")` (or
`maxdeeplab upload tiny_preset hf://org/name`) writes this package's model card into the
folder as `README.md`, creates the Hugging Face repository and uploads the card and the
preset. Users then load it with `MaXDeepLab.from_preset("hf://org/name")`.

**Not executed here** (it needs the network and a Hugging Face login):

```python
from keras_maxdeeplab.hub import upload_preset

upload_preset("tiny_preset", "hf://my-org/max_deeplab_tiny_deeplab2")
```

The card it would upload is written by `write_model_card`, which we can run offline: it
describes the architecture, the source checkpoint (with its sha256), the usage and the
licence and citation.
"""

from keras_maxdeeplab.models.max_deeplab.model_card import write_model_card

card_path = write_model_card("tiny_preset", handle="hf://my-org/max_deeplab_tiny_deeplab2")
with open(card_path) as f:
    print(f.read())
