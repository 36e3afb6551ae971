"""Issue item: a misspelt KERAS_BACKEND gave a 26-line traceback without the valid names."""

import os
import subprocess
import sys

from tests.helpers import REPO


def test_a_misspelt_backend_is_named_with_the_valid_ones():
    done = subprocess.run(
        [sys.executable, "-c", "import keras_maxdeeplab"],
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": "pytorch", "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "ImportError: KERAS_BACKEND='pytorch' is not a Keras backend; keras-maxdeeplab runs on "
        "'jax', 'tensorflow' or 'torch' (e.g. export KERAS_BACKEND=torch)."
    )
