"""Executing the tutorials in fast mode, once: the tests run each notebook with this, and
keep the executed copy for the course site, which renders those copies.

    nb = execute(path, workdir)           # TWINNET_FAST=1, a fresh kernel, `workdir` as cwd
    save_executed(path, nb)               # build/executed/<name>.ipynb, stamped
    executed_copy(path)                   # that copy's path when it is current, else None

A copy is current when it was executed from the notebook as it is now: its metadata holds
the SHA-256 of the notebook file it was executed from. `python -m coursesite --fresh`
executes every notebook again (after a code change that leaves the notebooks alone).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import nbformat

from plumbing.files import write_text

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
EXECUTED = ROOT / "build" / "executed"
CELL_TIMEOUT = 300  # seconds per cell: a safety net for a hung kernel, not a speed claim
STAMP = "twinnet_executed_from_sha256"


def tutorials() -> list[Path]:
    """Every notebook of tutorials/, in file-name order (chapters first, appendices last)."""
    return sorted(TUTORIALS.glob("*.ipynb"))


def fast_mode_environment(mnist_dir: str) -> dict[str, str]:
    """The kernel's environment: fast mode, MNIST by absolute path (the kernel runs in
    another folder), the project first on PYTHONPATH, figures as display_data even where
    MPLBACKEND=Agg is set for headless runs."""
    env = dict(os.environ, TWINNET_FAST="1", MNIST_DIR=str(Path(mnist_dir).resolve()),
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    # ipykernel leaves file descriptors 1 and 2 alone under pytest; without this variable it
    # sends them to the notebook, as Jupyter does, so TensorFlow's C++ lines would show there
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def execute(path: Path, workdir: Path, mnist_dir: str | None = None) -> nbformat.NotebookNode:
    """The notebook at `path` executed top to bottom in fast mode by a fresh Python kernel
    whose working folder is `workdir` (the notebook's files land there). A failing cell
    raises nbclient's CellExecutionError, naming the cell and its traceback."""
    from nbclient import NotebookClient

    mnist_dir = mnist_dir or os.environ.get("MNIST_DIR")
    if not mnist_dir:
        raise ValueError("MNIST_DIR is not set: the tutorials need real MNIST")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    # The kernel's own stderr (TensorFlow's C++ start-up lines, Jupyter's notices) is not
    # the notebook's output: a cell's errors and prints reach `nb` through the kernel.
    client.execute(env=fast_mode_environment(mnist_dir), stderr=subprocess.DEVNULL)
    nb.metadata[STAMP] = source_hash(path)
    return nb


def source_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def copy_path(path: Path, folder: Path = EXECUTED) -> Path:
    return folder / Path(path).name


def save_executed(path: Path, nb: nbformat.NotebookNode, folder: Path = EXECUTED) -> Path:
    """Write the executed notebook `nb` of the tutorial at `path` into `folder` (whole or
    not at all: test workers write side by side)."""
    target = copy_path(path, folder)
    write_text(target, nbformat.writes(nb))
    return target


def executed_copy(path: Path, folder: Path = EXECUTED) -> Path | None:
    """The executed copy of the tutorial at `path` if it was made from the notebook as it
    is now, else None."""
    target = copy_path(path, folder)
    try:
        stamp = nbformat.read(target, as_version=4).metadata.get(STAMP)
    except (OSError, ValueError):
        return None
    return target if stamp == source_hash(path) else None


def run_one(path: str, workdir: str, mnist_dir: str) -> str:
    """Execute and save one tutorial (a worker of the site build); returns the copy's path."""
    return str(save_executed(Path(path), execute(Path(path), Path(workdir), mnist_dir)))

