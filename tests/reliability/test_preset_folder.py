"""Issue item: a FIFO named task.json in a preset folder blocked from_preset forever."""

import os
import shutil

from keras_maxdeeplab.demo import DEMO_PRESET
from tests.helpers import run_python

# Loads each folder given, in one process (a child per folder would import
# Keras once per folder).
LOAD = """
import sys
from keras_maxdeeplab import MaXDeepLab
for folder in sys.argv[1:]:
    try:
        MaXDeepLab.from_preset(folder)
    except ValueError as error:
        print("refused:", error)
"""


def test_a_fifo_in_a_preset_folder_is_refused_not_read(tmp_path):
    names = ("task.json", "metadata.json")
    for name in names:
        folder = os.path.join(tmp_path, name)
        shutil.copytree(DEMO_PRESET, folder)
        os.remove(os.path.join(folder, name))
        os.mkfifo(os.path.join(folder, name))
    # Before the fix this never returned: the timeout turns a hang into a failure.
    code, out, err = run_python(LOAD, *(os.path.join(tmp_path, n) for n in names), timeout=120)
    assert code == 0, err[-2000:]
    for name in names:
        assert f"holds '{name}', which is not a regular file" in out
