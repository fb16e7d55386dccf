"""The one place where Keras variables and NumPy parameters are matched up.

Both implementations use the same memory layouts, chosen so that no array is ever
transposed on the way between them:

    activations    NHWC  (batch, height, width, channels)  TensorFlow's CPU default
    conv kernels   HWIO  (kernel_h, kernel_w, in_channels, out_channels)  keras Conv2D
    dense kernels  (fan_in, units)                         keras Dense
    Flatten        C order over (H, W, C) on both sides, so the first Dense after a
                   conv stack sees its inputs in the same order

So the whole conversion is bookkeeping: zoo layer i <-> Keras layer i <-> NumPy layer i,
and within a layer the Keras variable's name (`kernel`, `bias`, `gamma`, `beta`,
`moving_mean`, `moving_variance`; within a residual block its path, `conv_a/kernel`) <->
the NumPy layer's `params` key. `to_numpy` and
`to_keras` check every shape, so a layout mistake fails loudly instead of training on
scrambled weights. (A framework with NCHW/OIHW layouts, PyTorch for instance, would need
its transposes here and nowhere else.)

The course's written-out twins (keras_impl/model.py and scratch/course_models.py) pair by
name instead: Keras layer `conv1` <-> `params["conv1"]` (`paired_course_weights`,
`course_to_numpy`).
"""
from __future__ import annotations

import numpy as np

from keras_impl.zoo_model import arch_layers, weight_key


def paired_weights(keras_model, numpy_model):
    """[(label, keras_variable, numpy_layer, key)] for every weight, trainable or not.

    label is "<layer index>/<name>", e.g. "2/kernel". Raises ValueError when the two
    models do not have the same layers, names and shapes.
    """
    k_layers = arch_layers(keras_model)
    if len(k_layers) != len(numpy_model.layers):
        raise ValueError(f"Keras model has {len(k_layers)} layers, NumPy model "
                         f"{len(numpy_model.layers)}: not the same architecture")
    pairs = []
    for i, (k_layer, n_layer) in enumerate(zip(k_layers, numpy_model.layers)):
        k_names = [weight_key(k_layer, v) for v in k_layer.weights]
        if sorted(k_names) != sorted(n_layer.params):
            raise ValueError(f"layer {i}: Keras weights {k_names}, NumPy params "
                             f"{sorted(n_layer.params)}")
        for variable in k_layer.weights:
            key = weight_key(k_layer, variable)
            if tuple(variable.shape) != n_layer.params[key].shape:
                raise ValueError(f"layer {i} {key}: Keras shape {tuple(variable.shape)}, "
                                 f"NumPy shape {n_layer.params[key].shape}")
            pairs.append((f"{i}/{key}", variable, n_layer, key))
    return pairs


def to_numpy(keras_model, numpy_model) -> None:
    """Copy every Keras weight into the NumPy model (cast to the NumPy model's dtype),
    BatchNorm's moving mean and variance included."""
    for _, variable, layer, key in paired_weights(keras_model, numpy_model):
        target = layer.params[key]
        target[...] = np.asarray(variable.numpy(), dtype=target.dtype)


def to_keras(numpy_model, keras_model) -> None:
    """Copy every NumPy parameter into the Keras model (cast to the variable's dtype),
    BatchNorm's moving mean and variance included."""
    for _, variable, layer, key in paired_weights(keras_model, numpy_model):
        variable.assign(np.asarray(layer.params[key], dtype=variable.dtype))


def paired_course_weights(keras_model, numpy_model):
    """[(label, keras_variable, params, key)] for a course model of keras_impl/model.py and
    its NumPy twin of scratch/course_models.py, paired by name: the Keras layer named
    `name` holds the arrays of `numpy_model.params[name]`. label is "<name>/<key>", e.g.
    "conv1/kernel". Raises ValueError when a layer, a weight or a shape does not match."""
    pairs = []
    for name, params in numpy_model.params.items():
        try:
            layer = keras_model.get_layer(name)
        except ValueError:
            raise ValueError(f"NumPy layer {name!r}: the Keras model {keras_model.name!r} has "
                             "no layer of that name") from None
        k_names = sorted(v.name for v in layer.weights)
        if k_names != sorted(params):
            raise ValueError(f"{name}: Keras weights {k_names}, NumPy params {sorted(params)}")
        for variable in layer.weights:
            key = variable.name
            if tuple(variable.shape) != params[key].shape:
                raise ValueError(f"{name}/{key}: Keras shape {tuple(variable.shape)}, NumPy "
                                 f"shape {params[key].shape}")
            pairs.append((f"{name}/{key}", variable, params, key))
    return pairs


def course_to_numpy(keras_model, numpy_model) -> None:
    """Copy a course model's Keras weights into its NumPy twin, by name (cast to the NumPy
    model's dtype)."""
    for _, variable, params, key in paired_course_weights(keras_model, numpy_model):
        params[key][...] = np.asarray(variable.numpy(), dtype=params[key].dtype)
