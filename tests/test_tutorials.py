"""The tutorials: every notebook is committed without outputs, runs top to bottom in fast
mode, and every source it prints shows what its text says the source shows.

The execution tests start one Jupyter kernel per notebook (nbclient) with TWINNET_FAST=1,
the project folder on PYTHONPATH and a temporary working directory, so the notebooks' own
files (runs/...) never land in the repository (coursesite.notebooks.execute). A failing cell
fails the test with the cell and its traceback; the notebooks assert their own numbers
(1,765 parameters, gradient errors, identical weights, ...), so running them checks them.
Each notebook that passes is saved executed into build/executed/: the course site renders
those copies instead of executing the notebooks a second time.

Printed source. A code cell that shows real code prints `inspect.getsource(X)`. The
markdown cell right before it says what to look for: from the words "Read it" (or "Read
them") to the end of that markdown cell, every `code span` must appear in the source
printed, where `...` in a span stands for any text. So "Read it: `with tf.GradientTape()
as tape:`" fails the moment the printed function no longer holds its GradientTape. A
getsource cell whose markdown promises nothing fails too. The source is checked twice:
imported as the notebook imports it (fast, no MNIST), and as the executed notebook printed it.
"""
import ast
import inspect
import re
from pathlib import Path

import nbformat
import pytest

from coursesite import notebooks
from helpers import needs_mnist
from scratch.layer_classes import readable_function

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = ["01_data", "02_parameter_counting", "03_mlp_from_scratch", "04_cnn_from_scratch",
             "05_autodiff", "06_optimisers", "07_initialisation", "08_regularisation",
             "09_batchnorm", "10_keras_sequential_fit", "11_subclass_gradienttape_tensorboard",
             "12_side_by_side", "13_experiments", "14_write_your_own_layer", "15_explanations",
             "16_data_parallel", "appendix_tooling"]
NOTHING_TO_SHRINK = {"02_parameter_counting"}  # trains nothing, so it has no fast mode
FAST_SWITCH = 'os.environ.get("TWINNET_FAST") == "1"'
PROMISE = re.compile(r"\bread (?:it|them)\b", re.IGNORECASE)
CODE_SPAN = re.compile(r"`([^`]+)`")
NOISE = {  # what no student should have to read in a notebook's output
    "a TensorFlow C++ log line": re.compile(
        r"[\w/.-]+\.(?:cc|h):\d+\] |All log messages before absl::InitializeLog"),
    "rich's ipywidgets warning": re.compile(r"install \"?ipywidgets\"? for Jupyter support"),
    "an ANSI escape code": re.compile(r"\x1b\["),
}


def read(name):
    return nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4)


def shown_objects(cell) -> list[str]:
    """The expressions X of the `inspect.getsource(X)` calls in a code cell."""
    return [ast.unparse(node.args[0]) for node in ast.walk(ast.parse(cell.source))
            if isinstance(node, ast.Call) and node.args
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "getsource"]


def source_cells(nb) -> list[int]:
    """Indices of the code cells that print source."""
    return [i for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and shown_objects(cell)]


def promises(nb, index: int) -> list[str]:
    """The code spans the markdown cell before cell `index` promises its source shows."""
    text = nb.cells[index - 1].source if nb.cells[index - 1].cell_type == "markdown" else ""
    start = PROMISE.search(text)
    return CODE_SPAN.findall(text[start.end():]) if start else []


def broken_promises(spans: list[str], source: str) -> list[str]:
    """The spans `source` does not contain (`...` matches any text, any whitespace matches
    any whitespace, so a span may wrap across lines of the markdown)."""
    def pattern(span):
        pieces = (r"\s+".join(map(re.escape, piece.split())) for piece in span.split("..."))
        return ".*?".join(pieces)
    return [span for span in spans if not re.search(pattern(span), source, re.DOTALL)]


def noise(nb) -> list[str]:
    """Where an executed notebook's text outputs (printed streams, the text/plain of results
    and displays) hold one of NOISE: 'cell N: what' for each."""
    found = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            text = (out.text if out.output_type == "stream"
                    else out.get("data", {}).get("text/plain", ""))
            found += [f"cell {index}: {what}" for what, pattern in NOISE.items()
                      if pattern.search(text) and f"cell {index}: {what}" not in found]
    return found


def notebook_imports(nb, upto: int) -> dict:
    """A namespace holding what cells 0..upto import (their import statements only)."""
    namespace: dict = {}
    for cell in nb.cells[:upto + 1]:
        if cell.cell_type == "code":
            imports = [node for node in ast.parse(cell.source).body
                       if isinstance(node, (ast.Import, ast.ImportFrom))]
            exec(compile(ast.Module(imports, type_ignores=[]), "<notebook imports>", "exec"),
                 namespace)
    return namespace


