"""A short end-to-end run: image -> MaXDeepLab -> deeplab2 post-processing -> PNG.

Until converted presets are published, this runs a small *randomly
initialised* MaX-DeepLab-S (deeplab2's shrinking knobs) so that it works
offline in seconds; its segments are not meaningful, only the pipeline is.

    python -m keras_maxdeeplab.demo [IMAGE] [--output demo_output]
"""

import argparse
import os
import time

import numpy as np
from PIL import Image

import keras

from keras_maxdeeplab import MAX_DEEPLAB_CONFIGS
from keras_maxdeeplab import MAX_DEEPLAB_HEAD_CONFIGS
from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab import MaXDeepLabBackbone
from keras_maxdeeplab import MaXDeepLabImageConverter
from keras_maxdeeplab.postprocessing import postprocess_panoptic

DEMO_SIZE = 129


def _scene(seed=0):
    """A 240x320 picture of a few coloured shapes on a two-tone background."""
    rng = np.random.RandomState(seed)
    image = np.zeros((240, 320, 3), np.uint8)
    image[:120] = (110, 160, 220)
    image[120:] = (90, 140, 70)
    yy, xx = np.mgrid[:240, :320]
    for _ in range(4):
        cy, cx, r = rng.randint(40, 200), rng.randint(40, 280), rng.randint(15, 40)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.randint(0, 256, 3)
    return image


def _colorize(panoptic):
    rng = np.random.RandomState(7)
    colors = {0: (0, 0, 0)}
    out = np.zeros(panoptic.shape + (3,), np.uint8)
    for segment in np.unique(panoptic):
        colors.setdefault(int(segment), tuple(rng.randint(40, 256, 3)))
        out[panoptic == segment] = colors[int(segment)]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("image", nargs="?", help="an RGB image file (default: a generated scene)")
    parser.add_argument("--output", default="demo_output", help="folder for the PNGs")
    args = parser.parse_args(argv)

    image = np.asarray(Image.open(args.image).convert("RGB")) if args.image else _scene()
    keras.utils.set_random_seed(0)
    start = time.time()
    backbone = MaXDeepLabBackbone(
        image_shape=(DEMO_SIZE, DEMO_SIZE, 3), **MAX_DEEPLAB_CONFIGS["max_deeplab_tiny"]
    )
    model = MaXDeepLab(backbone, **MAX_DEEPLAB_HEAD_CONFIGS["max_deeplab_tiny"])
    converter = MaXDeepLabImageConverter(image_size=(DEMO_SIZE, DEMO_SIZE))
    inputs = keras.ops.convert_to_numpy(converter(image))[None]
    outputs = model.predict(inputs, verbose=0)
    # A random model is never confident: thresholds 0 show the raw mask assignment.
    maps = postprocess_panoptic(
        outputs["pixel_space_mask_logits"],
        outputs["transformer_class_logits"],
        (DEMO_SIZE, DEMO_SIZE),
        transformer_class_confidence_threshold=0.0,
        pixel_confidence_threshold=0.0,
        thing_area_limit=0,
        stuff_area_limit=0,
    )
    panoptic = keras.ops.convert_to_numpy(maps["panoptic_pred"])[0]
    height, width = converter.resized_size(*image.shape[:2])
    panoptic = panoptic[:height, :width]

    os.makedirs(args.output, exist_ok=True)
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    overlay = (0.5 * resized + 0.5 * _colorize(panoptic)).astype(np.uint8)
    path = os.path.join(args.output, "panoptic_overlay.png")
    Image.fromarray(overlay).resize((width * 3, height * 3), Image.NEAREST).save(path)
    segments = np.unique(panoptic)
    print(
        f"backend {keras.backend.backend()}: {len(segments)} segments in {time.time() - start:.1f}s"
    )
    print(
        f"panoptic ids (class * 256 + slot): {segments[:10].tolist()}{' ...' if len(segments) > 10 else ''}"
    )
    print(f"wrote {path} (randomly initialised model: the segments are not meaningful)")


if __name__ == "__main__":
    main()
