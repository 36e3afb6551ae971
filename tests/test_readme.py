"""The README's fine-tuning recipe, at small scale and offline: the embedded
preset (129x129) fine-tuned at 65x65 crops to a dataset's own categories."""

import os

import numpy as np
import pytest

import keras

import keras_maxdeeplab as kmd
from keras_maxdeeplab.data import COCOPanopticDataset
from keras_maxdeeplab.data import write_synthetic_panoptic_dataset
from keras_maxdeeplab.demo import DEMO_PRESET

CROP = 65


def test_fine_tuning_recipe_runs_at_another_crop_size(tmp_path):
    keras.utils.set_random_seed(0)
    paths = write_synthetic_panoptic_dataset(str(tmp_path / "data"), 4, image_size=(48, 64))
    data = COCOPanopticDataset(*paths)
    # The README's recipe with a smaller preset, crop and schedule.
    model = kmd.MaXDeepLab.from_preset(
        DEMO_PRESET, categories=data.categories, image_shape=(CROP, CROP, 3)
    )
    model.compile(learning_rate=1e-4, training_steps=2, warmup_steps=0)
    dataset = data.as_dataset(model=model, batch_size=2, seed=0)
    images, y_true = next(iter(dataset))
    assert tuple(images.shape) == (2, CROP, CROP, 3)
    assert tuple(y_true["semantic_gt"].shape) == (2, CROP, CROP)
    history = model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2
    # Predictions come back at the image's size, in the dataset's ids.
    image, _ = data.load(0)
    (result,) = model.predict_panoptic(image)
    assert result["segmentation"].shape == image.shape[:2]
    dataset_ids = {c["id"] for c in data.categories}
    assert {s["category_id"] for s in result["segments_info"]} <= dataset_ids
    # A crop the model cannot take is an error, not a failure deep in `fit`.
    with pytest.raises(ValueError, match=r"crop_size \(129, 129\) differs from the model's"):
        data.as_dataset(crop_size=129, model=model)
    assert os.path.isdir(DEMO_PRESET)
