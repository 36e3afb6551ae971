"""Renders the guides: each `guides/NAME.py` -> executed `NAME.ipynb` and `NAME.md` + `NAME_files/*.png`.

    KERAS_BACKEND=jax GUIDES_SMALL=1 python guides/render.py            # every guide
    KERAS_BACKEND=jax GUIDES_SMALL=1 python guides/render.py fine_tuning_max_deeplab

A guide is a keras.io "tutobook": a header docstring (`Title:`, `Author:`, ...),
then code, with prose in top-level triple-quoted blocks. Each prose block becomes
a Markdown cell and each stretch of code between them a code cell. The notebook
is executed by nbclient in a fresh temporary folder (so the files a guide writes
never land in the repository), with this process's environment (backend, scale
knob); nbconvert then writes the Markdown and extracts the figures beside it.
The rendered files are outputs of this script only: edit the `.py` and re-render.
"""

import os
import shutil
import sys
import tempfile

import nbconvert
import nbformat
from nbclient import NotebookClient

GUIDES_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(GUIDES_DIR)
HEADER_FIELDS = ("Title", "Author", "Date created", "Last modified", "Description", "Accelerator")
PROSE_FENCE = '"""'
# One guide's cells may train a model on a CPU.
CELL_TIMEOUT_S = 1800


def parse_header(block):
    """The header docstring's `Field: value` lines as a dict; all of HEADER_FIELDS are required."""
    fields = {}
    for line in block.strip().splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    missing = [f for f in HEADER_FIELDS if f not in fields]
    if missing:
        raise ValueError(f"guide header lacks {missing}")
    return fields


def split_guide(source):
    """`[(kind, text)]` with kind "prose" or "code", in order; the first is the header."""
    parts, lines, in_prose = [], [], False
    for line in source.splitlines():
        if line.rstrip() == PROSE_FENCE:
            text = "\n".join(lines).strip("\n")
            if in_prose or text.strip():
                parts.append(("prose" if in_prose else "code", text))
            lines, in_prose = [], not in_prose
        else:
            lines.append(line)
    if in_prose:
        raise ValueError("unterminated prose block")
    if "\n".join(lines).strip():
        parts.append(("code", "\n".join(lines).strip("\n")))
    if not parts or parts[0][0] != "prose":
        raise ValueError("a guide starts with its header docstring")
    return parts


def to_notebook(path):
    with open(path) as f:
        parts = split_guide(f.read())
    header = parse_header(parts[0][1])
    title = (
        f"# {header['Title']}\n\n"
        + "\n".join(f"**{f}:** {header[f]}<br>" for f in HEADER_FIELDS[1:])
    )
    cells = [nbformat.v4.new_markdown_cell(title)]
    for kind, text in parts[1:]:
        new_cell = nbformat.v4.new_markdown_cell if kind == "prose" else nbformat.v4.new_code_cell
        cells.append(new_cell(text))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def render(name):
    notebook = to_notebook(os.path.join(GUIDES_DIR, f"{name}.py"))
    with tempfile.TemporaryDirectory() as workdir:
        NotebookClient(
            notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
            resources={"metadata": {"path": workdir}},
        ).execute()
    nbformat.write(notebook, os.path.join(GUIDES_DIR, f"{name}.ipynb"))
    files_dir = f"{name}_files"
    body, resources = nbconvert.MarkdownExporter().from_notebook_node(
        notebook, resources={"output_files_dir": files_dir}
    )
    figures_dir = os.path.join(GUIDES_DIR, files_dir)
    shutil.rmtree(figures_dir, ignore_errors=True)  # figures of an earlier rendering
    if resources["outputs"]:
        os.makedirs(figures_dir)
    for filename, data in resources["outputs"].items():
        with open(os.path.join(GUIDES_DIR, filename), "wb") as f:
            f.write(data)
    with open(os.path.join(GUIDES_DIR, f"{name}.md"), "w") as f:
        f.write(body)
    print(f"rendered {name}: {len(notebook.cells)} cells, {len(resources['outputs'])} figures")


def main(names):
    # The kernel inherits this environment: the repository on the path, quiet TensorFlow.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_DIR, os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    guides = names or sorted(
        f[:-3] for f in os.listdir(GUIDES_DIR)
        if f.endswith(".py") and f != os.path.basename(__file__)
    )
    for name in guides:
        render(name)


if __name__ == "__main__":
    main(sys.argv[1:])
