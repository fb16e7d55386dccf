"""comparison.grading.notebook: the layer checks from a notebook cell, and the fallback to
the reference while an exercise is still its stub."""
import importlib.util

import numpy as np
import pytest

from comparison.grading import exercise
from comparison.grading.notebook import check_layer, is_stub, written_or_reference
from scratch import layers

ESC = "\x1b"

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def stub_relu_forward(x):
    """The exercise's stub: a docstring and the raise, nothing else."""
    raise NotImplementedError("TODO: write relu_forward")


def unfinished(x):
    y = np.maximum(x, 0)
    raise NotImplementedError(y)


def relu_backward_sign_flipped(dout, cache):
    return {"x": -dout * cache}


def test_is_stub_recognises_only_a_docstring_and_the_raise(tmp_path):
    assert is_stub(stub_relu_forward)
    assert not is_stub(unfinished)  # work begun: graded, and failing on its own merits
    assert not is_stub(layers.relu_forward) and not is_stub(print)
    path = tmp_path / "exercise_dropout.py"  # the stubs `compare.py exercise` writes
    path.write_text(exercise.exercise_source("dropout", path.name))
    spec = importlib.util.spec_from_file_location("exercise_dropout", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert is_stub(module.dropout_forward) and is_stub(module.dropout_backward)


def test_a_stub_is_replaced_by_the_reference_and_said_so(capsys):
    assert written_or_reference(layers.relu_forward, None) is layers.relu_forward
    assert written_or_reference(stub_relu_forward, layers.relu_forward) is layers.relu_forward
    assert "relu_forward is still the stub: the reference is checked" in capsys.readouterr().out


def test_check_layer_passes_the_reference_and_fails_a_mistake(capsys):
    assert check_layer("relu", relu_forward=stub_relu_forward,
                       relu_backward=layers.relu_backward, network=False)
    out = capsys.readouterr().out
    assert "relu_forward is still the stub" in out and "all checks pass" in out
    assert not check_layer("relu", relu_forward=layers.relu_forward,
                           relu_backward=relu_backward_sign_flipped, network=False)
    out = capsys.readouterr().out
    assert "your code: relu" in out and "FAIL" in out and "dx = GradientTape" in out
    assert ESC not in out and max(map(len, out.splitlines())) <= 80


def test_check_layer_names_an_unknown_function():
    with pytest.raises(ValueError, match="no function named relu_backwards"):
        check_layer("relu", relu_backwards=layers.relu_backward)
