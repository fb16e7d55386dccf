"""SGD (momentum, Nesterov) and Adam with exactly Keras 3's update formulas.

A learning-rate schedule (`CosineDecay`) maps the step number to a learning
rate; the training loop gives the optimizer that rate before each step
(`dataclasses.replace(optimizer, learning_rate=schedule(step))`), as Keras does
with `optimizer.iterations`.

One signature for every optimizer: `update(w, dw, state) -> (w, state)` for one
parameter array; `state` is None on the first call and whatever update returned
afterwards (the caller keeps one state per parameter). `w` is updated in place
and returned. The arithmetic is done in w's dtype, operation by operation in
Keras's order (keras/src/optimizers/sgd.py and adam.py), so a NumPy model and a
Keras model started from the same weights follow the same trajectory up to
float rounding.

`make_optimizer("sgd", momentum=0.9)` builds one by name, with Keras's default learning
rates (DEFAULT_LR); keras_impl.optimizers.make_optimizer builds its Keras twin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Keras's defaults (keras.optimizers.SGD and Adam); every command line uses these.
DEFAULT_LR = {"sgd": 0.01, "adam": 0.001}


def _check(name, value, low, high, high_open=True):
    if not (low <= value < high if high_open else low <= value <= high):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} {value}: expected a value in [{low}, {high}{bracket}")


@dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent, keras.optimizers.SGD.

    momentum 0:      w -= lr * g
    momentum > 0:    m = momentum * m - lr * g;  w += m
    nesterov:        m = momentum * m - lr * g;  w += momentum * m - lr * g
    state: None (plain SGD) or the velocity m, same shape as w.
    """

    learning_rate: float = DEFAULT_LR["sgd"]
    momentum: float = 0.0
    nesterov: bool = False

    def __post_init__(self):
        _check("learning_rate", self.learning_rate, 0, float("inf"))
        _check("momentum", self.momentum, 0, 1, high_open=False)

    def update(self, w, dw, state):
        """One step for w (any shape) with gradient dw (same shape); returns (w, m)."""
        lr = w.dtype.type(self.learning_rate)
        if self.momentum == 0:
            w -= dw * lr
            return w, None
        momentum = w.dtype.type(self.momentum)
        m = np.zeros_like(w) if state is None else state
        m *= momentum
        m -= dw * lr
        if self.nesterov:
            step = m * momentum
            step -= dw * lr
            w += step
        else:
            w += m
        return w, m


@dataclass(frozen=True)
class Adam:
    """Adam, keras.optimizers.Adam (Kingma & Ba, with Keras's epsilon placement).

    At step t (1, 2, ...):
        alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m += (g - m) * (1 - beta_1)
        v += (g**2 - v) * (1 - beta_2)
        w -= alpha * m / (sqrt(v) + epsilon)
    state: {"step": t, "m": array like w, "v": array like w}.
    """

    learning_rate: float = DEFAULT_LR["adam"]
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def __post_init__(self):
        _check("learning_rate", self.learning_rate, 0, float("inf"))
        _check("beta_1", self.beta_1, 0, 1)
        _check("beta_2", self.beta_2, 0, 1)
        _check("epsilon", self.epsilon, 0, float("inf"))

    def update(self, w, dw, state):
        """One step for w (any shape) with gradient dw (same shape); returns (w, state)."""
        if state is None:
            state = {"step": 0, "m": np.zeros_like(w), "v": np.zeros_like(w)}
        real = w.dtype.type  # Keras computes in the variable's dtype
        step = real(state["step"] + 1)
        alpha = (real(self.learning_rate) * np.sqrt(real(1) - real(self.beta_2) ** step)
                 / (real(1) - real(self.beta_1) ** step))
        m, v = state["m"], state["v"]
        delta = dw - m
        delta *= real(1 - self.beta_1)
        m += delta
        delta = np.square(dw)
        delta -= v
        delta *= real(1 - self.beta_2)
        v += delta
        denom = np.sqrt(v)
        denom += real(self.epsilon)
        delta = m * alpha
        delta /= denom
        w -= delta
        state["step"] += 1
        return w, state


def make_optimizer(name: str, lr: float | None = None, momentum: float = 0.0,
                   nesterov: bool = False) -> SGD | Adam:
    """SGD or Adam by name (the --optimizer flag), learning rate `lr` (default DEFAULT_LR[name]).

    momentum and nesterov are SGD's; Adam refuses them rather than ignore them.
    """
    if name not in DEFAULT_LR:
        raise ValueError(f"optimizer {name!r}: expected {' or '.join(DEFAULT_LR)}")
    lr = DEFAULT_LR[name] if lr is None else lr
    if name == "sgd":
        return SGD(lr, momentum, nesterov)
    if momentum or nesterov:
        raise ValueError("momentum and nesterov apply to sgd only")
    return Adam(lr)


@dataclass(frozen=True)
class CosineDecay:
    """keras.optimizers.schedules.CosineDecay with a linear warmup from 0.

    step < warmup_steps:  lr = peak * step / warmup_steps
    afterwards:           lr = peak * ((1 - alpha) * (1 + cos(pi * d)) / 2 + alpha),
                          d = min(step - warmup_steps, decay_steps) / decay_steps
    Steps count from 0 (the first update uses step 0), like optimizer.iterations.
    The warmup keeps the first steps small while Adam's moment estimates and the
    BatchNorm statistics settle; the cosine ends the run with small, averaging steps.
    """

    peak: float
    decay_steps: int
    warmup_steps: int = 0
    alpha: float = 0.0

    def __post_init__(self):
        _check("peak", self.peak, 0, float("inf"))
        if self.decay_steps < 1 or self.warmup_steps < 0:
            raise ValueError(f"decay_steps {self.decay_steps} (>= 1 expected), warmup_steps "
                             f"{self.warmup_steps} (>= 0 expected)")
        _check("alpha", self.alpha, 0, 1, high_open=False)

    @classmethod
    def for_run(cls, peak: float, epochs: int, steps_per_epoch: int,
                warmup_epochs: float = 0.0) -> CosineDecay:
        """Linear warmup over `warmup_epochs`, then cosine decay to 0 at the end of `epochs`."""
        warmup = round(warmup_epochs * steps_per_epoch)
        return cls(peak, max(1, epochs * steps_per_epoch - warmup), warmup)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak * step / self.warmup_steps
        done = min(step - self.warmup_steps, self.decay_steps) / self.decay_steps
        return self.peak * ((1 - self.alpha) * 0.5 * (1 + math.cos(math.pi * done)) + self.alpha)
