"""Fails when a module of the package imports one from a higher layer.

The package is layered; a module may import its own layer or any lower one,
never a higher one. Every import counts, those inside functions too (a lazy
import still makes the lower layer depend on the higher one).

Usage: python tools/check_layering.py [PACKAGE_DIR]   (default: keras_maxdeeplab)
Prints, per layer, which parts each part imports; exit 0 when clean, 1 with
one line `file:line: ...` per upward import.
"""

import ast
import os
import sys

# Lowest first. An entry is a top-level module or sub-package of the package;
# entries in one tuple share a layer and may import one another.
LAYERS = (
    # Files written whole or not at all; the package's version.
    ("atomic_files", "version"),
    # COCO panoptic format and class layout; the one backend switch; image files.
    ("coco", "backend_seam", "image_files"),
    ("layers", "optimizers", "training_checkpoint"),  # Keras layers, optimiser, callbacks
    ("losses", "postprocessing", "data", "visualization"),
    ("evaluation",),  # PQ; its metric post-processes model outputs
    ("models",),  # the model, its configs and preset table
    ("conversion", "prediction_writer"),  # deeplab2 checkpoints; predictions to files
    ("hub",),  # loading presets: names, the cache, Hugging Face, first-use conversion
    ("__init__",),  # the package's public names
    ("demo",),
    ("cli",),
)
# The one sanctioned upward import: `from_preset`, keras-hub's entry point on
# the model classes, hands over to the preset loader (imported inside it).
ENTRY_POINTS = {("models", "hub")}


def layer_of(part):
    for index, names in enumerate(LAYERS):
        if part in names:
            return index
    return None


def module_part(package, module):
    """The top-level part of `package` that dotted `module` names, or None."""
    pieces = module.split(".")
    if pieces[0] != package:
        return None
    return pieces[1] if len(pieces) > 1 else "__init__"


def imported_modules(tree, package_dir, module):
    """`(line, dotted name)` of every import in `tree`, relative ones resolved.

    `module` is the importing module's dotted name (`pkg.sub.__init__` for a
    package's `__init__.py`, so relative imports resolve from the package).
    """
    package = os.path.basename(package_dir)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            # `from pkg import demo` imports the module `demo`; `from pkg
            # import MaXDeepLab` a name of the package's `__init__`.
            if name == package:
                for alias in node.names:
                    path = os.path.join(package_dir, alias.name)
                    is_module = os.path.isdir(path) or os.path.isfile(path + ".py")
                    yield node.lineno, f"{package}.{alias.name}" if is_module else package
            else:
                yield node.lineno, name


def check(package_dir):
    """`(imports, problems)` of `package_dir`: `{part: {imported parts}}` and
    the upward imports as `file:line: message` strings."""
    package_dir = os.path.normpath(package_dir)
    package = os.path.basename(package_dir)
    root = os.path.dirname(package_dir)
    imports, problems = {}, []
    for folder, _, files in sorted(os.walk(package_dir)):
        for file_name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, file_name)
            relative = os.path.relpath(path, root)
            module = relative[: -len(".py")].replace(os.sep, ".")
            part = module_part(package, module.removesuffix(".__init__"))
            own_layer = layer_of(part)
            imports.setdefault(part, set())
            if own_layer is None:
                problems.append(f"{relative}:1: '{part}' is in no layer of LAYERS")
                continue
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for line, name in imported_modules(tree, package_dir, module):
                target = module_part(package, name)
                if target is None or target == part:
                    continue
                imports[part].add(target)
                target_layer = layer_of(target)
                upward = target_layer is None or target_layer > own_layer
                if upward and (part, target) not in ENTRY_POINTS:
                    problems.append(
                        f"{relative}:{line}: '{part}' imports {name}, "
                        f"from a higher layer ('{target}')"
                    )
    return imports, problems


def main(argv):
    package_dir = argv[1] if len(argv) > 1 else os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "keras_maxdeeplab"
    )
    imports, problems = check(package_dir)
    for index, names in enumerate(LAYERS):
        for part in names:
            if part in imports:
                print(f"{index} {part} -> {', '.join(sorted(imports[part])) or '-'}")
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} upward import(s); the order is LAYERS in {__file__}.")
        return 1
    print(f"Layering of {package_dir}: clean.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
