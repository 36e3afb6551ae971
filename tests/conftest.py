import os

import pytest

# Quieter TensorFlow (pulled in by keras-hub) in test logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
