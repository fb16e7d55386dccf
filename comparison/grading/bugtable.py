"""`python compare.py bugs`: every bug of the zoo through every check, and which catch it.

    python compare.py bugs [--bug NAME ...] [--fast] [--limit N] [--json OUT]

Each bug is planted (`bugs.planted`) and its network (`Bug.model`) is put through six checks,
all on real MNIST images, L2 (gradtable.L2) on the hidden kernels and label smoothing 0.1, so
that every piece of the loss takes part:

    params      trainable + non-trainable counts, NumPy vs Keras (must be equal)
    forward     every layer's output and the loss, NumPy vs Keras, float64 (`localize`)
    numeric     NumPy's backward pass vs central differences of NumPy's own loss, float64:
                sampled entries of every parameter array (`scratch.gradcheck`, dropout on
                with a fixed mask; the error beyond round-off) and dL/dlogits of the loss
                alone
    TF          dL/dlogits, every layer's input gradient and parameter gradients, NumPy vs
                GradientTape, float64 (`localize`, dropout off)
    lockstep    a few Adam steps side by side, each from the same state: the optimizer's
                moments, every weight's change, BatchNorm's moving statistics (`localize`)
    accuracy    both twins trained side by side on the first --limit images (float32, Adam,
                dropout off), then validation accuracy: NumPy vs Keras, in points. Not
                for BatchNorm networks (`best`, `resnet`): too slow to train far enough

A check catches a bug when its error exceeds its threshold. The unmutated code ("reference"
rows, one per network) passes every check: tests/test_bugs.py holds both to it. `--fast`
(the tests) skips the accuracy check and uses fewer images, entries and steps.
"""
from __future__ import annotations

import contextlib
import textwrap
from dataclasses import asdict, dataclass

import numpy as np
from rich.table import Table

from comparison.grading.bugs import BUGS, Bug, bug_argument, planted, readable_layers
from comparison.grading.checks import CheckResult
from scratch import gradcheck, losses, zoo
from plumbing.args import positive_int
from scratch.model import build_model

CHECKS = ("params", "forward", "numeric", "TF", "lockstep", "accuracy")
LABEL_SMOOTHING = 0.1
ACCURACY_POINTS = 2.0  # NumPy's validation accuracy within this of Keras's
ACCURACY_BATCH = 32
ACCURACY_LR = 5e-3  # Adam's default 1e-3 leaves `tiny` at 23% after 64 steps, this at 79%
VALIDATION_IMAGES = 1000
SEED = 0


@dataclass(frozen=True)
class Sizes:
    """How much work each check does."""

    batch: int  # images per step of the float64 checks
    entries: int  # sampled entries per parameter array in the numeric check
    steps: int  # lockstep steps
    train_images: int | None  # the accuracy check's training images (None: no accuracy check)


FULL = Sizes(batch=16, entries=4, steps=5, train_images=2048)
FAST = Sizes(batch=4, entries=2, steps=2, train_images=None)


def params_check(name: str) -> CheckResult:
    from keras_impl.zoo_model import build_twinnet

    numpy_model, keras_model = build_model(name), build_twinnet(name)
    ours = numpy_model.count_params() + numpy_model.count_non_trainable()
    theirs = keras_model.count_params()
    return CheckResult("params", ours == theirs, float(abs(ours - theirs)), 0.0,
                       detail=f"NumPy {ours:,}, Keras {theirs:,}")


def numeric_check(name: str, x, y, sizes: Sizes) -> CheckResult:
    """On two images (a step then crosses fewer ReLU kinks, see gradtable.MAX_BATCH)."""
    from comparison.gradtable import L2

    x, y = x[:2], y[:2]
    network = build_model(name, l2=L2, seed=SEED, dtype=np.float64, fast=False)
    rows = [row for row in gradcheck.model_gradient_errors(network, x, y, sizes.entries,
                                                           seed=SEED) if row.checked]
    logits = np.random.default_rng(SEED).standard_normal((len(y), zoo.NUM_CLASSES))
    _, dlogits = losses.softmax_cross_entropy(logits, y, LABEL_SMOOTHING)
    numeric = gradcheck.numeric_gradient(
        lambda: losses.softmax_cross_entropy(logits, y, LABEL_SMOOTHING)[0], logits)
    # the network's arrays: the error beyond each entry's round-off allowance
    errors = {f"{row.layer} {row.param}": row.beyond_roundoff for row in rows}
    # entries below 1e-2 of the largest against that, as model_gradient_errors measures
    errors["dL/dlogits"] = gradcheck.grad_rel_error(dlogits, numeric,
                                                    1e-2 * np.abs(numeric).max())
    where = max(errors, key=errors.get)
    return CheckResult("numeric", errors[where] <= gradcheck.NETWORK_TOLERANCE, errors[where],
                       gradcheck.NETWORK_TOLERANCE, where=where)


