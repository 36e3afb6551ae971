"""Training checkpoints counted in steps, written whole or not at all.

Keras' `BackupAndRestore` counts epochs (resuming with another
`steps_per_epoch` trained nothing) and rewrites its weights file in place (a
kill while writing left a file every resume failed on). Here a checkpoint is
the weights with the optimizer's state, written to a temporary name and
renamed (`step-N.weights.h5`), then `checkpoint.json` names it, replaced
atomically; only then is the previous one deleted. A kill at any moment
leaves a `checkpoint.json` naming a complete file. A non-finite loss stops
training without saving the diverged weights (`diverged_at`).
"""

import glob
import json
import math
import os

import keras

from keras_maxdeeplab.atomic_files import write_atomically

STATE_FILE = "checkpoint.json"


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the model and optimizer every `every` steps; `restore` resumes.

    Args:
        folder: where the checkpoints go.
        every: steps between checkpoints (one more is written when training
            ends or stops).

    Example:
    >>> checkpoint = TrainingCheckpoint("runs/mine/checkpoints", every=1000)
    >>> done = checkpoint.restore(model)  # 0 on a first run
    >>> model.fit(data, steps_per_epoch=1000, epochs=..., callbacks=[checkpoint])
    """

    def __init__(self, folder, every):
        super().__init__()
        self.folder = folder
        self.every = every
        self.saved_step = None
        # The step whose loss was NaN or infinite: training stops, nothing more is saved.
        self.diverged_at = None

    def restore(self, model):
        """Loads the last checkpoint into `model` (built and compiled); returns its step (0: none)."""
        path = os.path.join(self.folder, STATE_FILE)
        if not os.path.exists(path):
            return 0
        with open(path) as f:
            state = json.load(f)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(self.folder, state["weights"]))
        step = _step(model)
        if step != state["step"]:
            raise ValueError(
                f"{path} names step {state['step']} but its weights hold step {step}: "
                "the checkpoint folder was changed by hand."
            )
        self.saved_step = step
        return step

    def save(self):
        step = _step(self.model)
        if step == self.saved_step:
            return
        os.makedirs(self.folder, exist_ok=True)
        name = f"step-{step}.weights.h5"
        temporary = os.path.join(self.folder, f".writing-{name}")
        self.model.save_weights(temporary, overwrite=True)
        os.replace(temporary, os.path.join(self.folder, name))
        state = {"step": step, "weights": name}
        write_atomically(os.path.join(self.folder, STATE_FILE), lambda f: json.dump(state, f))
        for old in glob.glob(os.path.join(self.folder, "step-*.weights.h5")):
            if os.path.basename(old) != name:
                os.remove(old)
        self.saved_step = step

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = _step(self.model)
            self.model.stop_training = True
        elif _step(self.model) % self.every == 0:
            self.save()

    def on_train_end(self, logs=None):
        if self.diverged_at is None:
            self.save()


class StopAtStep(keras.callbacks.Callback):
    """Stops `fit` once the optimizer has taken `steps` steps in all."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if _step(self.model) >= self.steps:
            self.model.stop_training = True


def _step(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))
