"""Gradient checking: hand-written backprop against central differences.

    python -m scratch.gradcheck                 # every zoo model, float64
    python -m scratch.gradcheck convnet --entries 50 --l2 0.01

For each parameter array it perturbs a sample of entries by +-h (and +-2h for
networks with BatchNorm), recomputes the loss, and reports the largest relative
error |analytic - numeric| / max(|analytic|, |numeric|, tiny) over those entries
(in a network with a ReLU or max pooling, steps that cross a kink are counted
and left out; see `model_gradient_errors`). Dropout stays on with the same mask
throughout, BatchNorm uses the batch's statistics (training mode). An array passes
when at least one entry was checked and its error is at most NETWORK_TOLERANCE;
the command exits 1 when any array fails.
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
# What a correct backward pass stays below in float64 (h^2 truncation, 1e-16 / h
# round-off); a wrong one lands at 1e-3 and above.
NETWORK_TOLERANCE = 1e-7
# Steps tried in turn with a normalisation in the network (see model_gradient_errors).
CURVED_STEPS = (1e-4, 3e-5, 1e-5)


def grad_rel_error(a, b, tiny=TINY) -> float:
    """max over entries of |a - b| / max(|a|, |b|, tiny); a and b of the same, non-empty shape."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("no entries to compare: the largest error of nothing is undefined")
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), tiny)
    return float(np.max(np.abs(a - b) / scale))


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


class ArrayCheck(NamedTuple):
    """The whole-network check of one parameter array."""

    layer: str
    param: str
    checked: int  # sampled entries compared (a step that crossed a kink is left out)
    error: float  # max relative error over them; nan when no entry was checked

    def passed(self, tolerance: float = NETWORK_TOLERANCE) -> bool:
        """A check of no entries fails, whatever the tolerance."""
        return self.checked > 0 and self.error <= tolerance


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


def model_gradient_errors(model, x, y, entries=None, h=None, floor=1e-2, seed=0):
    """Check model.loss_and_grads (training mode, L2 included) by finite differences.

    model should be float64 (`model.astype(np.float64)`); x, y: a small batch.
    entries: how many randomly chosen entries per parameter array (default all).

    Three things make a whole network harder to check than one layer:
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
      exceeds KINK_TOLERANCE times |z(w+h) - z(w-h)|.) The step is the largest
      of CURVED_STEPS that crosses no kink, entry by entry: a step of an early
      weight moves every unit downstream (a ResNet's stem: some 10^5 ReLUs on
      two images), so a large step crosses kinks, while a small one drowns in
      round-off (below). A network without a
      piecewise-linear layer (`has_kinks`) has no kink to cross, and its
      curvature would mark every step: there every sampled entry is checked.
    - round-off: the loss carries an absolute error of about 1e-15 (a few
      units in the last place of |loss|), so a central difference carries
      1e-15 / h: entries far smaller than the array's largest gradient cannot be
      checked relatively; they are measured against `floor` times that largest.
      With BatchNorms the gradients are small (a ResNet's betas: 2e-2 at most,
      floor 2e-4), and at h = 1e-5 this round-off alone is 5e-7 of the floor:
      the reason small steps come last in CURVED_STEPS.
    - zeros: a bias feeding a BatchNorm has gradient 0 in training mode (see
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
        analytic = model.layers[i].grads[key].reshape(-1)
        chosen = (np.arange(value.size) if entries is None or entries >= value.size
                  else rng.choice(value.size, entries, replace=False))
        # zeros: the logits do not move, so no kink is crossed
        kink_test = kinked and (i, key) not in zeros
        numeric, smooth = np.zeros(len(chosen)), np.zeros(len(chosen), dtype=bool)
        for step in steps:  # the entries that crossed a kink again, at the next step
            todo = np.flatnonzero(~smooth)
            if len(todo):
                numeric[todo], smooth[todo] = differences(value, chosen[todo], step, kink_test)
        scale = largest if (i, key) in zeros else float(np.abs(analytic).max(initial=0))
        checked = int(smooth.sum())
        error = (grad_rel_error(analytic[chosen][smooth], numeric[smooth],
                                max(floor * scale, TINY)) if checked else math.nan)
        rows.append(ArrayCheck(model.layers[i].name, key, checked, error))
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
                        "a normalisation 1e-4, 3e-5 or 1e-5 and Richardson extrapolation)")
    for column in ("model", "layer", "param", "checked", "at a kink", "max rel. error"):
        table.add_column(column)
    failed = 0
    for name in args.names or zoo.model_names():
        model = build_model(name, l2=args.l2, seed=args.seed).astype(np.float64)
        x = rng.random((args.batch, *zoo.INPUT_SHAPE))
        y = rng.integers(0, zoo.NUM_CLASSES, args.batch)
        rows = model_gradient_errors(model, x, y, args.entries, seed=args.seed)
        for (_, _, value), row in zip(model.parameters(), rows):
            kinks = min(args.entries, value.size) - row.checked
            error = f"{row.error:.1e}" if row.checked else "nothing checked"
            colour = "green" if row.passed() else "red"
            table.add_row(name, row.layer, row.param, str(row.checked), str(kinks),
                          f"[{colour}]{error}[/]")
            failed += not row.passed()
    console = Console()
    console.print(table)
    if failed:
        console.print(f"[red]FAIL[/]: {failed} arrays with no entry checked or an error "
                      f"above {NETWORK_TOLERANCE:g}")
        return 1
    console.print(f"[green]pass[/]: every array checked, every error <= {NETWORK_TOLERANCE:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
