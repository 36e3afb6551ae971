"""kMaX-DeepLab with the Axial-ResNet-50 encoder against deeplab2's reduced
reference model (../shared/reference/kmax_deeplab_tiny/axial_r50)."""

import numpy as np
import pytest

from keras_maxdeeplab.conversion.deeplab2 import load_kmax_checkpoint
from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model
from tests.helpers import shared_path
from tests.helpers import to_numpy

REFERENCE = ("reference", "kmax_deeplab_tiny")


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _tolerance(key, reference):
    """README section 8: encoder / pixel decoder 1e-5 of the range + 1e-6;
    transformer decoder features and raw outputs 5e-5 of the range."""
    scale = float(np.max(np.abs(reference)))
    if key.startswith(("encoder/", "pixel_decoder/")):
        return 1e-5 * scale + 1e-6
    return 5e-5 * scale


def test_every_reference_array_s65():
    """The axial reference keeps the encoder, pixel decoder, k-means
    assignments, embeddings and final outputs (README section 5)."""
    io = np.load(shared_path(*REFERENCE, "axial_r50", "io.npz"))
    inputs = np.load(shared_path(*REFERENCE, "io.npz"))["s65/input/image_0_255"]
    model = build_kmax_model("kmax_axial_r50_tiny", 65)
    load_kmax_checkpoint(model, shared_path(*REFERENCE, "axial_r50", "ckpt"))
    assert _count(model.trainable_weights) == 736_534
    assert _count(model.non_trainable_weights) == 22_910
    arrays = to_numpy(model.intermediate_outputs(inputs / np.float32(127.5) - np.float32(1)))
    compared = []
    for key in io.files:
        if not key.startswith("s65/"):
            continue
        name = key[len("s65/") :]
        if name not in arrays:
            continue
        reference, ours = io[key], arrays[name]
        if name.endswith("kmeans_assignment"):
            np.testing.assert_array_equal(ours, reference, err_msg=name)
        else:
            np.testing.assert_allclose(
                ours, reference, rtol=0, atol=_tolerance(name, reference), err_msg=name
            )
        compared.append(name)
    assert len(compared) == 5 + 4 + 6 + 2 + 4, sorted(compared)


@pytest.mark.large
def test_full_axial_r50_parameter_counts():
    """deeplab2's published kMaX Axial-R50 (README section 2e)."""
    model = build_kmax_model("kmax_axial_r50", 65)
    assert _count(model.trainable_weights) == 90_272_254
    assert _count(model.non_trainable_weights) == 305_198
