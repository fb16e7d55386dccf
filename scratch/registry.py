"""The layer registry: every layer kind declared once, for both implementations.

A zoo architecture is a list of `LayerSpec`s; `KINDS[spec.kind]` is everything the
project knows about that kind of layer:

    output_shape(spec, shape)     its output shape for an input of `shape` (batch axis omitted)
    param_shapes(spec, shape)     its trainable arrays, {"kernel": (3, 3, 1, 32), "bias": (32,)}
    formula(spec, shape, params)  what the parameter tables print, "3*3*1*32 + 32 = 320"
    flops(spec, shape)            forward FLOPs per example (2 per multiply-add) and their
                                  formula, ("2*26*26*9*32", 389376); 0 without a matmul
    make_numpy(spec, params, ctx) the NumPy layer object (scratch/layer_classes.py)
    keras_class, keras_kwargs     the built-in Keras layer, keras.layers.<keras_class>(**kwargs)
    regularizable                 its kernel takes the L2 penalty (unless spec.regularize is off)
    piecewise_linear              has kinks where central differences are unreliable
    curved                        smooth but not linear in its input and weights between the
                                  kinks (normalisations): central differences there need
                                  Richardson extrapolation and the fourth-difference kink rule
    keras_3_5_config_keys         the config keys Keras 3.5 writes for keras_class (the .h5 export)
    flat_input                    needs (N, features) input, as dense does
    example                       a small instance: the export's probe model has one of each

`scratch.zoo` (parameter tables), `scratch.famous`, `scratch.model.build_model`,
`keras_impl.zoo_model` and `keras_impl.export` all read this table, so a new kind is
one entry here (its shape functions in scratch/layer_shapes.py when the defaults do not
fit) plus its forward/backward pair in scratch/layers.py (and in
scratch/fast_layers.py only if it needs a faster one). Its entry's `make_numpy` builds
the generic `PairLayer(kind, params, name=..., **options)` around that pair; the kinds
with classes of their own need more than a pair (see CONTRIBUTING.md). NumPy only: the
Keras side is named by strings and built in keras_impl/zoo_model.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from scratch.layer_classes import (BatchNorm, Conv2D, Dense, Dropout, MaxPool2D, PairLayer,
                                   ReLU, ResidualBlock)
from scratch.layer_shapes import (batchnorm_formula, conv2d_flops, conv2d_output, conv2d_params,
                                  dense_flops, dense_params, flatten_formula, groupnorm_params,
                                  image, no_flops, no_params, norm_params, pool_output,
                                  residual_flops, residual_formula, residual_output,
                                  residual_params, same_shape, weights_formula)
from scratch.windows import conv_pads


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a zoo architecture.

    kind: a key of KINDS: "conv2d" (filters, kernel_size, strides, padding, activation),
          "maxpool2d" and "avgpool2d" (pool_size, strides (default pool_size), padding),
          "globalavgpool2d", "flatten",
          "dense" (units, activation), "dropout" (rate), "batchnorm"
          (per-channel batch normalisation, Keras's defaults), "relu", "layernorm"
          (over the channels), "groupnorm" (groups), "residual" (a ResNet basic block:
          filters, strides).
    activation: None (linear) or "relu"; the last dense layer is always linear
    (it produces logits; softmax lives in the loss, or in the exported model).
    regularize: whether L2 (when asked for) applies to this layer's kernel. It does for
    hidden conv and dense layers, not for the output layer (as in Hinton's weight-decay
    MLP): `zoo.logits()` sets it False.
    """

    kind: str
    filters: int = 0
    units: int = 0
    kernel_size: int = 0
    padding: str | int | tuple = "valid"  # 'valid', 'same' or numbers (conv2d only)
    strides: int | tuple | None = None  # None: 1 for conv2d, pool_size for pooling
    pool_size: int = 2
    rate: float = 0.0
    groups: int = 0  # groupnorm
    activation: str | None = None
    regularize: bool = True


@dataclass(frozen=True)
class BuildContext:
    """What a NumPy layer needs besides its spec and parameter shapes."""

    name: str  # "<kind>_<i>", the Keras layer's name too
    dtype: type
    initializer: Callable  # initializer(init_rng, shape) -> kernel, e.g. glorot_uniform
    init_rng: np.random.Generator  # the kernels' stream, drawn in layer order
    rng: np.random.Generator  # dropout masks

    def kernel(self, shape):
        """A fresh kernel of `shape` in the model's dtype."""
        return self.initializer(self.init_rng, shape).astype(self.dtype)

    def zeros(self, shape):
        """A zero bias of `shape` in the model's dtype."""
        return np.zeros(shape, dtype=self.dtype)


# --- the Keras twin's arguments ------------------------------------------------------------


def explicit_padding(spec):
    """conv2d's explicit padding numbers, for the Keras twin's ZeroPadding2D (None for
    'valid' and 'same', which Keras's Conv2D does itself)."""
    return None if isinstance(spec.padding, str) else conv_pads(None, 0, 0, 1, spec.padding)


