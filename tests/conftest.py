import os
import shutil
import tempfile

import pytest

# Quieter TensorFlow (pulled in by keras-hub) in test logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The tests run tiny models, where XLA's compilation takes far longer than the
# run: compile without LLVM's optimisation passes (JAX, and TensorFlow's XLA),
# which cut the JAX suite's time by about a third, and with XLA:CPU's older
# fusion emitters, which compile the tiny training step in 20-35% less time
# (30-38 s against 46-53 s, JAX). Outputs stay within float noise.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), _FAST_COMPILE]))


def pytest_configure(config):
    """JAX keeps every compiled function in a cache folder for this session,
    shared with the processes tests start (guides, CLI runs): tests that build
    the same model at the same shapes compile it once. Set before JAX is
    imported; the folder is new each session, so no run depends on an earlier one."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    folder = tempfile.mkdtemp(prefix="keras_maxdeeplab_jax_cache_")
    config._jax_cache_folder = folder
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def pytest_unconfigure(config):
    folder = getattr(config, "_jax_cache_folder", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_addoption(parser):
    parser.addoption("--run-large", action="store_true", help="run tests marked large")
    parser.addoption("--run-extra-large", action="store_true", help="run tests marked extra_large")


def pytest_collection_modifyitems(config, items):
    run_large = config.getoption("--run-large") or config.getoption("--run-extra-large")
    run_extra_large = config.getoption("--run-extra-large")
    for item in items:
        if "extra_large" in item.keywords and not run_extra_large:
            item.add_marker(pytest.mark.skip(reason="extra_large: pass --run-extra-large"))
        elif "large" in item.keywords and not run_large:
            item.add_marker(pytest.mark.skip(reason="large: pass --run-large"))


@pytest.fixture(autouse=True)
def _no_real_preset_downloads(tmp_path_factory, monkeypatch):
    """Presets converted on first use land in a temporary KERAS_HOME, and
    deeplab2's archives are looked for on a port where nothing listens: no test
    writes to ~/.keras or reaches the internet."""
    from tests.hub_helpers import closed_port_url

    monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
    monkeypatch.setenv("KERAS_MAXDEEPLAB_CHECKPOINT_URL", closed_port_url())
