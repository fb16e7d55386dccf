"""The cross-checks: one computation done by both implementations, results compared.

    pair = twin_pair("convnet", dtype="float64")   # Keras model + NumPy copy of its weights
    report = gradient_agreement(pair, x, y)        # per-variable max relative error
    curves = lockstep(pair, batches, "sgd", 0.05)  # K optimiser steps side by side
    weight_differences(pair)                       # every weight, moving statistics too

These checks run the training-mode forward pass with dropout off in both: the two
implementations draw different random masks, so only the deterministic part of the
network can agree number for number, while BatchNorm normalises with the batch's
statistics (and updates its moving ones) exactly as in training.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from keras_impl import optimizers
from comparison import layout
from keras_impl.distribute import forward_without_dropout
from keras_impl.zoo_model import arch_layers, build_twinnet
from keras_impl.train import make_loss_fn
from plumbing.cpus import BlasThreads
from scratch import gradcheck, optim
from scratch.model import build_model

# What "agree" means, per dtype. float64: the largest elementwise relative error
# |a-b| / max(|a|,|b|) between NumPy's and TensorFlow's gradient entries. float32: the
# norm-wise form max|a-b| / max(max|a|, max|b|) per variable, because an entry that is a
# sum of ~1e4 float32 products cancelling to almost 0 has no correct digits on either
# side (the two libraries sum in different orders); elementwise it can differ by 10%
# while the variable as a whole agrees to 1e-6. Both measures are reported for both.
GRAD_TOLERANCE = {"float64": 1e-7, "float32": 1e-4}
GRAD_MEASURE = {"float64": "elementwise", "float32": "normwise"}
# Elementwise, entries below this fraction of the network's largest gradient are measured
# against that fraction: with BatchNorm some entries are 0 in exact arithmetic (a shift
# the next BatchNorm absorbs) and hold float64 round-off, ~1e-16, on both sides.
ELEMENTWISE_FLOOR = 1e-8


def normwise_rel_error(a, b) -> float:
    """max|a - b| / max(max|a|, max|b|): the relative error of the array as a whole."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.abs(a).max(), np.abs(b).max(), gradcheck.TINY)
    return float(np.abs(a - b).max() / scale)


@contextlib.contextmanager
def keras_floatx(dtype: str):
    """Build Keras layers and losses with `dtype` weights and computations.

    Both settings are needed: layers take the global dtype policy, which Keras fixes
    from floatx the first time it is read and does not update when floatx changes.
    """
    previous = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(previous[0])
        keras.config.set_dtype_policy(previous[1])


@dataclass
class TwinPair:
    """A Keras model and a NumPy model of one zoo architecture holding the same weights."""

    name: str
    dtype: str
    keras_model: keras.Model
    numpy_model: object
    loss_fn: keras.losses.Loss


def twin_pair(name: str, dtype: str = "float32", seed: int = 0, l2: float = 0.0) -> TwinPair:
    """Both models of zoo architecture `name`; the Keras initial weights are copied to NumPy."""
    keras.utils.set_random_seed(seed)
    with keras_floatx(dtype):  # a Keras loss, too, computes in the floatx of its creation
        keras_model = build_twinnet(name, l2=l2)
        loss_fn = make_loss_fn()
    numpy_model = build_model(name, l2=l2, seed=seed, dtype=np.dtype(dtype))
    layout.to_numpy(keras_model, numpy_model)
    return TwinPair(name, dtype, keras_model, numpy_model, loss_fn)


def keras_forward(keras_model, x, training: bool):
    """The Keras model's logits with dropout off; training=True makes BatchNorm use the
    batch's statistics (and update its moving ones), like NumPy's
    `forward(x, training=True, dropout=False)`."""
    return forward_without_dropout(keras_model, x, training)


def keras_loss_and_grads(pair: TwinPair, x, y, training: bool = True):
    """(loss, [gradient per trainable variable]) from TensorFlow's GradientTape
    (dropout off; see `keras_forward`)."""
    x = tf.convert_to_tensor(x, dtype=pair.dtype)
    with tf.GradientTape() as tape:
        logits = keras_forward(pair.keras_model, x, training)
        loss = pair.loss_fn(y, logits)
        if pair.keras_model.losses:
            loss = loss + tf.add_n(pair.keras_model.losses)
    variables = pair.keras_model.trainable_variables
    return float(loss), [g.numpy() for g in tape.gradient(loss, variables)]


@dataclass
class GradientReport:
    """Loss values and, per variable, the relative errors between the two gradients."""

    dtype: str
    loss_numpy: float
    loss_keras: float
    elementwise: dict[str, float]  # "layer/param" -> max elementwise relative error
    normwise: dict[str, float]  # "layer/param" -> norm-wise relative error
    zeros: tuple[str, ...] = ()  # gradient 0 in exact arithmetic (see gradient_agreement)

    @property
    def errors(self) -> dict[str, float]:
        """The errors judged for this dtype (see GRAD_MEASURE)."""
        return getattr(self, GRAD_MEASURE[self.dtype])

    @property
    def max_error(self) -> float:
        return max(self.errors.values())

    @property
    def tolerance(self) -> float:
        return GRAD_TOLERANCE[self.dtype]

    @property
    def passed(self) -> bool:
        return self.max_error <= self.tolerance