def conv2d_keras_kwargs(spec):
    return {"filters": spec.filters, "kernel_size": spec.kernel_size,
            "strides": spec.strides or 1,
            "padding": spec.padding if isinstance(spec.padding, str) else "valid",
            "activation": spec.activation}


def pool_keras_kwargs(spec):
    return {"pool_size": spec.pool_size, "strides": spec.strides, "padding": spec.padding}


def make_residual(spec, shapes, ctx):
    """The NumPy residual block: Glorot kernels in the order conv_a, conv_b, shortcut,
    BatchNorms as Keras starts them (gamma 1, beta 0, moving mean 0, variance 1)."""
    params = {}
    for key, shape in shapes.items():
        if key.endswith("/kernel"):
            params[key] = ctx.kernel(shape)
        elif key.endswith("/gamma"):
            name = key.split("/")[0]
            params[key] = np.ones(shape, ctx.dtype)
            params[f"{name}/beta"] = ctx.zeros(shape)
            params[f"{name}/moving_mean"] = ctx.zeros(shape)
            params[f"{name}/moving_variance"] = np.ones(shape, ctx.dtype)
    return ResidualBlock(params, spec.strides or 1, name=ctx.name)


@dataclass(frozen=True)
class LayerKind:
    """Everything about one kind of layer (see the module docstring)."""

    name: str
    example: LayerSpec
    make_numpy: Callable
    keras_class: str
    keras_3_5_config_keys: tuple[str, ...]
    keras_kwargs: Callable[[LayerSpec], dict] = lambda spec: {}
    output_shape: Callable = same_shape
    param_shapes: Callable = no_params
    formula: Callable = weights_formula
    flops: Callable = no_flops
    regularizable: bool = False
    piecewise_linear: bool = False
    curved: bool = False  # normalisations: see scratch.gradcheck.model_gradient_errors
    flat_input: bool = False  # needs (N, features) input, as dense does
    # explicit zero padding the Keras twin puts in front of its layer (a ZeroPadding2D)
    keras_padding: Callable[[LayerSpec], tuple | None] = lambda spec: None

    def describe(self, spec: LayerSpec, shape: tuple) -> tuple[tuple, dict, str]:
        """(output shape, trainable parameter shapes, formula) of `spec` on input `shape`."""
        params = self.param_shapes(spec, shape)
        return self.output_shape(spec, shape), params, self.formula(spec, shape, params)


# --- the kinds, in the order of scratch/layers.py ---------------------------------------------
# keras_3_5_config_keys: what Keras 3.5.0 writes for keras_class, printed by
# `python -m keras_impl.export --print-config-keys` under it (CI checks them; see
# CONTRIBUTING.md).
NORM_KEYS = ("axis", "beta_constraint", "beta_initializer", "beta_regularizer", "center",
             "dtype", "epsilon", "gamma_constraint", "gamma_initializer", "gamma_regularizer",
             "name", "scale", "trainable")
POOLING_KEYS = ("data_format", "dtype", "name", "padding", "pool_size", "strides", "trainable")

