"""`python compare.py gradcheck`: numeric vs NumPy vs TensorFlow gradients, one table.

For every parameter array of every chosen zoo model (float64, a small random batch,
L2 on, training mode): finite differences against NumPy's backward pass on a sample
of entries (`scratch.gradcheck`, dropout with a fixed mask), and NumPy's backward pass
against TensorFlow's GradientTape on every entry (`comparison.twin`, dropout off).
Rows marked "0: feeds BatchNorm" are biases whose gradient is exactly 0 in training
mode; both checks measure them against the network's largest gradient. A row passes
when central differences checked at least one entry within NUMERIC_TOLERANCE and
TensorFlow agrees within twin.GRAD_TOLERANCE; `python compare.py gradcheck` exits 1
when any row fails.
"""
from __future__ import annotations

import numpy as np
from rich.table import Table

from plumbing.args import batch_size, seed_number
from scratch import gradcheck, zoo

# Exactly representable in float32: keras.regularizers.L2 passes its factor through a
# float32 tensor, which would round 1e-3 and cost the float64 comparison 8 digits.
L2 = 2.0**-10
ENTRIES = 20  # sampled entries per array for central differences
# At most this many images: a step crosses fewer ReLU and max-pool kinks in a smaller
# batch (with BatchNorm every weight moves every unit of its channels), so fewer
# sampled entries are left out.
MAX_BATCH = 2
NUMERIC_TOLERANCE = gradcheck.NETWORK_TOLERANCE


def model_rows(name: str, seed: int, batch: int) -> list[dict]:
    from comparison import twin  # TensorFlow: only once the arguments are checked

    rng = np.random.default_rng(seed)
    x = rng.random((batch, *zoo.INPUT_SHAPE))
    if not zoo.has_conv(name):
        x = x.reshape(batch, -1)
    y = rng.integers(0, zoo.NUM_CLASSES, batch)
    pair = twin.twin_pair(name, "float64", seed, l2=L2)
    tf_errors = twin.gradient_agreement(pair, x, y).errors
    numeric = gradcheck.model_gradient_errors(pair.numpy_model, x, y, ENTRIES, seed=seed)
    zeros = pair.numpy_model.biases_before_batchnorm()
    rows = []
    for (i, key, _), check in zip(pair.numpy_model.parameters(), numeric):
        tf_error = tf_errors[f"{i}/{key}"]
        rows.append({"model": name, "layer": check.layer, "param": key,
                     "entries": check.checked, "zero_gradient": (i, key) in zeros,
                     "numeric_vs_numpy": check.error if check.checked else None,
                     "numpy_vs_tensorflow": tf_error,
                     "passed": (check.passed(NUMERIC_TOLERANCE)
                                and tf_error <= twin.GRAD_TOLERANCE["float64"])})
    return rows


def mark(error, tolerance) -> str:
    """The error in green within the tolerance, else red; None (no entry checked) is red."""
    if error is None:
        return "[red]nothing checked[/]"
    return f"{'[green]' if error <= tolerance else '[red]'}{error:.1e}[/]"


def add_arguments(parser) -> None:
    """`python compare.py gradcheck`'s own options (it reads no MNIST: generated batches)."""
    parser.add_argument("--batch-size", type=batch_size, default=128,
                        help=f"the batch (at most {MAX_BATCH} of it is checked)")
    parser.add_argument("--seed", type=seed_number, default=0)


def main(args, console) -> dict:
    from comparison import twin

    names = args.model or zoo.model_names()
    table = Table(title="Gradient checks, float64, relative error |a-b|/max(|a|,|b|)")
    for column in ("model", "layer", "param", "entries", "numeric vs NumPy",
                   "NumPy vs TensorFlow"):
        table.add_column(column, justify="right" if column == "entries" else "left")
    rows = []
    for name in names:
        for row in model_rows(name, args.seed, min(args.batch_size, MAX_BATCH)):
            rows.append(row)
            param = row["param"] + (" (0: feeds BatchNorm)" if row["zero_gradient"] else "")
            table.add_row(name, row["layer"], param, str(row["entries"]),
                          mark(row["numeric_vs_numpy"], NUMERIC_TOLERANCE),
                          mark(row["numpy_vs_tensorflow"], twin.GRAD_TOLERANCE["float64"]))
    console.print(table)
    unchecked = sum(r["numeric_vs_numpy"] is None for r in rows)
    worst_numeric = max((r["numeric_vs_numpy"] for r in rows if r["numeric_vs_numpy"] is not None),
                        default=None)
    worst_tf = max(r["numpy_vs_tensorflow"] for r in rows)
    passed = all(r["passed"] for r in rows)
    console.print(f"worst: numeric vs NumPy {mark(worst_numeric, NUMERIC_TOLERANCE)} "
                  f"(<= {NUMERIC_TOLERANCE:g}; {unchecked} arrays with no entry checked), "
                  f"NumPy vs TensorFlow {mark(worst_tf, twin.GRAD_TOLERANCE['float64'])} "
                  f"(<= {twin.GRAD_TOLERANCE['float64']:g}): "
                  + ("[green]pass[/]" if passed else "[red]FAIL[/]"))
    return {"rows": rows, "worst_numeric_vs_numpy": worst_numeric,
            "worst_numpy_vs_tensorflow": worst_tf, "passed": passed}
