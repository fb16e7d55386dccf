"""The pages the build writes into docs/ before Sphinx reads it (git ignores them):

    docs/tutorials/<name>.ipynb   the executed copies of the tutorials
    docs/twins/<kind>.md          one side-by-side page per layer kind of scratch/registry.py
    docs/api/<module>.md          one API page per module of scratch/ and keras_impl/

Every page names its code by file and object, and Sphinx's `literalinclude` reads it from
the source files when it builds: nothing here copies code into Markdown. The one line
written out is the Keras layer a kind makes, computed from its registry entry.
"""
from __future__ import annotations

import ast
import dataclasses
import os
import re
import shutil
from pathlib import Path

import nbformat

from coursesite.notebooks import ROOT, TUTORIALS

DOCS = ROOT / "docs"
GENERATED = {"tutorials": DOCS / "tutorials", "twins": DOCS / "twins", "api": DOCS / "api"}
API_PACKAGES = ("scratch", "keras_impl")
READABLE_FILES = ("scratch/layers.py", "scratch/residual.py")  # where readable pairs live
FAST_FILE = "scratch/fast_layers.py"
KERAS_BLOCKS = "keras_impl/blocks.py"  # Keras twins that are not built-in layers
LOCAL_LINK = re.compile(r"\]\((?![a-z][a-z0-9+.-]*:|#|/)([^)\s]+)\)")