def from_quantities(check: str, quantities) -> CheckResult:
    """The worst of `quantities` (localize.Quantity); where: the first that disagrees, in
    the order of the computation, else the worst."""
    worst = max(quantities, key=lambda q: q.error / q.tolerance)
    first = next((q for q in quantities if not q.agrees), worst)
    return CheckResult(check, worst.agrees, worst.error, worst.tolerance,
                       where=f"step {first.step}: {first.name}")


def replay_checks(name: str, batches, sizes: Sizes) -> list[CheckResult]:
    """forward, TF and lockstep from one float64 replay of `sizes.steps` steps."""
    from comparison import localize, twin
    from comparison.gradtable import L2

    try:
        pair = twin.twin_pair(name, "float64", SEED, l2=L2)
    except ValueError as err:  # the twins' weights do not fit each other (shapes)
        return [CheckResult(c, True, None, None, detail=f"not run: {err}")
                for c in ("forward", "TF", "lockstep")]
    steps = list(localize.replay(pair, batches, "adam", None, sizes.steps,
                                 label_smoothing=LABEL_SMOOTHING))
    return [from_quantities("forward", [q for q in steps[0] if q.stage == "forward"]),
            from_quantities("TF", [q for q in steps[0] if q.stage == "backward"]),
            from_quantities("lockstep", [q for step in steps for q in step
                                         if q.stage == "update"])]


def accuracy_check(name: str, sizes: Sizes, data_dir) -> CheckResult:
    """Both twins trained side by side (`twin.lockstep`: float32, Adam, dropout off, so that
    they stay twins) over the first `sizes.train_images` images, then validated."""
    from comparison import twin
    from comparison.gradtable import L2
    from keras_impl.data import make_dataset
    from scratch.train import evaluate

    if build_model(name).count_non_trainable():  # BatchNorm's, alone or in residual blocks
        return CheckResult("accuracy", True, None, None, detail=(
            "not run: BatchNorm's moving averages (momentum 0.99) need hundreds of steps "
            "before inference means anything, minutes with the readable layers"))
    try:
        pair = twin.twin_pair(name, "float32", SEED, l2=L2)
    except ValueError as err:
        return CheckResult("accuracy", True, None, None, detail=f"not run: {err}")
    flat = not zoo.has_conv(name)
    train = make_dataset("train", ACCURACY_BATCH, flat=flat, seed=SEED, data_dir=data_dir,
                         limit=sizes.train_images)
    twin.lockstep(pair, train.as_numpy_iterator(), "adam", ACCURACY_LR, len(train))
    val = list(make_dataset("val", 500, flat=flat, data_dir=data_dir, limit=VALIDATION_IMAGES)
               .as_numpy_iterator())
    numpy_acc = evaluate(pair.numpy_model, val)[1]
    keras_acc = float(np.mean(np.concatenate(
        [pair.keras_model(x, training=False).numpy().argmax(-1) == y for x, y in val])))
    points = 100 * abs(numpy_acc - keras_acc)
    return CheckResult("accuracy", points <= ACCURACY_POINTS, points, ACCURACY_POINTS,
                       detail=f"NumPy {numpy_acc:.1%}, Keras {keras_acc:.1%}")


def network_checks(name: str, sizes: Sizes, data_dir) -> list[CheckResult]:
    """Every check of CHECKS on zoo network `name` as the code stands (planted or not)."""
    from keras_impl.data import make_dataset

    batches = list(make_dataset("train", sizes.batch, flat=not zoo.has_conv(name), seed=SEED,
                                data_dir=data_dir, limit=sizes.batch * sizes.steps)
                   .as_numpy_iterator())
    x, y = batches[0]
    forward, tensorflow, lockstep = replay_checks(name, batches, sizes)
    results = [params_check(name), forward, numeric_check(name, x.astype(np.float64), y, sizes),
               tensorflow, lockstep]
    if sizes.train_images:
        results.append(accuracy_check(name, sizes, data_dir))
    return results


