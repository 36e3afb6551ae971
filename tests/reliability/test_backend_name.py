"""Issue item: a misspelt KERAS_BACKEND gave a 26-line traceback without the valid names."""

from tests.helpers import run_python


def test_a_misspelt_backend_is_named_with_the_valid_ones():
    code, _, err = run_python("import keras_maxdeeplab", env={"KERAS_BACKEND": "pytorch"})
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "ImportError: KERAS_BACKEND='pytorch' is not a Keras backend; keras-maxdeeplab runs on "
        "'jax', 'tensorflow' or 'torch' (e.g. export KERAS_BACKEND=torch)."
    )
