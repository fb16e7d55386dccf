"""The cross-checks: one computation done by both implementations, results compared.

    pair = twin_pair("convnet", dtype="float64")   # Keras model + NumPy copy of its weights
    report = gradient_agreement(pair, x, y)        # per-variable max relative error
    curves = lockstep(pair, batches, "sgd", 0.05)  # K optimiser steps side by side

Dropout is off in both (inference-mode forward) for these checks: the two
implementations draw different random masks, so only the deterministic part of the
network can agree number for number.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from keras_impl import layout
from keras_impl.model import build_twinnet
from scratch import gradcheck, optim
from scratch.model import build_model

# What "agree" means, per dtype: the largest relative error |a-b|/max(|a|,|b|) between
# NumPy's and TensorFlow's gradient entries.
GRAD_TOLERANCE = {"float64": 1e-7, "float32": 1e-4}


@contextlib.contextmanager
def keras_floatx(dtype: str):
    """Build Keras layers with `dtype` weights (Keras reads floatx at layer creation)."""
    previous = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(previous)


@dataclass
class TwinPair:
    """A Keras model and a NumPy model of one zoo architecture holding the same weights."""

    name: str
    dtype: str
    keras_model: keras.Model
    numpy_model: object
    loss_fn: keras.losses.Loss = field(
        default_factory=lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def twin_pair(name: str, dtype: str = "float32", seed: int = 0, l2: float = 0.0) -> TwinPair:
    """Both models of zoo architecture `name`; the Keras initial weights are copied to NumPy."""
    keras.utils.set_random_seed(seed)
    with keras_floatx(dtype):
        keras_model = build_twinnet(name, l2=l2)
    numpy_model = build_model(name, l2=l2, seed=seed, dtype=np.dtype(dtype))
    layout.to_numpy(keras_model, numpy_model)
    return TwinPair(name, dtype, keras_model, numpy_model)


def keras_loss_and_grads(pair: TwinPair, x, y, training: bool = False):
    """(loss, [gradient per trainable variable]) from TensorFlow's GradientTape."""
    x = tf.convert_to_tensor(x, dtype=pair.dtype)
    with tf.GradientTape() as tape:
        logits = pair.keras_model(x, training=training)
        loss = pair.loss_fn(y, logits)
        if pair.keras_model.losses:
            loss = loss + tf.add_n(pair.keras_model.losses)
    variables = pair.keras_model.trainable_variables
    return float(loss), [g.numpy() for g in tape.gradient(loss, variables)]


@dataclass
class GradientReport:
    """Loss values and per-variable max relative error between the two gradients."""

    dtype: str
    loss_numpy: float
    loss_keras: float
    errors: dict[str, float]  # "layer/param" -> max relative error

    @property
    def max_error(self) -> float:
        return max(self.errors.values())

    @property
    def tolerance(self) -> float:
        return GRAD_TOLERANCE[self.dtype]

    @property
    def passed(self) -> bool:
        return self.max_error <= self.tolerance


def gradient_agreement(pair: TwinPair, x, y) -> GradientReport:
    """Gradients of the same loss on the same batch, NumPy's backward vs GradientTape."""
    x = np.asarray(x, dtype=pair.dtype)
    loss_np, _ = pair.numpy_model.loss_and_grads(x, np.asarray(y), training=False)
    loss_tf, grads_tf = keras_loss_and_grads(pair, x, y)
    trainable = {id(v) for v in pair.keras_model.trainable_variables}
    errors = {}
    grads_by_var = dict(zip((id(v) for v in pair.keras_model.trainable_variables), grads_tf))
    for label, variable, layer, key in layout.paired_weights(pair.keras_model, pair.numpy_model):
        if id(variable) in trainable:
            errors[label] = gradcheck.grad_rel_error(layer.grads[key], grads_by_var[id(variable)])
    return GradientReport(pair.dtype, float(loss_np), loss_tf, errors)


def optimizer_pair(name: str, learning_rate: float, momentum: float = 0.0):
    """(Keras optimizer, NumPy optimizer) with the same settings and update formulas."""
    if name == "sgd":
        return (keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum),
                optim.SGD(learning_rate=learning_rate, momentum=momentum))
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate), optim.Adam(learning_rate)
    raise ValueError(f"optimizer {name!r}: expected sgd or adam")


def lockstep(pair: TwinPair, batches, optimizer: str, learning_rate: float, steps: int,
             momentum: float = 0.0) -> tuple[list[float], list[float]]:
    """Train both models `steps` steps on the same batches; the loss of each before every step.

    batches: iterable of numpy (x, y). Returns (numpy_losses, keras_losses).
    """
    keras_opt, numpy_opt = optimizer_pair(optimizer, learning_rate, momentum)
    variables = pair.keras_model.trainable_variables
    numpy_losses, keras_losses = [], []
    for step, (x, y) in enumerate(batches):
        if step == steps:
            break
        x = np.asarray(x, dtype=pair.dtype)
        loss_np, _ = pair.numpy_model.loss_and_grads(x, y, training=False)
        pair.numpy_model.apply_gradients(numpy_opt)
        loss_tf, grads = keras_loss_and_grads(pair, x, y)
        keras_opt.apply_gradients(zip(grads, variables))
        numpy_losses.append(float(loss_np))
        keras_losses.append(loss_tf)
    return numpy_losses, keras_losses
