"""The Keras optimizers of the command lines, twins of scratch.optim's.

    optimizer = make_optimizer("sgd", momentum=0.9)       # keras.optimizers.SGD(0.01, 0.9)
    optimizer = make_optimizer("adam", schedule=CosineDecay.for_run(2e-3, 20, 430, 1))

The same names, defaults (scratch.optim.DEFAULT_LR, Keras's own) and settings as
scratch.optim.make_optimizer, so `--optimizer sgd --momentum 0.9` means one thing on
both sides.
"""
from __future__ import annotations

import keras

from scratch.optim import DEFAULT_LR, CosineDecay


def make_optimizer(name: str, lr: float | None = None, momentum: float = 0.0,
                   nesterov: bool = False, schedule: CosineDecay | None = None):
    """keras.optimizers.SGD or Adam by name, learning rate `lr` (default DEFAULT_LR[name]).

    momentum and nesterov are SGD's; Adam refuses them rather than ignore them.
    `schedule` (scratch.optim.CosineDecay, the NumPy side's schedule) replaces the fixed
    rate by keras.optimizers.schedules.CosineDecay with the same numbers.
    """
    if name not in DEFAULT_LR:
        raise ValueError(f"optimizer {name!r}: expected {' or '.join(DEFAULT_LR)}")
    lr = DEFAULT_LR[name] if lr is None else lr
    if schedule is not None:
        lr = keras_schedule(schedule)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=momentum, nesterov=nesterov)
    if momentum or nesterov:
        raise ValueError("momentum and nesterov apply to sgd only")
    return keras.optimizers.Adam(lr)


def keras_schedule(schedule: CosineDecay):
    """keras.optimizers.schedules.CosineDecay with the numbers of the NumPy schedule."""
    warm = schedule.warmup_steps
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warm else schedule.peak, schedule.decay_steps, alpha=schedule.alpha,
        warmup_target=schedule.peak if warm else None, warmup_steps=warm)