KINDS: dict[str, LayerKind] = {kind.name: kind for kind in [
    LayerKind(
        "dense", example=LayerSpec("dense", units=8, activation="relu"),
        output_shape=lambda spec, shape: (spec.units,), param_shapes=dense_params,
        flops=dense_flops,
        make_numpy=lambda spec, p, ctx: Dense(ctx.kernel(p["kernel"]), ctx.zeros(p["bias"]),
                                              spec.activation, name=ctx.name),
        keras_class="Dense",
        keras_kwargs=lambda spec: {"units": spec.units, "activation": spec.activation},
        regularizable=True, flat_input=True,
        keras_3_5_config_keys=(
            "activation", "bias_constraint", "bias_initializer", "bias_regularizer", "dtype",
            "kernel_constraint", "kernel_initializer", "kernel_regularizer", "name",
            "trainable", "units", "use_bias")),
    LayerKind(
        "relu", example=LayerSpec("relu"),
        make_numpy=lambda spec, p, ctx: ReLU(name=ctx.name),
        keras_class="ReLU",
        piecewise_linear=True,
        keras_3_5_config_keys=("dtype", "max_value", "name", "negative_slope", "threshold",
                               "trainable")),
    LayerKind(
        "flatten", example=LayerSpec("flatten"),
        output_shape=lambda spec, shape: (math.prod(shape),), formula=flatten_formula,
        make_numpy=lambda spec, p, ctx: PairLayer("flatten", name=ctx.name),
        keras_class="Flatten",
        keras_3_5_config_keys=("data_format", "dtype", "name", "trainable")),
    LayerKind(
        "dropout", example=LayerSpec("dropout", rate=0.5),
        make_numpy=lambda spec, p, ctx: Dropout(spec.rate, ctx.rng, name=ctx.name),
        keras_class="Dropout", keras_kwargs=lambda spec: {"rate": spec.rate},
        keras_3_5_config_keys=("dtype", "name", "noise_shape", "rate", "seed", "trainable")),
    LayerKind(
        "conv2d", example=LayerSpec("conv2d", filters=4, kernel_size=3, activation="relu"),
        output_shape=conv2d_output, param_shapes=conv2d_params, flops=conv2d_flops,
        make_numpy=lambda spec, p, ctx: Conv2D(ctx.kernel(p["kernel"]), ctx.zeros(p["bias"]),
                                               spec.padding, spec.activation, name=ctx.name,
                                               strides=spec.strides or 1),
        keras_class="Conv2D", keras_kwargs=conv2d_keras_kwargs, keras_padding=explicit_padding,
        regularizable=True,
        keras_3_5_config_keys=(
            "activation", "activity_regularizer", "bias_constraint", "bias_initializer",
            "bias_regularizer", "data_format", "dilation_rate", "dtype", "filters", "groups",
            "kernel_constraint", "kernel_initializer", "kernel_regularizer", "kernel_size",
            "name", "padding", "strides", "trainable", "use_bias")),
    LayerKind(
        "maxpool2d", example=LayerSpec("maxpool2d", pool_size=2),
        output_shape=pool_output,
        make_numpy=lambda spec, p, ctx: MaxPool2D(spec.pool_size, name=ctx.name,
                                                  strides=spec.strides, padding=spec.padding),
        keras_class="MaxPooling2D", keras_kwargs=pool_keras_kwargs,
        piecewise_linear=True,
        keras_3_5_config_keys=POOLING_KEYS),
    LayerKind(
        "avgpool2d", example=LayerSpec("avgpool2d", pool_size=2),
        output_shape=pool_output,
        make_numpy=lambda spec, p, ctx: PairLayer("avgpool2d", name=ctx.name,
                                                  pool_size=spec.pool_size,
                                                  strides=spec.strides, padding=spec.padding),
        keras_class="AveragePooling2D", keras_kwargs=pool_keras_kwargs,
        keras_3_5_config_keys=POOLING_KEYS),
    LayerKind(
        "globalavgpool2d", example=LayerSpec("globalavgpool2d"),
        output_shape=lambda spec, shape: image(shape, "globalavgpool2d")[2:],
        make_numpy=lambda spec, p, ctx: PairLayer("globalavgpool2d", name=ctx.name),
        keras_class="GlobalAveragePooling2D",
        keras_3_5_config_keys=("data_format", "dtype", "keepdims", "name", "trainable")),
    LayerKind(
        "batchnorm", example=LayerSpec("batchnorm"),
        param_shapes=lambda spec, shape: {"gamma": shape[-1:], "beta": shape[-1:]},
        formula=batchnorm_formula,
        make_numpy=lambda spec, p, ctx: BatchNorm(p["gamma"][0], ctx.dtype, name=ctx.name),
        keras_class="BatchNormalization", curved=True,
        keras_3_5_config_keys=(
            "axis", "beta_constraint", "beta_initializer", "beta_regularizer", "center",
            "dtype", "epsilon", "gamma_constraint", "gamma_initializer", "gamma_regularizer",
            "momentum", "moving_mean_initializer", "moving_variance_initializer", "name",
            "scale", "synchronized", "trainable")),
    LayerKind(
        "layernorm", example=LayerSpec("layernorm"),
        param_shapes=norm_params,
        make_numpy=lambda spec, p, ctx: PairLayer(
            "layernorm", {"gamma": np.ones(p["gamma"], ctx.dtype), "beta": ctx.zeros(p["beta"])},
            name=ctx.name),
        keras_class="LayerNormalization", curved=True,
        keras_3_5_config_keys=(*NORM_KEYS, "rms_scaling")),
    LayerKind(
        "groupnorm", example=LayerSpec("groupnorm", groups=1),
        param_shapes=groupnorm_params,
        make_numpy=lambda spec, p, ctx: PairLayer(
            "groupnorm", {"gamma": np.ones(p["gamma"], ctx.dtype), "beta": ctx.zeros(p["beta"])},
            name=ctx.name, groups=spec.groups),
        keras_class="GroupNormalization", keras_kwargs=lambda spec: {"groups": spec.groups},
        curved=True,
        keras_3_5_config_keys=(*NORM_KEYS, "groups")),
    LayerKind(
        "residual", example=LayerSpec("residual", filters=4),
        output_shape=residual_output, param_shapes=residual_params, formula=residual_formula,
        flops=residual_flops, make_numpy=make_residual,
        keras_class="ResidualBlock",
        keras_kwargs=lambda spec: {"filters": spec.filters, "strides": spec.strides or 1},
        piecewise_linear=True, curved=True,
        keras_3_5_config_keys=("dtype", "filters", "name", "strides", "trainable")),
]}


def kind_of(spec: LayerSpec) -> LayerKind:
    """The registry entry of `spec`, or a one-line ValueError naming the known kinds."""
    try:
        return KINDS[spec.kind]
    except KeyError:
        raise ValueError(f"unknown layer kind {spec.kind!r}: expected one of "
                         f"{', '.join(KINDS)}") from None
