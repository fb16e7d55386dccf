"""The grader on a class: each classic mistake named in words, every submission isolated in
its own process (hangs, crashes, exits, floods, huge allocations), the gradebook and
Gradescope's results.json.

The misbehaving files of the default suite misbehave while being imported, before
TensorFlow loads, so that their children cost about a second each; the whole generated
class of 30 (tests/grading_submissions.py) is graded in the slow test.
"""
import csv
import json
import sys
from pathlib import Path

import pytest

import compare
from comparison.grading import checks, classroom, sandbox, student

sys.path.insert(0, str(Path(__file__).parent))
import grading_submissions as submissions  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_blas_thread")

IN_PROCESS = ["mean_not_sum", "float32_out", "in_place", "no_max_shift", "pool_two",
              "tied_maxima", "spread", "variance_n_minus_1", "no_mean_term", "pad_wrong_side",
              "transposed", "sign_flipped", "raises", "three_tuple"]
def graded_in_process(tmp_path, name: str, source: str) -> sandbox.Graded:
    path = tmp_path / f"{name}.py"
    path.write_text(source.lstrip())
    layer, functions = student.load(path)
    return sandbox.Graded(str(path), layer, checks.layer_checks(layer, functions, network=False))


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")  # no_max_shift's, meant
@pytest.mark.parametrize("name", IN_PROCESS)
def test_each_classic_mistake_fails_with_its_diagnosis_in_words(name, tmp_path):
    layer, source, words = submissions.MISTAKES[name]
    graded = graded_in_process(tmp_path, name, source)
    assert graded.layer == layer and not graded.passed
    verdict = classroom.verdict_text(graded)
    assert words in verdict, verdict


@pytest.mark.parametrize("name", list(submissions.CORRECT))
def test_correct_files_written_apart_from_the_reference_pass(name, tmp_path):
    layer, source = submissions.CORRECT[name]
    graded = graded_in_process(tmp_path, name, source)
    assert graded.layer == layer
    assert graded.passed, [(r.check, r.where, r.diagnosis) for r in graded.results if not r.passed]


def test_a_wrong_dtype_fails_the_dtype_check_alone_at_batch_one(tmp_path):
    """With a batch of 1 a float32 dense output is still float32: the shapes-and-dtypes
    row must fail on the dtype, whatever the values' rows say."""
    graded = graded_in_process(tmp_path, "f32", submissions.MISTAKES["float32_out"][1])
    rows = {r.check: r for r in graded.results}
    assert not rows["shapes, dtypes (batch 1)"].passed
    assert rows["shapes, dtypes (batch 1)"].where == "out: float32 (1, 8), expected float64 (1, 8)"


def test_an_input_changed_in_place_by_backward_is_a_warning_not_a_failure(tmp_path):
    source = submissions.changed(submissions.RELU,
                                 '    return {"x": np.where(cache, dout, 0.0 * dout)}',
                                 '    dout[~cache] = 0\n    return {"x": dout}')
    graded = graded_in_process(tmp_path, "dout", source)
    assert graded.passed
    row = next(r for r in graded.results if r.check == "inputs left unchanged")
    assert row.where.startswith("warning: backward changed dout in place")


# --- isolation: files that misbehave while imported (cheap children) --------------------

AT_IMPORT = {
    "hangs": ("while True: pass\n", "timed out after 8 s at your line 1"),
    "exits_quietly": ("import os\nos._exit(0)\n", "ended early with exit status 0"),
    "crashes": ("import ctypes\nctypes.string_at(0)\n", "crashed (a segmentation fault, SIGSEGV)"),
    "floods": ("while True:\n    print('x' * 1000)\n", "printed more than 5 MB (an output flood)"),
    "allocates": ("import numpy as np\nbig = np.ones(10 * 2**30 // 8)\n",
                  "importing it raised MemoryError"),
    "calls_exit": ("import sys\nsys.exit(3)\n", "importing it called exit(3)"),
    "interrupts": ("raise KeyboardInterrupt\n", "importing it raised KeyboardInterrupt"),
}


