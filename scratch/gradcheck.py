"""Gradient checking: hand-written backprop against central differences.

    python -m scratch.gradcheck                 # every zoo model, float64
    python -m scratch.gradcheck convnet --entries 50 --l2 0.01

For each parameter array it perturbs a sample of entries by +-h, recomputes
the loss, and reports the largest relative error
|analytic - numeric| / max(|analytic|, |numeric|, tiny) over those entries
(steps that cross a ReLU or max-pool kink are counted and left out; see
`model_gradient_errors`). Dropout stays on with the same mask throughout.
"""
from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table

from scratch import zoo
from scratch.losses import softmax_cross_entropy
from scratch.model import build_model

TINY = 1e-12  # below this both gradients count as zero and the error as absolute
KINK_TOLERANCE = 1e-8  # relative second difference of the logits that marks a kink


def grad_rel_error(a, b, tiny=TINY) -> float:
    """max over entries of |a - b| / max(|a|, |b|, tiny); a and b of the same shape."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
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


def model_gradient_errors(model, x, y, entries=None, h=1e-4, floor=1e-2, seed=0):
    """Check model.loss_and_grads (training mode, L2 included) by central differences.

    model should be float64 (`model.astype(np.float64)`); x, y: a small batch.
    entries: how many randomly chosen entries per parameter array (default all).

    Two things make a whole network harder to check than one layer:
    - kinks: ReLU and max pooling make the logits piecewise linear in every
      single weight, so a +-h step that crosses a kink gives a wrong numeric
      slope. Away from kinks the logits are exactly linear in that weight, so
      a step crossed one iff logits(w+h) + logits(w-h) - 2 logits(w) is not ~0;
      those entries are reported and left out.
    - round-off: the loss carries an absolute error of about 1e-16 * |loss| / h,
      so entries far smaller than the array's largest gradient cannot be
      checked relatively; they are measured against `floor` times that largest.
    Returns [(layer name, param name, entries checked, max relative error)]
    in `model.parameters()` order; "checked" leaves out the entries at a kink.
    """
    rng = np.random.default_rng(seed)
    dropout_state = model.rng.bit_generator.state if model.rng is not None else None
    evaluated = []  # the logits of every loss evaluation, in order

    def loss():
        if dropout_state is not None:  # the same dropout masks in every evaluation
            model.rng.bit_generator.state = dropout_state
        logits = model.forward(x, training=True)
        evaluated.append(logits)
        return softmax_cross_entropy(logits, y)[0] + model.l2_loss()

    loss()
    base = evaluated.pop()
    if dropout_state is not None:
        model.rng.bit_generator.state = dropout_state
    model.loss_and_grads(x, y, training=True)
    rows = []
    for i, key, value in model.parameters():
        analytic = model.layers[i].grads[key].reshape(-1)
        chosen = (np.arange(value.size) if entries is None or entries >= value.size
                  else rng.choice(value.size, entries, replace=False))
        evaluated.clear()
        numeric = numeric_gradient(loss, value, h, chosen)
        plus, minus = np.array(evaluated[0::2]), np.array(evaluated[1::2])
        curvature = np.abs(plus + minus - 2 * base).max(axis=(1, 2))
        slope = np.abs(plus - minus).max(axis=(1, 2))
        smooth = curvature <= KINK_TOLERANCE * slope + 1e-14
        tiny = max(floor * float(np.abs(analytic).max()), TINY)
        error = grad_rel_error(analytic[chosen][smooth], numeric[smooth], tiny)
        rows.append((model.layers[i].name, key, int(smooth.sum()), error))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scratch.gradcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="zoo models (default: all of them)")
    parser.add_argument("--batch", type=int, default=2, help="random images per check (default 2)")
    parser.add_argument("--entries", type=int, default=20,
                        help="entries checked per parameter array (default 20)")
    parser.add_argument("--l2", type=float, default=0.01, help="L2 factor (default 0.01)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.entries < 1 or args.l2 < 0:
        parser.error("--batch and --entries must be >= 1 and --l2 >= 0")
    rng = np.random.default_rng(args.seed)
    table = Table(title="analytic vs central-difference gradients (float64, h=1e-4)")
    for column in ("model", "layer", "param", "checked", "at a kink", "max rel. error"):
        table.add_column(column)
    for name in args.names or zoo.model_names():
        try:
            model = build_model(name, l2=args.l2, seed=args.seed).astype(np.float64)
        except KeyError as err:
            parser.error(err.args[0])
        x = rng.random((args.batch, *zoo.INPUT_SHAPE))
        y = rng.integers(0, zoo.NUM_CLASSES, args.batch)
        rows = model_gradient_errors(model, x, y, args.entries, seed=args.seed)
        for (_, _, value), (layer, key, checked, error) in zip(model.parameters(), rows):
            kinks = min(args.entries, value.size) - checked
            table.add_row(name, layer, key, str(checked), str(kinks), f"{error:.1e}")
    Console().print(table)


if __name__ == "__main__":
    main()
