import numpy as np
import pytest

import keras

from keras_maxdeeplab.losses.max_deeplab_loss import TERMS
from tests.helpers import ONE_BLOCK_PER_STAGE
from tests.helpers import tiny_model

SIZE = 65


def _scenes(count, seed):
    """Images with 1-3 coloured squares (class 1 'person', things) on two stuff classes."""
    rng = np.random.RandomState(seed)
    images = np.zeros((count, SIZE, SIZE, 3), np.float32)
    semantic = np.zeros((count, SIZE, SIZE), np.int32)
    thing_mask = np.full((count, SIZE, SIZE), -1, np.int32)
    thing_class = np.full((count, 128), -1, np.float32)
    for i in range(count):
        split = rng.randint(20, 45)
        semantic[i, :split], semantic[i, split:] = 119, 125  # sky-like / grass-like stuff ids
        images[i, :split] = (0.2, 0.4, 0.9)
        images[i, split:] = (0.2, 0.7, 0.2)
        for t in range(rng.randint(1, 4)):
            y, x = rng.randint(0, SIZE - 16, 2)
            semantic[i, y : y + 16, x : x + 16] = 1
            thing_mask[i, y : y + 16, x : x + 16] = t
            images[i, y : y + 16, x : x + 16] = (0.9, 0.3, 0.2)
            thing_class[i, t] = 1
        # Things drawn over each other: keep only the ids still visible.
        visible = np.unique(thing_mask[i][thing_mask[i] >= 0])
        thing_class[i, [t for t in range(3) if t not in visible]] = -1
    y_true = {
        "semantic_gt": semantic,
        "thing_id_mask_gt": thing_mask,
        "thing_id_class_gt": thing_class,
        "semantic_loss_weight": np.ones((count, SIZE, SIZE), np.float32),
        "panoptic_gt": semantic * 256 + np.where(thing_mask >= 0, thing_mask + 1, 0),
    }
    return images * 2.0 - 1.0, y_true


def _jit_options():
    # JAX: "auto" is XLA. TensorFlow: "auto" runs the scipy matcher through
    # tf.numpy_function; True is XLA and switches to the keras.ops matcher.
    return {"jax": [True], "tensorflow": ["auto", True]}.get(keras.backend.backend(), ["auto"])


@pytest.mark.parametrize("jit_compile", _jit_options())
def test_fit_lowers_the_loss(jit_compile):
    keras.utils.set_random_seed(1)
    model = tiny_model(SIZE, **ONE_BLOCK_PER_STAGE)
    # 3e-3: the loss falls about as far in 10 steps as in 27 at 1e-3 (TensorFlow's
    # XLA step, compiled without LLVM's optimisations, took 1.7 s a step here).
    model.compile(learning_rate=3e-3, training_steps=1000, warmup_steps=0, jit_compile=jit_compile)
    images, y_true = _scenes(4, seed=0)
    before = model.evaluate(images, y_true, batch_size=4, verbose=0, return_dict=True)
    history = model.fit(images, y_true, batch_size=4, epochs=12, verbose=0)
    after = model.evaluate(images, y_true, batch_size=4, verbose=0, return_dict=True)
    for term in TERMS:
        assert term in history.history
    losses = history.history["loss"]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses
    assert after["loss"] < before["loss"]


def test_evaluate_reports_panoptic_quality():
    from keras_maxdeeplab.evaluation import PQStat
    from keras_maxdeeplab.evaluation import PanopticQuality
    from keras_maxdeeplab.postprocessing import postprocess_panoptic

    keras.utils.set_random_seed(2)
    model = tiny_model(SIZE)
    # An untrained model is never confident: score its raw mask assignment.
    options = dict(
        transformer_class_confidence_threshold=0.0,
        pixel_confidence_threshold=0.0,
        thing_area_limit=0,
        stuff_area_limit=0,
    )
    metric = PanopticQuality(rules="deeplab2", postprocess_options=options)
    model.compile(metrics=[metric])
    images, y_true = _scenes(2, seed=3)
    outputs = model.predict(images, verbose=0)
    maps = postprocess_panoptic(
        outputs["pixel_space_mask_logits"],
        outputs["transformer_class_logits"],
        (SIZE, SIZE),
        **options,
    )
    predicted = keras.ops.convert_to_numpy(maps["panoptic_pred"])
    # Image 0's ground truth is the model's own prediction: a perfect match.
    y_true["panoptic_gt"] = np.stack([predicted[0], y_true["panoptic_gt"][1]])
    logs = model.evaluate(images, y_true, batch_size=2, verbose=0, return_dict=True)
    stat = PQStat()
    for gt, pred in zip(y_true["panoptic_gt"], predicted):
        stat.add_label_maps(gt, pred, rules="deeplab2")
    categories = {c: {"isthing": int(c <= 80)} for c in range(1, 134)}
    expected = stat.pq_average(categories)[0]
    assert expected["n"] > 1 and expected["pq"] > 0
    assert logs["panoptic_quality"] == pytest.approx(expected["pq"], abs=1e-6)


def test_fit_and_evaluate_on_a_coco_panoptic_dataset(tmp_path):
    """The tf.data pipeline feeds fit / evaluate on every backend, through the
    model's preprocessor (0..255 images -> [-1, 1])."""
    from keras_maxdeeplab import MaXDeepLab
    from keras_maxdeeplab import MaXDeepLabBackbone
    from keras_maxdeeplab import MaXDeepLabImageConverter
    from keras_maxdeeplab import MaXDeepLabPreprocessor
    from keras_maxdeeplab.data import COCOPanopticDataset
    from keras_maxdeeplab.data.synthetic import SYNTHETIC_CATEGORIES
    from keras_maxdeeplab.data.synthetic import write_synthetic_panoptic_dataset
    from tests.helpers import TINY_BACKBONE
    from tests.helpers import TINY_HEADS

    keras.utils.set_random_seed(3)
    data = COCOPanopticDataset(*write_synthetic_panoptic_dataset(tmp_path, 4, seed=0))
    backbone = MaXDeepLabBackbone(
        image_shape=(SIZE, SIZE, 3), **dict(TINY_BACKBONE, **ONE_BLOCK_PER_STAGE)
    )
    model = MaXDeepLab(
        backbone,
        categories=SYNTHETIC_CATEGORIES,
        preprocessor=MaXDeepLabPreprocessor(MaXDeepLabImageConverter((SIZE, SIZE))),
        **TINY_HEADS,
    )
    model.compile(learning_rate=1e-3, training_steps=100, warmup_steps=0)
    training = data.as_dataset(crop_size=SIZE, batch_size=2, seed=0)  # endless, as deeplab2's
    history = model.fit(training, steps_per_epoch=1, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()

    evaluation = data.as_dataset(crop_size=SIZE, training=False, batch_size=4)
    logs = model.evaluate(evaluation, verbose=0, return_dict=True)
    images, y_true = next(iter(evaluation))
    outputs = keras.Model.predict_on_batch(model, np.asarray(images) / 127.5 - 1.0)
    terms = model.max_deeplab_loss.compute_terms(
        {k: np.asarray(v) for k, v in y_true.items()}, outputs
    )
    expected = sum(float(np.mean(keras.ops.convert_to_numpy(terms[term]))) for term in TERMS)
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
