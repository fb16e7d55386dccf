"""The bug zoo: every planted mistake is caught by at least one check, the unmutated code by
none (the suite's own mutation test), and planting leaves nothing behind."""
import json

import numpy as np
import pytest
from rich.console import Console

import compare
from helpers import MNIST_DIR, needs_mnist, random_batch
from comparison.grading import bugtable
from comparison.grading.bugs import BUGS, planted
from scratch import layers, optim, zoo
from scratch.model import build_model
from scratch.registry import KINDS


def test_the_zoo_has_the_issues_mistakes_each_on_a_network_that_holds_it():
    assert len(BUGS) >= 15
    for bug in BUGS.values():
        assert bug.model in zoo.model_names() and bug.mistake and bug.mutations
        for mutation in bug.mutations:
            mutation.mutant()  # every edit still finds its line in today's code
            assert mutation.diff()[0].startswith("- ")


def test_planting_changes_the_numpy_side_and_the_block_restores_it():
    x, y = random_batch(4, model="fc128")
    originals = (layers.dense_backward, optim.Adam.update, KINDS["batchnorm"],
                 layers.BN_EPSILON)
    reference = build_model("fc128", seed=0, dtype=np.float64)
    reference.loss_and_grads(x, y)
    with planted("dense_bias_mean"):
        mutated = build_model("fc128", seed=0, dtype=np.float64)  # fast=True asked for...
        assert not mutated.fast  # ...the readable layers run, where the bug lives
        mutated.loss_and_grads(x, y)
    bias, kernel = (reference.layers[2].grads[k] for k in ("bias", "kernel"))
    assert np.allclose(mutated.layers[2].grads["bias"], bias / 4)  # a mean over 4 images
    assert np.array_equal(mutated.layers[2].grads["kernel"], kernel)
    for name in ("bn_per_activation", "adam_uncorrected", "bn_epsilon_1e-5"):
        with planted(name):
            pass
    assert (layers.dense_backward, optim.Adam.update, KINDS["batchnorm"],
            layers.BN_EPSILON) == originals
    assert build_model("fc128").fast


def test_a_mutation_whose_line_is_gone_says_so():
    stale = BUGS["dense_bias_mean"].mutations[0]
    stale = type(stale)(stale.owner, stale.attribute, (("no such text", "x"),))
    with pytest.raises(ValueError, match="'no such text' occurs 0 times"):
        stale.mutant()


def caught_by(rows):
    return {row["bug"] if row["bug"] != "reference" else f"reference {row['model']}":
            set(row["caught_by"]) for row in rows}


@needs_mnist
def test_every_bug_is_caught_by_a_cheap_check_and_the_reference_by_none(tmp_path):
    """Every bug through params, forward, numeric, TF and lockstep (--fast)."""
    out = tmp_path / "bugs.json"
    assert compare.main(["bugs", "--fast", "--data-dir", MNIST_DIR, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    found = caught_by(report["rows"])
    assert {name for name in found if name.startswith("reference")} == {
        f"reference {net}" for net in ("tiny", "lenet", "convnet", "best", "normnet", "resnet")}
    assert all(not checks for name, checks in found.items() if name.startswith("reference"))
    assert all(found[name] for name in BUGS)
    # what the tutorial teaches from this table
    assert found["dropout_unscaled"] == {"numeric"}  # the twins compare with dropout off
    assert found["same_pad_wrong_side"] == {"TF"}  # only dL/dx of the first layer is wrong
    assert found["bn_per_activation"] == {"params"}
    assert found["adam_uncorrected"] == found["bn_momentum_swapped"] == {"lockstep"}
    assert "numeric" not in found["flatten_nchw"] | found["bn_epsilon_1e-5"]  # consistent
    # the curriculum's layers: a first layer's input gradient is seen by TF alone; a
    # normalisation over the wrong values by the forward check
    assert found["conv_stride_ignored"] == {"TF"}
    assert {"forward", "TF"} <= found["layernorm_over_batch"] & found["groupnorm_interleaved"]
    for name in ("overlap_overwritten", "global_pool_undivided", "residual_skip_dropped"):
        assert {"numeric", "TF"} <= found[name], name


@pytest.mark.slow
@needs_mnist
def test_the_full_bug_table_with_accuracy(tmp_path):
    out = tmp_path / "bugs.json"
    assert compare.main(["bugs", "--data-dir", MNIST_DIR, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert all(row["checks"]["accuracy"]["passed"] for row in rows if row["bug"] == "reference")
    assert all(row["caught_by"] for row in rows if row["bug"] != "reference")


@needs_mnist
def test_the_table_fits_80_columns_without_cutting_a_name():
    console = Console(width=80, record=True)
    sizes = bugtable.FAST
    rows = [bugtable.run(BUGS[name], BUGS[name].model, sizes, MNIST_DIR)
            for name in ("bn_per_activation", "conv_kernel_flipped")]
    rows += [{**rows[1], "bug": name} for name in BUGS]  # every name, one row each
    bugtable.print_table(rows, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and all(name in text for name in BUGS)
    assert "201,472" in text  # best's per-activation BatchNorm: the count difference


def test_bugs_refuses_an_unknown_bug_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.main(["bugs", "--bug", "nope"])
    assert exit_info.value.code == 2
    assert "unknown bug 'nope'" in capsys.readouterr().err


@needs_mnist
def test_injecting_a_parameter_count_bug_stops_compare_at_its_parameter_table(capsys):
    code = compare.main(["--inject", "bn_per_activation", "--model", "best",
                         "--data-dir", MNIST_DIR])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: best: parameter counts differ in batchnorm_1, batchnorm_4")
    assert "Traceback" not in err
