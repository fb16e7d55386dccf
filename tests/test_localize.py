"""The divergence localizer: it names the first quantity on which the twins part ways."""
import json

import numpy as np
import pytest

import compare
from helpers import MNIST_DIR, needs_mnist, random_batch
from comparison import localize, twin
from comparison.grading.bugs import planted, readable_layers


def first_disagreement(name, bug, steps=2, n=4):
    """localize() on zoo model `name` with `bug` planted (None: the code as it is)."""
    x, y = random_batch(n, seed=3, model=name)
    with planted(bug) if bug else readable_layers():
        pair = twin.twin_pair(name, "float64", seed=0, l2=2.0**-10)
        return localize.localize(pair, [(x, y)] * steps, "adam", None, steps)


def test_without_a_bug_every_quantity_of_every_step_agrees():
    finding = first_disagreement("tiny", None)
    assert finding.first is None and finding.steps == 2
    # per step: 7 outputs, loss, dL/dlogits, 7 input gradients, 8 parameter gradients,
    # Adam's m and v of the 8 parameters, their 8 changes
    assert finding.compared == 2 * (7 + 1 + 1 + 7 + 8 + 16 + 8)
    assert finding.summary().startswith("NumPy and Keras agree on all 96 quantities")


def test_a_conv_backward_bug_is_named_as_that_layers_input_gradient():
    # conv2d_backward with the kernel flipped: everything after the loss agrees down to
    # layer 2, the second conv layer, whose input gradient is the first wrong number
    finding = first_disagreement("tiny", "conv_kernel_flipped")
    first = finding.first
    assert (first.step, first.stage, first.name) == (1, "backward",
                                                     "layer 2 (conv2d_2) input gradient")
    assert first.error > 1e-2 > first.tolerance
    assert [q.name for q in finding.agreed_before[-2:]] == [
        "layer 4 (flatten_4) input gradient", "layer 3 (maxpool2d_3) input gradient"]
    assert all(q.agrees for q in finding.agreed_before)
    assert "look at the backward pass of layer 2 (conv2d_2)" in finding.summary()
    assert len(first.where) == 4  # the worst entry of an (N, H, W, C) array


def test_a_forward_bug_is_found_before_any_gradient():
    finding = first_disagreement("tiny", "flatten_nchw")
    assert (finding.first.stage, finding.first.name) == ("forward", "layer 4 (flatten_4) output")
    assert [q.stage for q in finding.agreed_before] == ["forward"] * 4


@pytest.mark.parametrize("bug, name", [
    ("adam_eps_inside_sqrt", "layer 0 (conv2d_0) kernel: change in the step"),
    ("dense_bias_mean", "layer 6 (dense_6) bias gradient"),
])
def test_optimizer_and_parameter_gradient_bugs_are_told_apart(bug, name):
    finding = first_disagreement("tiny", bug)
    assert finding.first.name == name
    assert finding.first.step == 1


def test_batchnorm_moving_statistics_are_compared_after_the_step():
    # momentum swapped: forward, backward and Adam agree; the moving mean does not
    finding = first_disagreement("best", "bn_momentum_swapped", steps=1, n=2)
    assert finding.first.name == "layer 1 (batchnorm_1) moving_mean after the step"
    assert {q.stage for q in finding.agreed_before} == {"forward", "backward", "update"}
    assert "momentum" in finding.first.suspect()


def result(float64_passed=True, lockstep_diff=0.0, dtype="float32"):
    return {"gradients": {"float64": {"passed": float64_passed, "max_error": 0.5}},
            "lockstep": {"max_abs_diff": lockstep_diff, "dtype": dtype}}


def test_compare_calls_the_localizer_only_on_a_disagreement():
    assert localize.disagreement(result()) is None
    assert localize.disagreement(result(lockstep_diff=1e-4)) is None  # float32 drift
    assert "gradients differ" in localize.disagreement(result(float64_passed=False))
    assert "lockstep" in localize.disagreement(result(lockstep_diff=1e-2))
    assert "lockstep" in localize.disagreement(result(lockstep_diff=1e-8, dtype="float64"))


@needs_mnist
def test_compare_inject_runs_the_whole_comparison_with_the_bug_and_localizes_it(tmp_path,
                                                                                 capsys):
    out = tmp_path / "compare.json"
    code = compare.main(["--inject", "conv_kernel_flipped", "--model", "tiny", "--epochs", "1",
                         "--limit", "256", "--batch-size", "64", "--lockstep-steps", "3",
                         "--data-dir", MNIST_DIR, "--logdir", str(tmp_path / "runs"),
                         "--figure", str(tmp_path / "compare.png"), "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "bug planted in the NumPy side: conv_kernel_flipped" in printed
    tiny = json.loads(out.read_text())["models"]["tiny"]
    assert not tiny["gradients"]["float64"]["passed"]  # the bug is in the whole run
    assert tiny["localizer"]["first"]["name"] == "layer 2 (conv2d_2) input gradient"
    assert tiny["localizer"]["reason"].startswith("float64 gradients differ")


def test_compare_refuses_an_unknown_bug_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.main(["--inject", "typo_bug"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown bug 'typo_bug'" in err and "Traceback" not in err


def test_the_floor_measures_round_off_near_zero_against_the_largest_entry():
    ours, theirs = np.array([1.0, 1e-9]), np.array([1.0, 2e-9])
    assert localize.compare(1, "forward", "x", ours, theirs).error == pytest.approx(1e-9 / 1e-4)
    assert localize.compare(1, "backward", "b", ours, theirs, zero=True).error == \
        pytest.approx(1e-9)