def run(bug: Bug | None, network: str, sizes: Sizes, data_dir) -> dict:
    """One row: `bug` planted (None: the reference code) on `network`."""
    with planted(bug) if bug else readable_layers():
        results = network_checks(network, sizes, data_dir)
    caught = [r.check for r in results if not r.passed]
    return {"bug": bug.name if bug else "reference", "model": network,
            "mistake": bug.mistake if bug else "none: the readable code as it is",
            "mutation": [line for m in bug.mutations for line in m.diff()] if bug else [],
            "checks": {r.check: asdict(r) for r in results}, "caught_by": caught}


def cell(result: dict | None) -> str:
    """A table cell: the error, red when the check catches the bug, "n/a" when not run."""
    if result is None or result["error"] is None:
        return "[dim]n/a[/]" if result else ""
    error = result["error"]
    text = {"params": f"{error:,.0f}", "accuracy": f"{error:.1f}"}.get(result["check"],
                                                                      f"{error:.0e}")
    return f"[dim]{text}[/]" if result["passed"] else f"[bold red]{text}[/]"


def print_table(rows: list[dict], console) -> None:
    table = Table(title="The bug zoo: which check catches which mistake", padding=(0, 1, 0, 0),
                  caption="red: caught (error above the threshold); forward, numeric, TF: "
                          "relative error (<= 1e-7); lockstep: relative (<= 1e-4); params: "
                          f"count difference; accuracy: points (<= {ACCURACY_POINTS:g})")
    table.add_column("bug")
    table.add_column("net")
    for check in CHECKS:
        table.add_column({"forward": "fwd", "accuracy": "acc"}.get(check, check),
                         justify="right")
    for row, following in zip(rows, [*rows[1:], None]):
        last_reference = row["bug"] == "reference" and (following or {}).get("bug") != "reference"
        table.add_row(row["bug"], row["model"], *(cell(row["checks"].get(c)) for c in CHECKS),
                      end_section=last_reference)
    console.print(table)


def main(args, console) -> dict:
    sizes = FAST if args.fast else FULL
    if args.limit and sizes.train_images:
        sizes = Sizes(sizes.batch, sizes.entries, sizes.steps, args.limit)
    chosen = [BUGS[name] for name in (args.bug or BUGS)]
    rows = [run(None, network, sizes, args.data_dir)
            for network in dict.fromkeys(bug.model for bug in chosen)]
    for bug in chosen:
        with (console.status(f"{bug.name} on {bug.model}") if console.is_terminal
              else contextlib.nullcontext()):  # a spinner in a terminal, nothing in a notebook
            rows.append(run(bug, bug.model, sizes, args.data_dir))
    print_table(rows, console)
    for bug in chosen:
        console.print(f"[bold]{bug.name}[/]: {bug.mistake}", highlight=False)
    missed = [r["bug"] for r in rows if r["bug"] != "reference" and not r["caught_by"]]
    false_alarms = [r["model"] for r in rows if r["bug"] == "reference" and r["caught_by"]]
    if missed or false_alarms:
        console.print(f"[red]FAIL[/]: caught by no check: {', '.join(missed) or 'none'}; "
                      f"reference failing: {', '.join(false_alarms) or 'none'}")
    return {"sizes": asdict(sizes), "rows": rows, "passed": not (missed or false_alarms)}


DEMONSTRATION = ("python compare.py --model tiny --limit 1024 "
                 "--inject conv_kernel_flipped")


def add_arguments(parser) -> None:
    """`python compare.py bugs`'s own flags, and the list of bugs as the help's epilog."""
    lines = ["bugs: NAME (its network) the mistake"]
    for bug in BUGS.values():
        lines += textwrap.wrap(f"{bug.name} ({bug.model}) {bug.mistake}", 78,
                               initial_indent="  ", subsequent_indent="      ")
    parser.epilog = "\n".join([*lines, "", "the cheapest demonstration (one bug planted, "
                                "the localizer finds it):", f"  {DEMONSTRATION}"])
    parser.add_argument("--bug", nargs="+", type=bug_argument, metavar="NAME",
                        help=f"only these bugs (default: all {len(BUGS)})")
    parser.add_argument("--fast", action="store_true",
                        help="cheap checks only (no accuracy), fewer images, entries and steps")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help=f"training images of the accuracy check (default {FULL.train_images})")
