import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "tools", "check_layering.py")


def _run(*args):
    return subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=60
    )


def test_the_package_has_no_upward_import():
    result = _run()
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[-1].endswith("keras_maxdeeplab: clean.")
    # The bottom imports nothing of the package; the CLI sits on top of it.
    assert "0 atomic_files -> -" in lines and "1 coco -> atomic_files" in lines
    assert any(line.startswith("10 cli -> ") and "__init__" in line for line in lines)


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_an_upward_import_inside_a_function_fails_with_file_and_line(tmp_path):
    package = tmp_path / "keras_maxdeeplab"
    _write(str(package / "__init__.py"), "")
    _write(str(package / "coco" / "__init__.py"), "from . import format\n")
    _write(str(package / "coco" / "format.py"), "import os\n")
    # A lazy import still counts: line 3 of a bottom-layer module reaches the CLI.
    _write(
        str(package / "layers" / "resize.py"),
        "def resize():\n"
        "    from keras_maxdeeplab.coco import format\n"
        "    from keras_maxdeeplab.cli import main\n",
    )
    _write(str(package / "cli" / "__init__.py"), "from keras_maxdeeplab import layers\n")
    result = _run(str(package))
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if ".py:" in line]
    assert lines[0] == (
        f"keras_maxdeeplab{os.sep}layers{os.sep}resize.py:3: 'layers' imports "
        "keras_maxdeeplab.cli, from a higher layer ('cli')"
    )
    assert len(lines) == 1
    assert result.stdout.splitlines()[-1].startswith("1 upward import(s)")
    assert "2 layers -> cli, coco" in result.stdout


def test_a_module_outside_every_layer_fails(tmp_path):
    package = tmp_path / "keras_maxdeeplab"
    _write(str(package / "__init__.py"), "")
    _write(str(package / "extras.py"), "")
    result = _run(str(package))
    assert result.returncode == 1
    assert f"keras_maxdeeplab{os.sep}extras.py:1: 'extras' is in no layer" in result.stdout