def fresh_folder(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def rebase_links(text: str, source_folder: Path, target_folder: Path) -> str:
    """Markdown links relative to `source_folder` made relative to `target_folder`."""
    def rebase(match):
        target = os.path.relpath(source_folder / match[1], target_folder)
        return f"]({Path(target).as_posix()})"
    return LOCAL_LINK.sub(rebase, text)


def place_notebooks(copies: list[Path]) -> None:
    """The executed notebooks into docs/tutorials/, their links still pointing where the
    tutorials/ originals point."""
    folder = fresh_folder(GENERATED["tutorials"])
    for path in copies:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = rebase_links(cell.source, TUTORIALS, folder)
        nbformat.write(nb, folder / path.name)


# --- the twins side by side ----------------------------------------------------------------


def defined_names(relative: str) -> set[str]:
    """The top-level function and class names of a project file."""
    tree = ast.parse((ROOT / relative).read_text(encoding="utf-8"))
    return {node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def registry_entry_lines(kind: str) -> tuple[int, int]:
    """First and last line of the `LayerKind("<kind>", ...)` call in scratch/registry.py."""
    tree = ast.parse((ROOT / "scratch/registry.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "LayerKind"
                and node.args and getattr(node.args[0], "value", None) == kind):
            return node.lineno, node.end_lineno
    raise LookupError(f"scratch/registry.py: no LayerKind({kind!r}, ...) entry")


def include(relative: str, depth: int, **options) -> str:
    """A MyST literalinclude of a project file, from a page `depth` folders below docs/."""
    path = "/".join([".."] * (depth + 1) + [relative])
    lines = [f"```{{literalinclude}} {path}", ":language: python"]
    lines += [f":{key}: {value}".rstrip() for key, value in options.items()]
    return "\n".join(lines + ["```", ""])


def tab(title: str, sync: str, body: str) -> str:
    return f":::{{tab-item}} {title}\n:sync: {sync}\n\n{body}\n:::\n"


def keras_call(kind) -> str:
    """The Keras layer the kind's example spec makes, as a line of Python."""
    arguments = ", ".join(f"{key}={value!r}" for key, value in kind.keras_kwargs(kind.example).items())
    module = "keras_impl.blocks" if kind.keras_class in defined_names(KERAS_BLOCKS) else "keras.layers"
    return f"{module}.{kind.keras_class}({arguments})"


def spec_text(spec) -> str:
    """A LayerSpec as the zoo writes one: its kind and the fields that differ from the
    defaults, `LayerSpec("conv2d", filters=4, kernel_size=3, activation='relu')`."""
    changed = [f"{f.name}={getattr(spec, f.name)!r}" for f in dataclasses.fields(spec)[1:]
               if getattr(spec, f.name) != f.default]
    return f'LayerSpec("{spec.kind}"' + "".join(f", {text}" for text in changed) + ")"


def twin_page(kind) -> str:
    """The side-by-side page of one layer kind: NumPy's readable pair, its fast pair when
    it has one, and its Keras twin, in tabs that switch together on every page."""
    pair = [f"{kind.name}_forward", f"{kind.name}_backward"]
    home = next((f for f in READABLE_FILES if set(pair) <= defined_names(f)), None)
    if home is None:
        raise LookupError(f"layer kind {kind.name}: no {pair[0]}/{pair[1]} in "
                          f"{' or '.join(READABLE_FILES)}")
    numpy = (f"The readable pair in `{home}`: the forward pass returns the output and a cache, "
             "the backward pass takes the gradient of the output and returns the gradients.\n\n"
             + "".join(include(home, 1, pyobject=name) for name in pair))
    tabs = [tab("NumPy", "numpy", numpy)]
    if set(pair) <= defined_names(FAST_FILE):
        fast = (f"The same pair made fast in `{FAST_FILE}` (same arguments, same numbers; "
                "`tests/test_fast_layers.py` proves them equal).\n\n"
                + "".join(include(FAST_FILE, 1, pyobject=name) for name in pair))
        tabs.append(tab("NumPy, fast", "numpy-fast", fast))
    first, last = registry_entry_lines(kind.name)
    keras = ("The Keras twin of the example layer, as `keras_impl.zoo_model.keras_layer` builds "
             "it from the registry (Keras computes the gradients: `tf.GradientTape`):\n\n"
             f"```python\n{keras_call(kind)}\n```\n\n"
             "The kind's entry in `scratch/registry.py`, read by both twins:\n\n"
             + include("scratch/registry.py", 1, lines=f"{first}-{last}", dedent=""))
    if kind.keras_class in defined_names(KERAS_BLOCKS):
        keras += (f"\nKeras has no such layer: the twin is written in `{KERAS_BLOCKS}` "
                  "from Keras's own layers.\n\n" + include(KERAS_BLOCKS, 1, pyobject=kind.keras_class))
    else:
        keras += "\nHow `keras_impl/zoo_model.py` makes the layer:\n\n" + include(
            "keras_impl/zoo_model.py", 1, pyobject="keras_layer")
    tabs.append(tab("Keras", "keras", keras))
    return (f"# `{kind.name}`\n\n"
            f"The layer kind `{kind.name}` twice, with the example "
            f"`{spec_text(kind.example)}`.\n\n"
            "::::{tab-set}\n:sync-group: twin\n\n" + "\n".join(tabs) + "::::\n")


def write_twin_pages() -> list[str]:
    from scratch.registry import KINDS

    folder = fresh_folder(GENERATED["twins"])
    for kind in KINDS.values():
        (folder / f"{kind.name}.md").write_text(twin_page(kind), encoding="utf-8")
    return list(KINDS)


# --- the API reference ---------------------------------------------------------------------


def api_modules() -> list[str]:
    """The dotted names of every module of the API packages, each package first."""
    names = []
    for package in API_PACKAGES:
        names.append(package)
        names += [f"{package}.{path.stem}" for path in sorted((ROOT / package).glob("*.py"))
                  if path.stem != "__init__"]
    return names


def write_api_pages() -> list[str]:
    folder = fresh_folder(GENERATED["api"])
    modules = api_modules()
    for module in modules:
        (folder / f"{module}.md").write_text(
            # autodoc writes reStructuredText, so the directive runs inside eval-rst
            f"# `{module}`\n\n```{{eval-rst}}\n.. automodule:: {module}\n   :members:\n```\n",
            encoding="utf-8")
    return modules
