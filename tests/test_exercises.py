"""Exercise files and `python compare.py check` (comparison/grading).

The reference functions must pass every check of every layer; an unfilled exercise must
fail cleanly (exit 1, the student's NotImplementedError, no traceback of ours); planted
mistakes must get their diagnosis; a broken file must get one line naming it.
"""
import ast
import inspect
import io
import json
import textwrap

import numpy as np
import pytest
from rich.console import Console

import compare
from comparison.grading import checks, exercise, network, report, sandbox, student
from scratch import layers, losses

pytestmark = pytest.mark.usefixtures("one_blas_thread")

LAYERS = exercise.layer_names()
CONV_CHECKS = 63  # the rows of a conv2d report: six settings (cases.SETTINGS) and the network
OUR_CODE = ("keras_impl", "scratch/", "compare.py", "Traceback (most recent call last)")


def run_check(capsys, *args):
    code = compare.main(["check", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def mutated(module, name, old, new):
    """`name` of `module` with the text `old` of its source replaced by `new` (which must
    be there: a planted mistake that no longer applies fails the test)."""
    source = textwrap.dedent(inspect.getsource(getattr(module, name)))
    assert source.count(old) == 1, (name, old)
    namespace = dict(vars(module))  # the helpers it calls (pad_input, ...) included
    exec(source.replace(old, new), namespace)  # noqa: S102 - our own reference source
    return namespace[name]


def failing(results):
    return {r.check: r for r in results if not r.passed}


# --- exercise files -------------------------------------------------------------------


def test_every_registry_kind_and_the_loss_has_an_exercise():
    from scratch.registry import KINDS

    assert LAYERS == [*KINDS, "softmax_cross_entropy"]
    for kind in KINDS:
        assert list(exercise.reference_functions(kind)) == [f"{kind}_forward", f"{kind}_backward"]


@pytest.mark.parametrize("layer", LAYERS)
def test_exercise_file_has_the_reference_signatures_docstrings_and_todo_bodies(layer, tmp_path):
    path = exercise.write_exercise(layer, tmp_path / f"ex_{layer}.py")
    source = path.read_text()
    tree = ast.parse(source)
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names]
    assert imported == ["numpy"]
    assert not any(isinstance(node, ast.ImportFrom) for node in ast.walk(tree))
    namespace = {}
    exec(compile(source, str(path), "exec"), namespace)  # noqa: S102
    for name, reference in exercise.reference_functions(layer).items():
        stub = namespace[name]
        assert inspect.signature(stub) == inspect.signature(reference)
        assert inspect.getdoc(reference) in inspect.getdoc(stub)
        assert "Hint: " in inspect.getdoc(stub)
        arguments = [None] * len(inspect.signature(stub).parameters)
        with pytest.raises(NotImplementedError, match=f"TODO: write {name}"):
            stub(*arguments)
    if layer == "batchnorm":  # the constant its docstring names, by value
        assert namespace["BN_EPSILON"] == layers.BN_EPSILON


def test_exercise_command_writes_lists_and_keeps_an_existing_file(tmp_path, capsys):
    out = tmp_path / "my_dense.py"
    assert compare.main(["exercise", "dense", "--out", str(out)]) == 0
    assert "def dense_backward(dout, cache):" in out.read_text()
    out.write_text("# my work")
    assert compare.main(["exercise", "dense", "--out", str(out)]) == 2  # bad input, exit 2
    assert out.read_text() == "# my work"
    assert "exists" in capsys.readouterr().err
    assert compare.main(["exercise", "dense", "--out", str(out), "--force"]) == 0
    assert compare.main(["exercise", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(layer in listed for layer in LAYERS)
    assert compare.main(["exercise"]) == 1
    assert "error: give a LAYER (dense, relu" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        compare.main(["exercise", "convolution"])
    assert exit_.value.code == 2


# --- the reference passes, the unfilled exercise fails -----------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_reference_functions_pass_every_check(layer):
    results = checks.layer_checks(layer, exercise.reference_functions(layer))
    assert not failing(results), failing(results)
    names = [r.check for r in results]
    assert names[0].startswith("shapes, dtypes") and "SGD steps = Keras" in names[-1]
    assert any("central diff." in n for n in names) and any("GradientTape" in n for n in names)
    for r in results:  # every check but shapes and inputs measures an error against its limit
        assert r.check.startswith(("shapes", "inputs")) or r.error <= r.threshold, r


def test_reference_file_passes_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "my_conv.py"
    path.write_text("from scratch.layers import conv2d_backward, conv2d_forward  # noqa\n")
    code, out, err = run_check(capsys, path, "--json", tmp_path / "report.json")
    assert code == 0, out + err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["layer"] == "conv2d" and report["passed"]
    assert len(report["checks"]) == CONV_CHECKS and all(row["passed"] for row in report["checks"])
    assert f"{CONV_CHECKS} of {CONV_CHECKS} checks pass" in out


@pytest.mark.parametrize("layer", LAYERS)
def test_unfilled_exercise_fails_every_check_with_the_students_line(layer, tmp_path):
    path = exercise.write_exercise(layer, tmp_path / "mine.py")
    _, functions = student.load(path)
    results = checks.layer_checks(layer, functions, network=False)
    assert results and not any(r.passed for r in results)
    lines = report.not_run_lines(results)
    first = layer if layer == exercise.LOSS else f"{layer}_forward"
    assert len(lines) == 1  # one reason, said once
    assert lines[0][0].startswith(f"{len(results)} checks not run: {first} raised "
                                  "NotImplementedError at your line ")
    assert f'File "{path}"' in lines[0][1].detail and "scratch/" not in lines[0][1].detail


def test_unfilled_exercise_fails_cleanly_on_the_command_line(tmp_path, capsys):
    path = exercise.write_exercise("relu", tmp_path / "mine.py")
    code, out, err = run_check(capsys, path, "--no-network")
    assert code == 1
    assert "7 checks not run: relu_forward raised NotImplementedError at your line" in out
    assert "TODO: write relu_forward" in out
    assert f'File "{path}"' in out  # the student's own line
    for ours in OUR_CODE:
        assert ours not in out + err


# --- planted mistakes and their diagnoses ----------------------------------------------


@pytest.fixture
def layer_only(monkeypatch):
    """The checks of the layer alone: the diagnoses do not need the network part."""
    monkeypatch.setattr(checks, "network_checks", lambda layer, impl, files: [])


def test_factor_two_and_mean_instead_of_sum_in_dense_backward(layer_only):
    backward = mutated(layers, "dense_backward", '"kernel": x.T @ dout, "bias": dout.sum(axis=0)',
                       '"kernel": 2 * (x.T @ dout), "bias": dout.mean(axis=0)')
    wrong = failing(checks.layer_checks("dense", {"dense_forward": layers.dense_forward,
                                                  "dense_backward": backward}))
    assert set(wrong) == {"dkernel = central diff.", "dkernel = GradientTape",
                          "dbias = central diff.", "dbias = GradientTape",
                          "dkernel = central diff. (batch 1)", "dkernel = GradientTape (batch 1)"}
    # with a batch of 1 a mean is the sum: only the batch of 4 tells them apart
    assert wrong["dkernel = central diff."].diagnosis == "all entries off by the same factor 2.0"
    assert wrong["dbias = GradientTape"].diagnosis.startswith("off by a factor 1/N, N = batch size (4)")
    assert wrong["dkernel = GradientTape"].where.startswith("worst at [")


def test_transposed_kernel_gradient_is_named_in_the_shape_check(layer_only):
    backward = mutated(layers, "dense_backward", '"kernel": x.T @ dout', '"kernel": dout.T @ x')
    results = checks.layer_checks("dense", {"dense_forward": layers.dense_forward,
                                            "dense_backward": backward})
    wrong = failing(results)
    assert "dkernel: float64 (8, 5), expected float64 (5, 8) (transposed)" in wrong[
        "shapes, dtypes"].where
    assert wrong["dkernel = central diff."].diagnosis == "transposed"
    console = Console(width=80, file=io.StringIO(), color_system=None)
    graded = sandbox.Graded("/a/long/path/to/the/students/file/my_dense.py", "dense", results)
    console.print(report.report_table(graded))
    table = console.file.getvalue()
    assert "…" not in table and max(map(len, table.splitlines())) <= 80, table


def test_sign_flipped_bias_gradient_in_conv2d(layer_only):
    backward = mutated(layers, "conv2d_backward", '"bias": dout.sum(axis=(0, 1, 2))',
                       '"bias": -dout.sum(axis=(0, 1, 2))')
    wrong = failing(checks.layer_checks("conv2d", {"conv2d_forward": layers.conv2d_forward,
                                                   "conv2d_backward": backward}))
    settings = ("valid", "same, 4x4", "same, 5x5", "1x1, batch 1", "same, stride 2",
                "pad 1, strides (2, 1)")
    assert {name for name in wrong} == {f"dbias = {how} ({setting})" for setting in settings
                                        for how in ("central diff.", "GradientTape")}
    assert {r.diagnosis for r in wrong.values()} == {"sign flipped"}


def test_circular_padding_in_conv2d_same_gets_only_border_pixels_wrong(layer_only):
    forward = mutated(layers, "conv2d_forward", "xp = pad_input(x, pads)",
                      'xp = np.pad(x, ((0, 0), *pads, (0, 0)), mode="wrap")')
    wrong = failing(checks.layer_checks("conv2d", {"conv2d_forward": forward,
                                                   "conv2d_backward": layers.conv2d_backward}))
    assert "out = reference (valid)" not in wrong
    for setting in ("same, 4x4", "same, 5x5"):
        for name in ("out = reference", "out = Keras Conv2D"):
            assert wrong[f"{name} ({setting})"].diagnosis.startswith("only border pixels wrong (")


def test_loss_gradient_without_the_mean_is_off_by_the_batch_size(tmp_path, capsys):
    source = textwrap.dedent(inspect.getsource(losses.softmax_cross_entropy))
    old = "dlogits /= (sum_exp * n)[:, None]"
    assert source.count(old) == 1
    body = source.replace(old, "dlogits /= sum_exp[:, None]").replace(
        "(1 - label_smoothing) / n", "(1 - label_smoothing)").replace(
        "label_smoothing / (k * n)", "label_smoothing / k")
    path = tmp_path / "my_loss.py"
    path.write_text("import numpy as np\n\n\n" + body)
    code, out, _ = run_check(capsys, path, "--no-network", "--plots", tmp_path / "plots", "--json",
                             tmp_path / "report.json")
    assert code == 1 and "8 of 25 checks fail" in out  # dlogits in each of the 4 cases
    rows = {row["check"]: row for row in json.loads((tmp_path / "report.json").read_text())[
        "checks"]}
    assert rows["out = reference"]["passed"]  # the loss value itself is right
    for name in ("dlogits = central diff.", "dlogits = GradientTape (smoothing 0.1)"):
        assert rows[name]["diagnosis"].startswith("off by a factor N = batch size (6)")
    pictures = sorted((tmp_path / "plots").glob("*.png"))
    assert pictures and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)


# --- files that cannot be graded: one line naming them ----------------------------------


@pytest.mark.parametrize("text, message", [
    ("def conv2d_forward(x, params, padding='valid', strides=1):\n    return (x,\n",
     "bad.py line 2: "),
    ("def conv2d_forward(x, params, padding='valid', strides=1):\n    pass\n",
     "bad.py has no function conv2d_backward (a conv2d needs conv2d_forward, conv2d_backward)"),
    ("def conv2d_forward(x, params):\n    pass\n\n\ndef conv2d_backward(dout, cache):\n    pass\n",
     "bad.py: conv2d_forward(x, params) should be conv2d_forward(x, params, padding='valid', "
     "strides=1)"),
    ("import numpy as np\nnp.zeros(3)[5]\n",
     "bad.py: importing it raised IndexError: index 5 is out of bounds for axis 0 with size 3 "
     "(line 2: np.zeros(3)[5])"),
    ("def relu_forward(x):\n    pass\n\n\ndef dense_forward(x, params):\n    pass\n",
     "bad.py defines functions of dense and relu: choose one with --layer"),
    ("x = 1\n", "bad.py defines none of the exercise functions (dense_forward, "),
])
def test_a_file_that_cannot_be_graded_gets_one_line(text, message, tmp_path, capsys):
    path = tmp_path / "bad.py"
    path.write_text(text)
    code, out, err = run_check(capsys, path)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_a_missing_file_gets_one_line(tmp_path, capsys):
    code, out, err = run_check(capsys, tmp_path / "nowhere.py")
    assert code == 1 and err == f"error: {tmp_path / 'nowhere.py'}: no such file\n"


def test_an_exception_in_the_students_code_shows_their_lines_only(tmp_path, capsys):
    path = tmp_path / "mine.py"
    path.write_text(textwrap.dedent("""\
        import numpy as np


        def relu_forward(x):
            return np.maximum(x, 0), x


        def relu_backward(dout, cache):
            mask = helper(cache)
            return {"x": dout * mask}


        def helper(x):
            return x[x > 0].reshape(x.shape)
        """))
    code, out, err = run_check(capsys, path, "--no-network", "--json", tmp_path / "report.json")
    assert code == 1
    assert f'File "{path}", line 9, in relu_backward' in out
    assert f'File "{path}", line 14, in helper' in out
    assert "raised ValueError at your line 14: cannot reshape array" in out
    for ours in OUR_CODE:
        assert ours not in out + err
    rows = json.loads((tmp_path / "report.json").read_text())["checks"]
    assert [row["check"] for row in rows if row["passed"]] == ["out = reference",
                                                                "out = Keras ReLU"]
    assert "5 checks not run: relu_backward raised ValueError at your line 14" in out


# --- the pieces -----------------------------------------------------------------------------


def test_network_for_picks_the_small_zoo_model_that_uses_the_layer():
    assert {layer: network.network_for(layer) for layer in ("dense", "relu", "flatten",
                                                           "softmax_cross_entropy")} == dict.fromkeys(
        ("dense", "relu", "flatten", "softmax_cross_entropy"), "fc128")
    assert network.network_for("conv2d") == network.network_for("maxpool2d") == "tiny"
    assert network.network_for("avgpool2d").startswith("lenet")
    assert network.network_for("dropout") == "convnet"
    assert network.network_for("batchnorm") == "best"
    assert {network.network_for(layer) for layer in ("layernorm", "groupnorm",
                                                     "globalavgpool2d")} == {"normnet"}
    assert network.network_for("residual") == "resnet"


def test_substituted_runs_the_given_function_in_a_readable_model_and_restores():
    from scratch import model as model_module
    from scratch.model import build_model

    calls = []
    reference_loss = losses.softmax_cross_entropy

    def counting(logits, labels, label_smoothing=0.0):
        calls.append(len(logits))
        return reference_loss(logits, labels, label_smoothing)

    reference = layers.avgpool2d_forward
    with network.substituted({"avgpool2d_forward": lambda x, pool_size=2, **options: (
                                  calls.append("pool") or reference(x, pool_size, **options)),
                             "softmax_cross_entropy": counting}):
        assert model_module.softmax_cross_entropy is counting
        model = build_model(network.network_for("avgpool2d"), dtype=np.float64, fast=False)
        model.loss_and_grads(np.zeros((3, 28, 28, 1)), np.arange(3))
    assert calls == ["pool", "pool", 3]
    assert layers.avgpool2d_forward is reference
    assert model_module.softmax_cross_entropy is losses.softmax_cross_entropy is reference_loss
    with pytest.raises(ValueError, match="no reference function named conv3d_forward"):
        with network.substituted({"conv3d_forward": reference}):
            pass
