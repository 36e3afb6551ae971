"""kMaX-DeepLab with the Axial-ResNet-50 encoder against deeplab2's reduced
reference model (../shared/reference/kmax_deeplab_tiny/axial_r50)."""

import numpy as np
import pytest

from keras_maxdeeplab.conversion.deeplab2 import load_kmax_checkpoint
from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model
from tests.helpers import shared_path
from tests.helpers import to_numpy
from tests.models.test_kmax_deeplab import compare_with_reference
from tests.models.test_kmax_deeplab import count_values

REFERENCE = ("reference", "kmax_deeplab_tiny")


def test_every_reference_array_s65():
    """The axial reference keeps the encoder, pixel decoder, k-means
    assignments, embeddings and final outputs (README section 5)."""
    io = np.load(shared_path(*REFERENCE, "axial_r50", "io.npz"))
    inputs = np.load(shared_path(*REFERENCE, "io.npz"))["s65/input/image_0_255"]
    model = build_kmax_model("kmax_axial_r50_tiny", 65)
    load_kmax_checkpoint(model, shared_path(*REFERENCE, "axial_r50", "ckpt"))
    assert count_values(model.trainable_weights) == 736_534
    assert count_values(model.non_trainable_weights) == 22_910
    arrays = to_numpy(model.intermediate_outputs(inputs / np.float32(127.5) - np.float32(1)))
    compared = compare_with_reference(arrays, io, "s65")
    assert len(compared) == 5 + 4 + 6 + 2 + 4, sorted(compared)


@pytest.mark.large
def test_full_axial_r50_parameter_counts():
    """deeplab2's published kMaX Axial-R50 (README section 2e)."""
    model = build_kmax_model("kmax_axial_r50", 65)
    assert count_values(model.trainable_weights) == 90_272_254
    assert count_values(model.non_trainable_weights) == 305_198