SOURCE_CELLS = [(name, index) for name in NOTEBOOKS for index in source_cells(read(name))]
READ_THE_CODE = {"03_mlp_from_scratch", "04_cnn_from_scratch",  # the layers, the loop
                 "11_subclass_gradienttape_tensorboard"}        # the model, the train step


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
    number = "Appendix" if name.startswith("appendix") else int(name[:2])
    assert nb.cells[0].source.startswith(f"# {number} · ")  # the chapter's title
    assert len(text) >= 5  # explanation between the code, not a script in cells
    uses_switch = any(FAST_SWITCH in cell.source for cell in code)
    assert uses_switch == (name not in NOTHING_TO_SHRINK)


def test_the_chapters_about_the_code_print_it():
    # Without getsource cells the promise test below would check nothing.
    assert {name for name, _ in SOURCE_CELLS} >= READ_THE_CODE


@pytest.mark.parametrize("name, index", SOURCE_CELLS,
                         ids=[f"{name}-cell{index}" for name, index in SOURCE_CELLS])
def test_printed_source_shows_what_the_markdown_promises(name, index):
    nb = read(name)
    spans = promises(nb, index)
    assert spans, (f"{name} cell {index} prints source, but the markdown cell before it "
                   "promises nothing: end it with 'Read it: `...`'")
    namespace = notebook_imports(nb, index)
    source = "\n".join(inspect.getsource(eval(expression, namespace))
                       for expression in shown_objects(nb.cells[index]))
    assert not broken_promises(spans, source), f"{name} cell {index} no longer shows these"


def test_noise_finds_each_kind_in_a_crafted_output():
    v4 = nbformat.v4
    lines = {"a TensorFlow C++ log line": "E0000 00:00:1733 2913 cuda_executor.cc:1228] "
                                          "failed call to cuInit: UNKNOWN ERROR (303)\n",
             "rich's ipywidgets warning": "UserWarning: install \"ipywidgets\" for Jupyter "
                                          "support\n",
             "an ANSI escape code": "Model: \x1b[1m\"sequential\"\x1b[0m\n"}
    clean = v4.new_output("stream", name="stdout", text="epoch 1: loss 0.31 (cuda.cc is a file)\n")
    for what, line in lines.items():
        cell = v4.new_code_cell("pass", outputs=[clean, *2 * [v4.new_output(
            "stream", name="stderr", text=line)]])  # said once per cell
        shown = v4.new_code_cell("pass", outputs=[v4.new_output(
            "display_data", data={"text/plain": line, "image/png": ""})])
        nb = v4.new_notebook(cells=[v4.new_markdown_cell("text"), cell, shown])
        assert noise(nb) == [f"cell 1: {what}", f"cell 2: {what}"]
    assert noise(v4.new_notebook(cells=[v4.new_code_cell("pass", outputs=[clean])])) == []


def exercise_stubs(nb) -> list[tuple[str, str]]:
    """(name, source) of every function in a code cell that is still an exercise stub: its
    body raises NotImplementedError("TODO: write NAME")."""
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code" or "NotImplementedError" not in cell.source:
            continue
        for node in ast.parse(cell.source).body:
            if (isinstance(node, ast.FunctionDef) and isinstance(node.body[-1], ast.Raise)
                    and f"TODO: write {node.name}" in ast.unparse(node.body[-1])):
                found.append((node.name, ast.get_source_segment(cell.source, node)))
    return found


STUBS = [(name, function) for name in NOTEBOOKS for function, _ in exercise_stubs(read(name))
         if readable_function(function) is not None]  # the layers' exercises


@pytest.mark.parametrize("name, function", STUBS, ids=[f"{n}-{f}" for n, f in STUBS])
def test_exercise_stub_cells_are_the_generated_exercise(name, function):
    # the cell a student writes in keeps the reference's signature and docstring
    from comparison.grading.exercise import stub

    source = dict(exercise_stubs(read(name)))[function]
    assert source + "\n" == stub(readable_function(function)), \
        f"{name}: rewrite the cell of {function} from comparison.grading.exercise.stub"


def test_promises_match_literally_with_dots_for_any_text():
    source = ("def train_step(x, y):\n"
              "    with tf.GradientTape() as tape:\n"
              "        logits = model(x, training=True)\n")
    kept = ["with tf.GradientTape() as tape:", "def train_step(...):", "model(x,\n training=True)"]
    broken = ["tf.GradientTape(persistent=True)", "def test_step(...)", "model(x)"]
    assert broken_promises(kept + broken, source) == broken


@needs_mnist
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom_in_fast_mode(name, tmp_path):
    before = sorted(TUTORIALS.rglob("*"))
    nb = notebooks.execute(TUTORIALS / f"{name}.ipynb", tmp_path)
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any(out.output_type == "display_data" for out in outputs)  # it showed its figures
    assert sorted(TUTORIALS.rglob("*")) == before  # wrote nothing into the repository
    assert not noise(nb), f"printed what a student should not read: {noise(nb)}"
    for index in source_cells(nb):  # what the kernel printed keeps the markdown's promise
        printed = "".join(out.text for out in nb.cells[index].outputs
                          if out.output_type == "stream")
        assert not broken_promises(promises(nb, index), printed), f"cell {index}"
    notebooks.save_executed(TUTORIALS / f"{name}.ipynb", nb)  # the course site renders it
