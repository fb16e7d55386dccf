"""Gradient checking: hand-written backprop against central differences.

    python -m scratch.gradcheck                 # every zoo model, float64
    python -m scratch.gradcheck convnet --entries 50 --l2 0.01

For each parameter array it perturbs a sample of entries by +-h (and +-2h for
networks with a normalisation), recomputes the loss, and compares the two
gradients entry by entry. An entry passes when

    |analytic - numeric| <= NETWORK_TOLERANCE * max(|analytic|, |numeric|) + c * eps / h

where eps bounds the round-off of one loss evaluation (measured, see
`loss_roundoff`) and c * eps / h is what that round-off can do to a central
difference (c = 1, or 1.5 with Richardson extrapolation). A step that crosses a
kink of a ReLU or max pooling leaves its entry out (see `model_gradient_errors`).
Dropout stays on with the same mask throughout, BatchNorm uses the batch's
statistics (training mode). An array passes when at least one entry was checked
and every checked entry passes; the command exits 1 when any array fails.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import NamedTuple

import numpy as np
from rich.console import Console
from rich.table import Table

from scratch import zoo
from plumbing.args import batch_size, nonnegative_float, positive_int, seed_number
from scratch.cli import model_name
from scratch.losses import softmax_cross_entropy
from scratch.model import build_model
from scratch.registry import KINDS

TINY = 1e-12  # below this both gradients count as zero and the error as absolute
KINK_TOLERANCE = 1e-8  # relative second (fourth) difference of the logits that marks a kink
# What a correct backward pass stays below in float64 besides the loss's round-off (allowed
# for entry by entry, see CENTRAL_ROUNDOFF); a wrong one lands at 1e-3 and above.
NETWORK_TOLERANCE = 1e-7
# Steps tried in turn with a normalisation in the network (see model_gradient_errors).
CURVED_STEPS = (1e-4, 3e-5, 1e-5)
# Tried next by the whole-network check, for an entry whose every curved step crossed a
# kink, each only where round-off still resolves the tolerance (see model_gradient_errors).
SMALL_STEPS = (3e-6, 1e-6, 3e-7, 1e-7)
# The loss's round-off is measured from NOISE_POINTS evaluations NOISE_SPACING apart.
NOISE_POINTS = 9
NOISE_SPACING = 1e-9
# eps, the bound on one evaluation's round-off, is this many standard deviations of the
# measured round-off: Gaussian noise stays within it in 99.7% of evaluations.
NOISE_SIGMAS = 3.0
# c in the allowance c * eps / h: a numeric derivative is a weighted sum of loss
# evaluations, each off by at most eps, so its round-off is at most eps times the sum of the
# weights' magnitudes. D(h) = (L(w+h) - L(w-h)) / 2h weighs two evaluations by 1/2h: c = 1.
# Richardson's (4 D(h) - D(2h)) / 3 weighs L(w+-h) by 4/(3 2h) and L(w+-2h) by 1/(3 4h):
# c = 2 (2/3) + 2 (1/12) = 1.5.
CENTRAL_ROUNDOFF = 1.0
RICHARDSON_ROUNDOFF = 1.5


def relative_errors(a, b, tiny=TINY) -> np.ndarray:
    """|a - b| / max(|a|, |b|, tiny), entry by entry; a and b of the same shape."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), tiny)


def grad_rel_error(a, b, tiny=TINY) -> float:
    """max over entries of |a - b| / max(|a|, |b|, tiny); a and b of the same, non-empty shape."""
    errors = relative_errors(a, b, tiny)
    if errors.size == 0:
        raise ValueError("no entries to compare: the largest error of nothing is undefined")
    return float(errors.max())


