"""Keras builders for the zoo architectures declared in `scratch.zoo`.

`build_sequential(name)`: the course's Sequential baseline, starting from `keras.Input`.
"""
from __future__ import annotations

import keras

from scratch import zoo


def keras_layer(spec: zoo.LayerSpec, l2: float = 0.0, name: str | None = None):
    """The built-in Keras layer for one zoo `LayerSpec` (L2 on kernels when l2 > 0)."""
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    if spec.kind == "conv2d":
        return keras.layers.Conv2D(spec.filters, spec.kernel_size, padding=spec.padding,
                                   activation=spec.activation, kernel_regularizer=reg, name=name)
    if spec.kind == "maxpool2d":
        return keras.layers.MaxPooling2D(spec.pool_size, name=name)
    if spec.kind == "flatten":
        return keras.layers.Flatten(name=name)
    if spec.kind == "dense":
        return keras.layers.Dense(spec.units, activation=spec.activation,
                                  kernel_regularizer=reg, name=name)
    if spec.kind == "dropout":
        return keras.layers.Dropout(spec.rate, name=name)
    if spec.kind == "batchnorm":
        return keras.layers.BatchNormalization(name=name)
    raise ValueError(f"unknown layer kind {spec.kind!r}")


def input_shape(name: str, flat: bool | None = None) -> tuple:
    """(28, 28, 1) for CNNs, (784,) for MLPs unless `flat` says otherwise."""
    if flat is None:
        flat = not zoo.has_conv(name)
    return (28 * 28,) if flat else zoo.INPUT_SHAPE


def build_sequential(name: str, l2: float = 0.0, softmax: bool = False) -> keras.Sequential:
    """A Sequential model of zoo architecture `name`, returning logits (or probabilities).

    MLPs take flat (None, 784) input, CNNs (None, 28, 28, 1); the zoo's leading
    Flatten is then a no-op for MLPs, kept so layer indices match the NumPy model.
    """
    layers = [keras.Input(shape=input_shape(name), name="image")]
    for i, spec in enumerate(zoo.architecture(name)):
        layers.append(keras_layer(spec, l2, name=f"{spec.kind}_{i}"))
    if softmax:
        layers.append(keras.layers.Softmax(name="probabilities"))
    return keras.Sequential(layers, name=name)
