"""An offline demo: segment freshly generated synthetic scenes, or real photos with a COCO preset.

    maxdeeplab demo [--output demo_output] [--scenes 6]
    maxdeeplab demo --preset max_deeplab_s_coco [--images photo.jpg ...]

By default it loads the embedded preset `max_deeplab_tiny_synthetic` (a tiny
MaX-DeepLab the project trained on synthetic scenes with
`tools/train_demo_preset.py`; it ships inside the package), generates held-out
scenes it has never seen, writes a figure per scene (image | prediction | ground
truth) and the predictions in COCO panoptic format, and prints PQ/SQ/RQ with the
official COCO rules. With `--preset` (a COCO preset name, `hf://` handle or
folder) it segments photos (`--images`, or scikit-image's sample photos when it
is installed) and writes labelled overlays; there is no ground truth for them.
"""

import os
import time
import warnings

from keras_maxdeeplab.image_files import read_images

from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import embedded_preset_folder

DEMO_PRESET = embedded_preset_folder("max_deeplab_tiny_synthetic")
# The synthetic scenes of training used seeds 0 and 1; the demo's are new.
DEMO_SEED = 2


def _sample_photos():
    """scikit-image's bundled photos (astronaut, coffee, chelsea), when installed."""
    try:
        from skimage import data
    except ImportError:
        raise ValueError(
            "No --images given and scikit-image (which bundles sample photos) is not "
            "installed: pass --images PHOTO [PHOTO ...]."
        ) from None
    return {f"{name}.png": getattr(data, name)() for name in ("astronaut", "coffee", "chelsea")}


def _synthetic_demo(model, output, scenes):
    from keras_maxdeeplab.data import COCOPanopticDataset
    from keras_maxdeeplab.data import write_synthetic_panoptic_dataset
    from keras_maxdeeplab.evaluation import evaluate_dataset
    from keras_maxdeeplab.evaluation import format_results
    from keras_maxdeeplab.coco import coco_panoptic_to_segments
    from keras_maxdeeplab.coco import read_panoptic_png
    from keras_maxdeeplab.coco import save_coco_panoptic
    from keras_maxdeeplab.visualization import plot_panoptic

    paths = write_synthetic_panoptic_dataset(os.path.join(output, "scenes"), scenes, seed=DEMO_SEED)
    data = COCOPanopticDataset(*paths)
    results, predictions = evaluate_dataset(model, data)
    for index, (result, sample) in enumerate(zip(predictions, data.samples)):
        image, _ = data.load(index)
        gt_ids = read_panoptic_png(sample["panoptic_file"])
        figure = plot_panoptic(
            image,
            result,
            coco_panoptic_to_segments(gt_ids, sample["segments_info"], model.categories),
            categories=model.categories,
            title=f"held-out synthetic scene {index}",
        )
        figure.savefig(os.path.join(output, f"scene_{index:02d}.png"), dpi=100)
    names = [os.path.basename(s["image_file"]) for s in data.samples]
    save_coco_panoptic(predictions, names, os.path.join(output, "predictions"), model.categories)
    print(f"PQ on {scenes} held-out synthetic scenes (official COCO rules):")
    print(format_results(results))
    return results


def _photo_demo(model, output, images):
    from keras_maxdeeplab.prediction_writer import write_predictions

    # The demo's own output folder: a second run replaces the first one's predictions.
    report = write_predictions(model, list(images.items()), output, overwrite=True)
    for name, labels in report["segments"]:
        found = ", ".join(sorted(set(labels))) or "nothing"
        print(f"{name}: {len(labels)} segments ({found})")


def run_demo(output="demo_output", preset=None, images=None, scenes=6):
    """Runs the demo and returns PQ results (synthetic scenes) or None (photos).

    Args:
        output: folder for the figures, overlays and COCO-format predictions.
        preset: None for the embedded synthetic-scene model, else a preset
            name, `hf://` handle or folder.
        images: photo paths for a `preset`.
        scenes: held-out synthetic scenes to segment (embedded model only).

    Example:
    >>> results = run_demo("demo_output")
    >>> results["All"]["pq"]
    """
    from keras_maxdeeplab import MaXDeepLab

    start = time.time()
    os.makedirs(output, exist_ok=True)
    photos = images or preset is not None
    if photos:
        # Read before the model is built: a wrong path fails fast.
        named = dict(read_images(images)) if images else _sample_photos()
    if photos and os.path.abspath(preset or DEMO_PRESET) == DEMO_PRESET:
        warnings.warn(
            "The embedded demo model knows only synthetic shapes on synthetic backgrounds: its "
            "segments of real photos mean nothing. Use --preset with a COCO preset for photos."
        )
    model = MaXDeepLab.from_preset(preset or DEMO_PRESET)
    if photos:
        results = _photo_demo(model, output, named)
    else:
        results = _synthetic_demo(model, output, scenes)
    print(f"Wrote {output}/ in {time.time() - start:.1f}s")
    return results
