"""Issue item: the final preset of `train` was written straight into place: an
interrupted re-save left new task weights beside an old backbone, and that
loaded without error. Presets are now written beside and swapped in."""

import os
import signal

from keras_maxdeeplab.atomic_files import write_folder_atomically
from tests.helpers import python_child

# Rewrites a two-file "preset" slowly: the kill lands between the two files.
SLOW_RESAVE = """
import os, sys, time
from keras_maxdeeplab.atomic_files import write_folder_atomically

def fill(folder):
    with open(os.path.join(folder, "task.weights.h5"), "w") as f:
        f.write("new task")
    print("half written", flush=True)
    time.sleep(60)
    with open(os.path.join(folder, "model.weights.h5"), "w") as f:
        f.write("new backbone")

write_folder_atomically(sys.argv[1], fill)
"""


def _fill(task, backbone):
    def fill(folder):
        for name, text in (("task.weights.h5", task), ("model.weights.h5", backbone)):
            with open(os.path.join(folder, name), "w") as f:
                f.write(text)

    return fill


def _contents(folder):
    return {name: open(os.path.join(folder, name)).read() for name in sorted(os.listdir(folder))}


def test_a_killed_resave_leaves_the_old_preset_whole(tmp_path):
    preset = str(tmp_path / "preset")
    write_folder_atomically(preset, _fill("old task", "old backbone"))
    child = python_child(SLOW_RESAVE, preset)
    assert child.stdout.readline().strip() == "half written"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert _contents(preset) == {"model.weights.h5": "old backbone", "task.weights.h5": "old task"}
    # The next save replaces it whole, and takes its leftovers' place cleanly.
    write_folder_atomically(preset, _fill("new task", "new backbone"))
    assert _contents(preset) == {"model.weights.h5": "new backbone", "task.weights.h5": "new task"}
    leftovers = [name for name in os.listdir(tmp_path) if name.startswith(".preset.writing-")]
    assert len(leftovers) == 1  # the killed attempt's hidden folder, never read as a preset


def test_a_failed_save_leaves_nothing(tmp_path):
    preset = str(tmp_path / "preset")

    def failing(folder):
        _fill("t", "b")(folder)
        raise OSError("disk full")

    try:
        write_folder_atomically(preset, failing)
    except OSError:
        pass
    assert os.listdir(tmp_path) == []
