"""`KMaXDeepLab.fit` lowers deeplab2's kMaX trainer loss on synthetic scenes."""

import numpy as np

import keras

from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model
from tests.helpers import KMAX_ONE_BLOCK_PER_STAGE
from tests.models.test_max_deeplab_fit import SIZE
from tests.models.test_max_deeplab_fit import _scenes


# A test of training rather than of deeplab2's numbers (every layer type still
# there), which trains its 8 epochs in 70% of the time (JAX: 40 s against 56 s).
def test_fit_lowers_the_loss():
    keras.utils.set_random_seed(1)
    model = build_kmax_model("kmax_r50_tiny", SIZE, overrides=KMAX_ONE_BLOCK_PER_STAGE)
    # 64 sampled pixels: the tiny crop has 17 x 17 at stride 4. jit_compile
    # "auto": XLA on JAX (eager JAX took 10x longer than compiling); a
    # tf.function with the scipy matcher on TensorFlow (XLA took minutes).
    model.compile(
        learning_rate=1e-3, training_steps=1000, warmup_steps=0, instance_discrimination_sample_k=64
    )
    images, y_true = _scenes(2, seed=0)
    before = model.evaluate(images, y_true, batch_size=2, verbose=0, return_dict=True)
    history = model.fit(images, y_true, batch_size=2, epochs=8, verbose=0)
    after = model.evaluate(images, y_true, batch_size=2, verbose=0, return_dict=True)
    # The trainer loss: the final and the 3 auxiliary predictions' terms.
    for term in ("semantic_loss", "instance_discrimination_loss", "aux_2pq_style_loss_class_term"):
        assert term in history.history
    assert "aux_3pq_style_loss_class_term" not in history.history
    losses = history.history["loss"]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    # evaluate: deeplab2's evaluator loss (final prediction, deterministic).
    assert after["loss"] < before["loss"], (before["loss"], after["loss"])
