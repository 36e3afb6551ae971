"""Issue items on training: a kill while the checkpoint was written left a
file every resume failed on; resuming with another --steps-per-epoch trained
nothing and restarted the data stream; a NaN loss went on silently."""

import json
import os
import signal

import numpy as np

import keras

from keras_maxdeeplab.training_checkpoint import StopAtStep
from keras_maxdeeplab.training_checkpoint import TrainingCheckpoint
from tests.helpers import python_child

# Trains a small dense model in a child process; the weights file takes 2 s to
# land after it is written, the window the kill aims at.
SLOW_SAVES = """
import sys, time
import numpy as np
import keras
from keras_maxdeeplab.training_checkpoint import TrainingCheckpoint
from tests.reliability.test_training_checkpoint import small_model, batches

original = keras.Model.save_weights
def slow_save_weights(self, path, overwrite=True):
    original(self, path, overwrite=overwrite)
    print("written", path, flush=True)
    time.sleep(2.0)
keras.Model.save_weights = slow_save_weights

model = small_model()
checkpoint = TrainingCheckpoint(sys.argv[1], every=2)
checkpoint.restore(model)
model.fit(batches(), steps_per_epoch=2, epochs=50, callbacks=[checkpoint], verbose=0)
"""


def small_model(learning_rate=0.01):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def batches(nan_from=None):
    rng = np.random.default_rng(0)
    step = 0
    while True:
        x = rng.normal(size=(8, 3)).astype("float32")
        if nan_from is not None and step >= nan_from:
            x[0, 0] = np.nan
        step += 1
        yield x, x.sum(axis=1, keepdims=True)


def _weights(model):
    return [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights]


def test_a_kill_while_the_checkpoint_is_written_keeps_the_last_whole_one(tmp_path):
    folder = str(tmp_path / "checkpoints")
    child = python_child(SLOW_SAVES, folder)
    written = []
    while len(written) < 2:  # the second checkpoint's file is written, not yet renamed
        line = child.stdout.readline()
        assert line, "the child ended early"
        if line.startswith("written"):
            written.append(line.split()[1])
    child.send_signal(signal.SIGKILL)
    child.wait()
    state = json.load(open(os.path.join(folder, "checkpoint.json")))
    assert state == {"step": 2, "weights": "step-2.weights.h5"}
    assert os.path.basename(written[1]).startswith(".writing-step-4")

    model = small_model()
    assert TrainingCheckpoint(folder, every=2).restore(model) == 2


def test_resume_is_counted_in_steps_whatever_the_epoch_length(tmp_path):
    folder = str(tmp_path / "checkpoints")
    model = small_model()
    checkpoint = TrainingCheckpoint(folder, every=2)
    model.fit(batches(), steps_per_epoch=2, epochs=2, verbose=0, callbacks=[checkpoint])
    reference = small_model()
    reference.fit(batches(), steps_per_epoch=7, epochs=1, verbose=0)

    resumed = small_model()
    checkpoint = TrainingCheckpoint(folder, every=3)
    assert checkpoint.restore(resumed) == 4
    stream = batches()
    for _ in range(4):  # the stream goes on where it stopped
        next(stream)
    callbacks = [checkpoint, StopAtStep(7)]
    resumed.fit(stream, steps_per_epoch=3, epochs=2, verbose=0, callbacks=callbacks)
    assert int(resumed.optimizer.iterations.numpy()) == 7
    for a, b in zip(_weights(resumed), _weights(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert json.load(open(os.path.join(folder, "checkpoint.json")))["step"] == 7


def test_a_non_finite_loss_stops_without_saving_it(tmp_path):
    folder = str(tmp_path / "checkpoints")
    model = small_model()
    checkpoint = TrainingCheckpoint(folder, every=2)
    model.fit(batches(nan_from=3), steps_per_epoch=2, epochs=10, verbose=0, callbacks=[checkpoint])
    assert checkpoint.diverged_at == 4
    assert checkpoint.saved_step == 2
    assert json.load(open(os.path.join(folder, "checkpoint.json")))["step"] == 2
    restored = small_model()
    TrainingCheckpoint(folder, every=2).restore(restored)
    assert all(np.isfinite(w).all() for w in _weights(restored))


def test_the_data_stream_resumes_where_it_stopped(tmp_path):
    from keras_maxdeeplab.data import COCOPanopticDataset
    from keras_maxdeeplab.data import write_synthetic_panoptic_dataset

    paths = write_synthetic_panoptic_dataset(str(tmp_path / "data"), 3, seed=0)
    data = COCOPanopticDataset(*paths)
    whole = list(data.as_dataset(crop_size=65, seed=5).take(7).as_numpy_iterator())
    resumed = list(data.as_dataset(crop_size=65, seed=5, start=4).take(3).as_numpy_iterator())
    for (image, targets), (expected_image, expected_targets) in zip(resumed, whole[4:]):
        np.testing.assert_array_equal(image, expected_image)
        np.testing.assert_array_equal(targets["panoptic_gt"], expected_targets["panoptic_gt"])
