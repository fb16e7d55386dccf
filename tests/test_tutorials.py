"""The tutorials: every notebook is committed without outputs and runs top to bottom in fast mode.

The execution tests start one Jupyter kernel per notebook (nbclient) with TWINNET_FAST=1,
the project folder on PYTHONPATH and a temporary working directory, so the notebooks' own
files (runs/...) never land in the repository. A failing cell fails the test with the cell
and its traceback; the notebooks assert their own numbers (1,765 parameters, gradient
errors, identical weights, ...), so running them checks them.
"""
import os
from pathlib import Path

import nbformat
import pytest

from helpers import MNIST_DIR, needs_mnist

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = ["01_data", "02_parameter_counting", "03_mlp_from_scratch", "04_cnn_from_scratch",
             "05_keras_sequential_fit", "06_subclass_gradienttape_tensorboard",
             "07_side_by_side", "08_experiments"]
NOTHING_TO_SHRINK = {"02_parameter_counting"}  # trains nothing, so it has no fast mode
CELL_TIMEOUT = 300  # seconds per cell: a safety net for a hung kernel, not a speed claim
FAST_SWITCH = 'os.environ.get("TWINNET_FAST") == "1"'


def read(name):
    return nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4)


def test_the_tutorials_folder_holds_exactly_the_course_notebooks():
    assert sorted(path.stem for path in TUTORIALS.glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean_and_teaches(name):
    nb = read(name)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    text = [cell for cell in nb.cells if cell.cell_type == "markdown"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert nb.cells[0].cell_type == "markdown"
    assert nb.cells[0].source.startswith(f"# {int(name[:2])} · ")  # the chapter's title
    assert len(text) >= 5  # explanation between the code, not a script in cells
    uses_switch = any(FAST_SWITCH in cell.source for cell in code)
    assert uses_switch == (name not in NOTHING_TO_SHRINK)


@needs_mnist
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom_in_fast_mode(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("TWINNET_FAST", "1")
    monkeypatch.setenv("MNIST_DIR", str(Path(MNIST_DIR).resolve()))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    # figures as display_data even where MPLBACKEND=Agg is set for headless runs
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    before = sorted(TUTORIALS.rglob("*"))
    nb = read(name)
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any(out.output_type == "display_data" for out in outputs)  # it showed its figures
    assert sorted(TUTORIALS.rglob("*")) == before  # wrote nothing into the repository
