"""`python compare.py profile`: per-layer time, FLOPs and bytes of both twins."""
import contextlib
import io
import json

import pytest
from rich.console import Console

import compare
from helpers import needs_mnist
from scratch import zoo

# tiny at batch B = 4, by hand. conv2d_0: 5x5 kernels over 1 channel, 8 filters, 24x24
# outputs; conv2d_2: 5x5 over 8 channels (200 per patch), 3 filters, 8x8 outputs;
# dense_5: 4*4*3 = 48 -> 16; dense_6: 16 -> 10. FLOPs: 2 per multiply-add.
B = 4
TINY_FORWARD_FLOPS = {"conv2d_0": ("2*24*24*25*8*B", 2 * 24 * 24 * 25 * 8 * B),
                      "maxpool2d_1": ("-", 0),
                      "conv2d_2": ("2*8*8*200*3*B", 2 * 8 * 8 * 200 * 3 * B),
                      "maxpool2d_3": ("-", 0), "flatten_4": ("-", 0),
                      "dense_5": ("2*48*16*B", 2 * 48 * 16 * B),
                      "dense_6": ("2*16*10*B", 2 * 16 * 10 * B)}
# im2col: one float32 row per output position, the patch and a 1 (the bias column).
TINY_IM2COL_BYTES = {"conv2d_0": B * 24 * 24 * (25 + 1) * 4, "conv2d_2": B * 8 * 8 * (200 + 1) * 4}


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("profile")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = compare.main(["profile", "--model", "tiny", "--batch-size", str(B), "--json",
                             str(folder / "p.json"), "--figure", str(folder / "p.png")])
    return code, folder, printed.getvalue()


@needs_mnist
def test_profile_writes_json_and_figure_with_every_layer(tiny_profile):
    code, folder, printed = tiny_profile
    assert code == 0
    assert (folder / "p.png").stat().st_size > 10_000
    result = json.loads((folder / "p.json").read_text())["models"]["tiny"]
    names = [row.layer for row in zoo.param_rows("tiny")]
    assert [row["layer"] for row in result["layers"]] == names
    table_lines = [line.split() for line in printed.splitlines()]
    for name in names:  # a row in the time table and one in the work table
        assert sum(1 for words in table_lines if words[:1] == [name]) == 2, name
    for row in result["layers"]:
        for side in ("numpy", "keras"):
            assert set(row[side]) == {"forward", "backward"}
            assert all(ms >= 0 for ms in row[side].values())


@needs_mnist
def test_profile_flops_and_bytes_of_tiny_are_the_hand_computed_ones(tiny_profile):
    _, folder, _ = tiny_profile
    rows = json.loads((folder / "p.json").read_text())["models"]["tiny"]["layers"]
    for row in rows:
        formula, flops = TINY_FORWARD_FLOPS[row["layer"]]
        assert (row["flops_formula"], row["forward_flops"]) == (formula, flops)
        # backward: weight and input gradient; the first layer needs no input gradient
        assert row["backward_flops"] == (1 if row["layer"] == "conv2d_0" else 2) * flops
        assert row["im2col_bytes"] == TINY_IM2COL_BYTES.get(row["layer"], 0)
    assert rows[0]["activation_bytes"] == B * 24 * 24 * 8 * 4
    assert rows[-1]["activation_bytes"] == B * 10 * 4


@needs_mnist
def test_profile_numpy_layers_add_up_to_at_most_the_step(tiny_profile):
    _, folder, _ = tiny_profile
    result = json.loads((folder / "p.json").read_text())["models"]["tiny"]
    numpy_side = result["totals"]["numpy"]
    layers_ms = sum(row["numpy"]["forward"] + row["numpy"]["backward"]
                    for row in result["layers"])
    assert layers_ms == pytest.approx(numpy_side["layers_ms"])
    assert 0 < layers_ms + numpy_side["adam_ms"] <= numpy_side["step_ms"]
    assert numpy_side["outside_ms"] == pytest.approx(numpy_side["step_ms"] - layers_ms)
    keras_side = result["totals"]["keras"]
    keras_layers = sum(row["keras"]["forward"] + row["keras"]["backward"]
                       for row in result["layers"])
    assert keras_layers == pytest.approx(keras_side["layers_ms"])
    parts = keras_layers + keras_side["loss_ms"] + keras_side["adam_ms"]
    assert 0 < parts <= keras_side["step_ms"]  # the layer-by-layer step's parts
    assert keras_side["fused_step_ms"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--model", "nosuchnet"], "unknown model 'nosuchnet'"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "abc"], "--batch-size"),
    (["--batch-size", "55001"], "at most 55,000")])
def test_profile_refuses_bad_arguments_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.main(["profile", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err


def test_profile_tables_fit_80_columns_for_the_largest_model():
    from comparison import profile

    rows = profile.work_rows("best", 128)
    for row in rows:  # four-digit milliseconds everywhere: the widest numbers printed
        for side in ("numpy", "keras"):
            row[side] = {"forward": 1234.56, "backward": 1234.56}
    totals = {"step_ms": 99999.9, "layers_ms": 99999.9, "outside_ms": 0.0, "adam_ms": 0.0,
              "loss_ms": 0.0, "gflops": 999.0, "fused_step_ms": 99999.9}
    result = {"model": "best", "batch_size": 128, "numpy_blas_threads": 1, "layers": rows,
              "totals": {"numpy": totals, "keras": totals},
              "matmul_peak_gflops": {"numpy": 1.0, "tensorflow": 1.0}}
    out = io.StringIO()
    profile.print_tables(result, Console(file=out, width=200))
    lines = out.getvalue().splitlines()
    assert len(lines) > 2 * len(rows) and max(map(len, lines)) <= 80