def test_a_class_of_misbehaving_files_gets_a_failing_row_each(tmp_path, capsys):
    folder = tmp_path / "class"
    folder.mkdir()
    for name, (source, _) in AT_IMPORT.items():
        (folder / f"{name}.py").write_text(source)
    (folder / "latin1.py").write_bytes(b"# caf\xe9\nimport numpy\n")
    (folder / "notebook.ipynb").write_text("{}")
    (folder / "two_files").mkdir()
    for part in ("a.py", "b.py"):
        (folder / "two_files" / part).write_text("def relu_forward(x):\n    pass\n")
    book, scope = tmp_path / "out" / "grades.csv", tmp_path / "out" / "results.json"
    code = compare.main(["check", str(folder), "--jobs", "2", "--timeout", "8",
                         "--gradebook", str(book), "--gradescope", str(scope)])
    out = capsys.readouterr().out
    assert code == 1 and "0 of 10 submissions pass every check" in out
    rows = {row["student"]: row for row in csv.DictReader(book.open())}
    expected = {name: words for name, (_, words) in AT_IMPORT.items()}
    expected.update({"latin1": "line 1: byte 0xe9 is not utf-8",
                     "notebook": "expected a Python file ending in .py",
                     "two_files": "several files define exercise functions (a.py, b.py)"})
    assert set(rows) == set(expected)
    for name, words in expected.items():
        assert rows[name]["score"] == "0.000" and words in rows[name]["verdict"], rows[name]
    gradescope = json.loads(scope.read_text())
    assert len(gradescope["submissions"]) == 10
    for entry in gradescope["submissions"]:
        assert entry["score"] == 0 and entry["tests"][0]["max_score"] == 1
    assert "Traceback" not in out


def test_a_file_ending_the_grader_with_status_0_does_not_pass(tmp_path, capsys):
    path = tmp_path / "quiet.py"
    path.write_text("import os\nos._exit(0)\n")
    assert compare.main(["check", str(path), "--timeout", "8"]) == 1
    assert "exit status 0" in capsys.readouterr().err


def test_unwritable_outputs_are_refused_before_any_grading(tmp_path, capsys):
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "hangs.py").write_text("while True:\n    pass\n")
    with pytest.raises(SystemExit) as stop:
        compare.main(["check", str(tmp_path / "class"), "--gradebook", str(tmp_path / "class")])
    assert stop.value.code == 2 and "is a folder, expected a file name" in capsys.readouterr().err


def test_gradescope_results_of_one_submission_are_the_autograder_format():
    results = [checks.CheckResult("out = reference", True, 0.0, 1e-10),
               checks.CheckResult("dx = GradientTape", False, 0.5, 1e-10, where="worst at [0]",
                                  diagnosis="sign flipped")]
    graded = sandbox.Graded("/x/mine.py", "relu", results)
    result = classroom.gradescope_json([classroom.Submission("mine", Path("/x/mine.py"))],
                                       [graded])
    assert result["score"] == 1
    assert result["tests"] == [
        {"name": "out = reference", "score": 1, "max_score": 1, "output": ""},
        {"name": "dx = GradientTape", "score": 0, "max_score": 1,
         "output": "worst at [0]; sign flipped"}]


# --- the whole generated class ----------------------------------------------------------


@pytest.mark.slow
def test_a_generated_class_of_30_gets_the_right_gradebook_row_each(tmp_path, capsys):
    expected = submissions.write_class(tmp_path / "class")
    assert len(expected) == 30
    book = tmp_path / "grades.csv"
    code = compare.main(["check", str(tmp_path / "class"), "--no-network", "--jobs", "2",
                         "--timeout", "150", "--gradebook", str(book)])
    assert code == 1
    rows = {row["student"]: row for row in csv.DictReader(book.open())}
    assert set(rows) == set(expected)
    for student_name, (passes, words) in expected.items():
        row = rows[student_name]
        assert (row["score"] == "1.000") == passes and words in row["verdict"], row


def test_a_scalar_is_shown_as_a_scalar():
    import numpy as np

    from comparison.grading import diagnose

    assert diagnose.worst_entry(np.float64(4.6), np.float64(2.3)) == "4.6, expected 2.3"
    assert diagnose.diagnose(np.float64(4.6), np.float64(2.3), threshold=1e-10) == \
        "off by a factor 2.0"
    assert diagnose.diagnose(np.float64(np.nan), np.float64(2.3), threshold=1e-10).startswith(
        "NaN in your result; ")
