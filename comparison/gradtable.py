"""`python compare.py gradcheck`: numeric vs NumPy vs TensorFlow gradients, one table.

For every parameter array of every chosen zoo model (float64, a small random batch,
L2 on, training mode): finite differences against NumPy's backward pass on a sample
of entries (`scratch.gradcheck`, dropout with a fixed mask), and NumPy's backward pass
against TensorFlow's GradientTape on every entry (`comparison.twin`, dropout off).
Rows marked "0: feeds BatchNorm" are biases whose gradient is exactly 0 in training
mode; both checks measure them against the network's largest gradient. A row passes
when central differences checked at least one entry and every checked entry is within
NUMERIC_TOLERANCE plus its round-off allowance (`scratch.gradcheck`; an error marked *
has entries that pass only by the allowance), and TensorFlow agrees within
twin.GRAD_TOLERANCE; `python compare.py gradcheck` exits 1 when any row fails.
"""
from __future__ import annotations

import numpy as np
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn)
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


def model_rows(name: str, seed: int, batch: int, progress=None) -> list[dict]:
    """One row per parameter array of zoo model `name`; progress: a rich Progress that
    shows the arrays checked."""
    from comparison import twin  # TensorFlow: only once the arguments are checked

    rng = np.random.default_rng(seed)
    x = rng.random((batch, *zoo.INPUT_SHAPE))
    if not zoo.has_conv(name):
        x = x.reshape(batch, -1)
    y = rng.integers(0, zoo.NUM_CLASSES, batch)
    pair = twin.twin_pair(name, "float64", seed, l2=L2)
    tf_errors = twin.gradient_agreement(pair, x, y).errors
    task = progress and progress.add_task(
        name, total=len(list(pair.numpy_model.parameters())))
    numeric = gradcheck.model_gradient_errors(
        pair.numpy_model, x, y, ENTRIES, seed=seed,
        on_array=progress and (lambda check: progress.advance(task)))
    zeros = pair.numpy_model.biases_before_batchnorm()
    rows = []
    for (i, key, _), check in zip(pair.numpy_model.parameters(), numeric):
        tf_error = tf_errors[f"{i}/{key}"]
        rows.append({"model": name, "layer": check.layer, "param": key,
                     "entries": check.checked, "sampled": check.sampled,
                     "zero_gradient": (i, key) in zeros,
                     "numeric_vs_numpy": check.error if check.checked else None,
                     "numeric_beyond_roundoff": (check.beyond_roundoff if check.checked
                                                 else None),
                     "within_allowance": [entry._asdict() for entry in check.allowed],
                     "loss_roundoff": check.roundoff,
                     "numeric_passed": check.passed(NUMERIC_TOLERANCE),
                     "numpy_vs_tensorflow": tf_error,
                     "passed": (check.passed(NUMERIC_TOLERANCE)
                                and tf_error <= twin.GRAD_TOLERANCE["float64"])})
    return rows


def mark(error, tolerance) -> str:
    """The error in green within the tolerance, else red; None (no entry checked) is red."""
    if error is None:
        return "[red]nothing checked[/]"
    return f"{'[green]' if error <= tolerance else '[red]'}{error:.1e}[/]"


def numeric_mark(row: dict) -> str:
    """The row's central-difference error, green when it passes (within the tolerance plus
    round-off), marked * when some entry passes only by the round-off allowance."""
    if row["numeric_vs_numpy"] is None:
        return "[red]nothing checked[/]"
    colour = "green" if row["numeric_passed"] else "red"
    return f"[{colour}]{row['numeric_vs_numpy']:.1e}{'*' if row['within_allowance'] else ''}[/]"


def add_arguments(parser) -> None:
    """`python compare.py gradcheck`'s own options (it reads no MNIST: generated batches)."""
    parser.add_argument("--batch-size", type=batch_size, default=128,
                        help=f"the batch (at most {MAX_BATCH} of it is checked)")
    parser.add_argument("--seed", type=seed_number, default=0)


def gradient_table(rows: list[dict], models: list[str], tf_tolerance: float) -> Table:
    """The rows as one table, a section per model (its name as the section's first row
    when there are several). A parameter's name never breaks inside a word (a residual
    block's "shortcut_conv/kernel"); the error columns fold their headers instead."""
    title = "Gradient checks, float64, relative error |a-b|/max(|a|,|b|)"
    table = Table(title=title if len(models) > 1 else f"{models[0]}: {title}")
    table.add_column("layer", overflow="fold")
    table.add_column("param", min_width=max(len(row["param"]) for row in rows), overflow="fold")
    table.add_column("checked", justify="right")
    table.add_column("numeric vs NumPy", max_width=10)
    table.add_column("NumPy vs TensorFlow", max_width=10)
    for model in models:
        if len(models) > 1:
            table.add_row(f"[bold]{model}[/]")
        for row in (row for row in rows if row["model"] == model):
            param = row["param"] + (" (0: feeds BatchNorm)" if row["zero_gradient"] else "")
            table.add_row(row["layer"], param, f"{row['entries']}/{row['sampled']}",
                          numeric_mark(row),
                          mark(row["numpy_vs_tensorflow"], tf_tolerance))
        table.add_section()
    return table


def main(args, console) -> dict:
    from comparison import twin  # TensorFlow: only once the arguments are checked

    names = args.model or zoo.model_names()
    with Progress(TextColumn("central differences, {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TextColumn("arrays"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        rows = [row for name in names
                for row in model_rows(name, args.seed, min(args.batch_size, MAX_BATCH),
                                      progress)]
    table = gradient_table(rows, names, twin.GRAD_TOLERANCE["float64"])
    console.print(table)
    unchecked = sum(r["numeric_vs_numpy"] is None for r in rows)
    worst_numeric = max((r["numeric_vs_numpy"] for r in rows if r["numeric_vs_numpy"] is not None),
                        default=None)
    worst_beyond = max((r["numeric_beyond_roundoff"] for r in rows
                        if r["numeric_beyond_roundoff"] is not None), default=None)
    worst_tf = max(r["numpy_vs_tensorflow"] for r in rows)
    passed = all(r["passed"] for r in rows)
    allowed = [(f"{r['layer']} {r['param']}", gradcheck.AllowedEntry(**entry))
               for r in rows for entry in r["within_allowance"]]
    if allowed:
        console.print(gradcheck.allowance_note(allowed, NUMERIC_TOLERANCE))
    colour = "[green]" if all(r["numeric_passed"] for r in rows) else "[red]"
    numeric = ("nothing checked" if worst_numeric is None else
               f"{worst_numeric:.1e}, {worst_beyond:.1e} beyond round-off")
    console.print(f"worst: numeric vs NumPy {colour}{numeric}[/] (<= {NUMERIC_TOLERANCE:g}; "
                  f"{unchecked} arrays with no entry checked), "
                  f"NumPy vs TensorFlow {mark(worst_tf, twin.GRAD_TOLERANCE['float64'])} "
                  f"(<= {twin.GRAD_TOLERANCE['float64']:g}): "
                  + ("[green]pass[/]" if passed else "[red]FAIL[/]"))
    return {"rows": rows, "worst_numeric_vs_numpy": worst_numeric,
            "worst_numeric_beyond_roundoff": worst_beyond,
            "entries_within_allowance": len(allowed),
            "worst_numpy_vs_tensorflow": worst_tf, "passed": passed}