def gradient_agreement(pair: TwinPair, x, y, training: bool = True) -> GradientReport:
    """Gradients of the same loss on the same batch, NumPy's backward vs GradientTape.

    Dropout is off; training=True runs BatchNorm on the batch's statistics, as in
    training (both sides then update their moving statistics once), False on the
    moving ones. In training mode a bias feeding a BatchNorm has gradient 0
    (`Model.biases_before_batchnorm`): both sides hold round-off there (~1e-14 in
    float64), so those variables, listed in `zeros`, are measured against the
    network's largest gradient instead of their own (and all others' tiny entries
    against ELEMENTWISE_FLOOR times it).
    """
    x = np.asarray(x, dtype=pair.dtype)
    model = pair.numpy_model
    loss_np, _ = model.loss_and_grads(x, np.asarray(y), training=training, dropout=False)
    loss_tf, grads_tf = keras_loss_and_grads(pair, x, y, training)
    grads_by_var = dict(zip((id(v) for v in pair.keras_model.trainable_variables), grads_tf))
    zeros = {f"{i}/{key}" for i, key in model.biases_before_batchnorm()} if training else set()
    pairs = {label: (layer.grads[key], grads_by_var[id(variable)])
             for label, variable, layer, key in layout.paired_weights(pair.keras_model, model)
             if id(variable) in grads_by_var}
    elementwise, normwise = gradient_errors(pairs, zeros)
    return GradientReport(pair.dtype, float(loss_np), loss_tf, elementwise, normwise,
                          tuple(sorted(zeros)))


def gradient_errors(pairs: dict, zeros=()) -> tuple[dict[str, float], dict[str, float]]:
    """({label: elementwise error}, {label: norm-wise error}) of two gradients per variable.

    pairs: label -> (ours, theirs). Entries are measured against ELEMENTWISE_FLOOR times
    the largest gradient of the network at least; the variables in `zeros` (0 in exact
    arithmetic, round-off on both sides) against that largest gradient itself.
    """
    largest = max(float(np.abs(theirs).max()) for _, theirs in pairs.values())
    largest = max(largest, gradcheck.TINY)
    elementwise, normwise = {}, {}
    for label, (ours, theirs) in pairs.items():
        if label in zeros:
            elementwise[label] = gradcheck.grad_rel_error(ours, theirs, largest)
            normwise[label] = float(np.abs(ours - theirs).max()) / largest
        else:
            elementwise[label] = gradcheck.grad_rel_error(
                ours, theirs, max(ELEMENTWISE_FLOOR * largest, gradcheck.TINY))
            normwise[label] = normwise_rel_error(ours, theirs)
    return elementwise, normwise


def optimizer_pair(name: str, lr: float | None = None, momentum: float = 0.0,
                   nesterov: bool = False):
    """(Keras optimizer, NumPy optimizer) with the same settings and update formulas."""
    return (optimizers.make_optimizer(name, lr, momentum, nesterov),
            optim.make_optimizer(name, lr, momentum, nesterov))


def lockstep(pair: TwinPair, batches, optimizer: str, learning_rate: float | None, steps: int,
             momentum: float = 0.0, nesterov: bool = False) -> tuple[list[float], list[float]]:
    """Train both models `steps` steps on the same batches; the loss of each before every step.

    Training-mode forward passes with dropout off (see `gradient_agreement`), so
    BatchNorm's moving statistics are updated once per step on both sides:
    `weight_differences` compares them afterwards. batches: iterable of numpy (x, y).
    Returns (numpy_losses, keras_losses).
    """
    keras_opt, numpy_opt = optimizer_pair(optimizer, learning_rate, momentum, nesterov)
    variables = pair.keras_model.trainable_variables
    numpy_losses, keras_losses = [], []
    with BlasThreads() as threads:  # NumPy's: one per CPU the machine leaves free
        for step, (x, y) in enumerate(batches):
            if step == steps:
                break
            threads.adjust()
            x = np.asarray(x, dtype=pair.dtype)
            loss_np, _ = pair.numpy_model.loss_and_grads(x, y, training=True, dropout=False)
            pair.numpy_model.apply_gradients(numpy_opt)
            loss_tf, grads = keras_loss_and_grads(pair, x, y)
            keras_opt.apply_gradients(zip(grads, variables))
            numpy_losses.append(float(loss_np))
            keras_losses.append(loss_tf)
    return numpy_losses, keras_losses


def weight_differences(pair: TwinPair) -> dict[str, float]:
    """Norm-wise relative difference of every paired weight, BatchNorm's moving mean and
    variance included: "layer/name" -> max|a - b| / max(max|a|, max|b|)."""
    return {label: normwise_rel_error(variable.numpy(), layer.params[key])
            for label, variable, layer, key in layout.paired_weights(pair.keras_model,
                                                                    pair.numpy_model)}