def beyond_roundoff(a, b, allowance, tiny=TINY) -> np.ndarray:
    """max(|a - b| - allowance, 0) / max(|a|, |b|, tiny), entry by entry: the relative error
    that round-off cannot explain. It is at most t exactly when
    |a - b| <= t max(|a|, |b|, tiny) + allowance."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.maximum(np.abs(a - b) - allowance, 0) / np.maximum(
        np.maximum(np.abs(a), np.abs(b)), tiny)


def numeric_gradient(f, x, h=1e-5, indices=None):
    """Central differences (f(x + h e_i) - f(x - h e_i)) / 2h of the scalar function f().

    f takes no arguments and reads x, which is perturbed in place and restored.
    indices: flat indices of the entries to differentiate (default: all).
    Returns an array shaped like x, or one value per index when indices are given.
    """
    flat = x.reshape(-1)  # a view: writing flat[i] perturbs x
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so it can be perturbed in place")
    chosen = range(x.size) if indices is None else indices
    grad = np.empty(len(chosen), dtype=np.float64)
    for k, i in enumerate(chosen):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        grad[k] = (plus - minus) / (2 * h)
    return grad.reshape(x.shape) if indices is None else grad


def loss_roundoff(f, x, index, spacing=NOISE_SPACING, points=NOISE_POINTS) -> float:
    """eps: a bound on the round-off of one evaluation of the scalar f() as x.flat[index] moves.

    f is evaluated with x.flat[index] at `points` values `spacing` apart around its own
    (x is perturbed in place and restored). Over so short a range the exact f is a
    quadratic to far below round-off (its cubic term is f''' times ~1e-26), so what departs
    from the least-squares quadratic through the values is round-off, new in every
    evaluation because every value downstream of x changes in its last bits. (A kink
    crossed within the range, rare, bends f by its slope change times ~1e-9 and can only
    make eps larger.) Returns NOISE_SIGMAS standard deviations of the departures, with
    points - 3 degrees of freedom.
    """
    flat = x.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so it can be perturbed in place")
    old = flat[index]
    offsets = np.arange(points) - (points - 1) / 2
    values = np.empty(points)
    for k, offset in enumerate(offsets):
        flat[index] = old + offset * spacing
        values[k] = f()
    flat[index] = old
    values -= values.mean()  # the fit sees the changes only, not f's size
    departures = values - np.polyval(np.polyfit(offsets, values, 2), offsets)
    return NOISE_SIGMAS * float(np.sqrt(np.sum(departures ** 2) / (points - 3)))


class AllowedEntry(NamedTuple):
    """An entry above the tolerance that passes only by its round-off allowance."""

    index: int  # flat index into the parameter array
    error: float  # |a - b| / max(|a|, |b|)
    allowance: float  # c eps / h, relative like the error


class ArrayCheck(NamedTuple):
    """The whole-network check of one parameter array."""

    layer: str
    param: str
    sampled: int  # entries chosen at random
    checked: int  # of them compared (the others crossed a kink at every step tried)
    error: float  # max relative error |a-b| / max(|a|, |b|) over them; nan when none
    beyond_roundoff: float  # max of `beyond_roundoff` over them; nan when none
    allowed: tuple  # AllowedEntry of each entry that passes only by its round-off allowance
    roundoff: float  # eps, the measured bound on one loss evaluation's round-off

    @property
    def within_allowance(self) -> int:
        """How many entries pass only by their round-off allowance."""
        return len(self.allowed)

    def passed(self, tolerance: float = NETWORK_TOLERANCE) -> bool:
        """Every checked entry within tolerance * max(|a|, |b|) plus its round-off allowance.
        A check of no entries fails, whatever the tolerance."""
        return self.checked > 0 and self.beyond_roundoff <= tolerance


def allowance_note(named_entries, tolerance=NETWORK_TOLERANCE) -> str:
    """The footnote of a table whose errors are marked *: named_entries, pairs of an array's
    name and one of its AllowedEntry, each as "name[index]: error (allowance ...)"."""
    entries = "; ".join(f"{name}[{entry.index}]: {entry.error:.1e} (allowance "
                        f"{entry.allowance:.1e})" for name, entry in named_entries)
    return (f"*: entries above {tolerance:g} that pass only by their round-off allowance "
            f"c eps / h (eps: the loss's measured round-off), relative errors: {entries}")


def has_kinks(model) -> bool:
    """True when the model has a piecewise-linear layer (`KINDS[kind].piecewise_linear`),
    on its own or as a layer's activation (an activation is named like the layer kind
    that computes it: "relu")."""
    return any(KINDS[kind].piecewise_linear
               for spec in zoo.architecture(model.name)
               for kind in (spec.kind, spec.activation) if kind is not None)


def is_curved(model) -> bool:
    """True when the model has a layer that is curved between its kinks
    (`KINDS[kind].curved`: BatchNorm in training, LayerNorm, GroupNorm, residual blocks)."""
    return any(KINDS[spec.kind].curved for spec in zoo.architecture(model.name))


def model_gradient_errors(model, x, y, entries=None, h=None, floor=1e-2, seed=0,
                          tolerance=NETWORK_TOLERANCE, on_array=None):
    """Check model.loss_and_grads (training mode, L2 included) by finite differences.

    model should be float64 (`model.astype(np.float64)`); x, y: a small batch.
    entries: how many randomly chosen entries per parameter array (default all).
    on_array: called with each ArrayCheck as it is made (a progress display).

    Four things make a whole network harder to check than one layer:
    - kinks: ReLU and max pooling make the logits z piecewise linear in every
      single weight w. Central differences (L(w+h) - L(w-h)) / 2h, h = 1e-4, are
      exact on a linear piece, and a step crossed a kink iff the second
      difference z(w+h) - 2 z(w) + z(w-h) is not ~0; those entries are
      reported and left out. With a normalisation (`is_curved`: BatchNorm in
      training mode, LayerNorm, GroupNorm) the pieces are curved instead, as
      the statistics move with every weight: then the loss is also evaluated
      at w +- 2h; Richardson's (4 D(h) - D(2h)) / 3, D(s) = (L(w+s) - L(w-s)) / 2s,
      cancels the h^2 error term of a central difference, and the fourth
      difference z(w+2h) - 4 z(w+h) + 6 z(w) - 4 z(w-h) + z(w-2h), ~h^4 z'''' on
      a smooth piece, marks the kinks. (A difference counts as not ~0 when it
      exceeds KINK_TOLERANCE times |z(w+h) - z(w-h)|.) A network without a
      piecewise-linear layer (`has_kinks`) has no kink to cross, and its
      curvature would mark every step: there every sampled entry is checked.
    - round-off: the loss carries an error of a few units in its last place, new
      in every evaluation as a weight moves. `loss_roundoff` measures its bound
      eps once per array; a central difference divides it by h, so each entry
      passes when |a - b| <= tolerance * max(|a|, |b|) + c eps / h, c =
      RICHARDSON_ROUNDOFF with Richardson, else CENTRAL_ROUNDOFF. Entries that
      pass only by this allowance are reported (`ArrayCheck.allowed`).
    - step size: a step of an early weight moves every unit downstream (a
      ResNet's stem: some 10^5 ReLUs on two images), so a large step crosses
      kinks, while a small one has a large round-off allowance. Each entry gets
      the largest step that crosses no kink: of CURVED_STEPS in a curved network,
      then, in one with kinks, of SMALL_STEPS those where the allowance stays
      within tolerance * max(|a|, floor * largest) (a step there cannot let
      through more than twice the tolerance). An entry whose every step crossed
      a kink is left out; an array with no entry checked fails.
    - small and zero gradients: an entry far below its array's largest gradient
      cannot be resolved relatively; it is measured against `floor` times that
      largest. A bias feeding a BatchNorm has gradient 0 in training mode (see
      `Model.biases_before_batchnorm`): the logits do not depend on it and both
      sides are round-off, so those arrays are measured against `floor` times
      the network's largest gradient.
    Every evaluation runs BatchNorm in training mode, which updates its moving
    statistics; they take no part in the loss and are restored at the end.
    Returns one ArrayCheck per array, in `model.parameters()` order. An array with
    no entry checked (every sampled step crossed a kink, or entries=0) gets error
    nan and fails `ArrayCheck.passed`: a check of nothing proves nothing.
    """
    kinked = has_kinks(model)
    curved = is_curved(model)
    steps = (h,) if h else (CURVED_STEPS if curved else (1e-4,))
    small_steps = SMALL_STEPS if not h and curved and kinked else ()
    weight = RICHARDSON_ROUNDOFF if curved else CENTRAL_ROUNDOFF
    rng = np.random.default_rng(seed)
    dropout_state = model.rng.bit_generator.state if model.rng is not None else None
    saved_weights = [value.copy() for _, _, value in model.weights()]
    evaluated = []  # the logits of every loss evaluation, in order

    def loss():
        if dropout_state is not None:  # the same dropout masks in every evaluation
            model.rng.bit_generator.state = dropout_state
        logits = model.forward(x, training=True)
        evaluated.append(logits)
        return softmax_cross_entropy(logits, y)[0] + model.l2_loss()

    def differences(value, indices, step, kink_test):
        """(numeric gradient, smooth mask) of value's entries `indices` at `step`."""
        evaluated.clear()
        numeric = numeric_gradient(loss, value, step, indices)
        if curved:
            numeric = (4 * numeric - numeric_gradient(loss, value, 2 * step, indices)) / 3
        if not kink_test:
            return numeric, np.ones(len(indices), dtype=bool)
        z = np.array(evaluated).reshape(-1, len(indices), 2, *base.shape)  # [step, entry, +-]
        plus, minus = z[0, :, 0], z[0, :, 1]
        if curved:
            kink = z[1, :, 0] + z[1, :, 1] - 4 * (plus + minus) + 6 * base
        else:
            kink = plus + minus - 2 * base
        return numeric, (np.abs(kink).max(axis=(1, 2))
                         <= KINK_TOLERANCE * np.abs(plus - minus).max(axis=(1, 2)) + 1e-14)

    loss()
    base = evaluated.pop()
    if dropout_state is not None:
        model.rng.bit_generator.state = dropout_state
    model.loss_and_grads(x, y, training=True)
    largest = max(float(np.abs(model.layers[i].grads[key]).max())
                  for i, key, _ in model.parameters())
    zeros = model.biases_before_batchnorm()
    rows = []
    for i, key, value in model.parameters():
        chosen = (np.arange(value.size) if entries is None or entries >= value.size
                  else rng.choice(value.size, entries, replace=False))
        gradient = model.layers[i].grads[key].reshape(-1)
        analytic = gradient[chosen]
        scale = largest if (i, key) in zeros else float(np.abs(gradient).max(initial=0))
        tiny = max(floor * scale, TINY)
        epsilon = loss_roundoff(loss, value, chosen[0]) if len(chosen) else 0.0
        # zeros: the logits do not move, so no kink is crossed
        kink_test = kinked and (i, key) not in zeros
        numeric, used_step = np.zeros(len(chosen)), np.full(len(chosen), np.nan)
        for step in steps + small_steps:  # the entries that crossed a kink again
            todo = np.isnan(used_step)
            if step in small_steps:  # only where round-off still resolves the tolerance
                todo &= weight * epsilon / step <= tolerance * np.maximum(np.abs(analytic), tiny)
            todo = np.flatnonzero(todo)
            if len(todo):
                numeric[todo], smooth = differences(value, chosen[todo], step, kink_test)
                used_step[todo[smooth]] = step
        smooth = ~np.isnan(used_step)
        checked = int(smooth.sum())
        a, b, allowance = analytic[smooth], numeric[smooth], weight * epsilon / used_step[smooth]
        errors = relative_errors(a, b, tiny)
        unexplained = beyond_roundoff(a, b, allowance, tiny)
        shares = allowance / np.maximum(np.maximum(np.abs(a), np.abs(b)), tiny)
        allowed = tuple(AllowedEntry(int(chosen[smooth][k]), float(errors[k]), float(shares[k]))
                        for k in np.flatnonzero((errors > tolerance) & (unexplained <= tolerance)))
        rows.append(ArrayCheck(
            model.layers[i].name, key, len(chosen), checked,
            float(errors.max()) if checked else math.nan,
            float(unexplained.max()) if checked else math.nan,
            allowed, epsilon))
        if on_array:
            on_array(rows[-1])
    for (_, _, value), saved in zip(model.weights(), saved_weights):
        value[...] = saved
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scratch.gradcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", type=model_name,
                        help="zoo models (default: all of them)")
    parser.add_argument("--batch", type=batch_size, default=2,
                        help="random images per check (default 2)")
    parser.add_argument("--entries", type=positive_int, default=20,
                        help="entries checked per parameter array (default 20)")
    parser.add_argument("--l2", type=nonnegative_float, default=0.01,
                        help="L2 factor (default 0.01)")
    parser.add_argument("--seed", type=seed_number, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    table = Table(title="analytic vs finite-difference gradients (float64; h=1e-4, with "
                        "a normalisation 1e-4 down to 1e-7 and Richardson extrapolation)")
    for column in ("model", "layer", "param", "checked", "at a kink", "max rel. error"):
        table.add_column(column)
    failed, allowed = 0, []
    for name in args.names or zoo.model_names():
        model = build_model(name, l2=args.l2, seed=args.seed).astype(np.float64)
        x = rng.random((args.batch, *zoo.INPUT_SHAPE))
        y = rng.integers(0, zoo.NUM_CLASSES, args.batch)
        for row in model_gradient_errors(model, x, y, args.entries, seed=args.seed):
            error = f"{row.error:.1e}" if row.checked else "nothing checked"
            colour = "green" if row.passed() else "red"
            mark = "*" if row.within_allowance else ""
            table.add_row(name, row.layer, row.param, str(row.checked),
                          str(row.sampled - row.checked), f"[{colour}]{error}{mark}[/]")
            failed += not row.passed()
            allowed += [(f"{row.layer} {row.param}", entry) for entry in row.allowed]
    console = Console()
    console.print(table)
    if allowed:
        console.print(allowance_note(allowed))
    if failed:
        console.print(f"[red]FAIL[/]: {failed} arrays with no entry checked or an error "
                      f"above {NETWORK_TOLERANCE:g} beyond round-off")
        return 1
    console.print(f"[green]pass[/]: every array checked, every error <= {NETWORK_TOLERANCE:g} "
                  "beyond round-off")
    return 0

if __name__ == "__main__":
    sys.exit(main())
