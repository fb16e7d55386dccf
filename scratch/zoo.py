"""The model zoo, declared once as data.

Both implementations build their networks from these declarations
(`scratch.model.build_model` and `keras_impl.model.build_sequential` /
`TwinNet`), so a NumPy model and a Keras model of the same name cannot drift
apart. Layout is NHWC for activations and HWIO for convolution kernels on both
sides; inputs are 28x28x1 images (a `flatten` first makes an MLP).

Every entry is a list of `LayerSpec`. `param_rows(name)` walks the list and
gives, per layer, the output shape and the parameter count with its formula;
it is what the lecturer tables print and what tests check both
implementations' real arrays against.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a zoo architecture.

    kind: "conv2d" (filters, kernel_size, padding, activation),
          "maxpool2d" (pool_size; stride = pool_size), "flatten",
          "dense" (units, activation), "dropout" (rate), "batchnorm"
          (per-channel batch normalisation, Keras's defaults), "relu".
    activation: None (linear) or "relu"; the last dense layer is always linear
    (it produces logits; softmax lives in the loss, or in the exported model).
    regularize: whether L2 (when asked for) applies to this layer's kernel. It does for
    hidden conv and dense layers, not for the output layer (as in Hinton's weight-decay
    MLP): `logits()` sets it False.
    """

    kind: str
    filters: int = 0
    units: int = 0
    kernel_size: int = 0
    padding: str = "valid"
    pool_size: int = 2
    rate: float = 0.0
    activation: str | None = None
    regularize: bool = True


def conv(filters, kernel_size=3, padding="valid", activation="relu"):
    return LayerSpec("conv2d", filters=filters, kernel_size=kernel_size,
                     padding=padding, activation=activation)


def pool(size=2):
    return LayerSpec("maxpool2d", pool_size=size)


def dense(units, activation="relu"):
    return LayerSpec("dense", units=units, activation=activation)


def logits():
    return LayerSpec("dense", units=NUM_CLASSES, activation=None, regularize=False)


FLATTEN = LayerSpec("flatten")


def dropout(rate):
    return LayerSpec("dropout", rate=rate)


def batchnorm():
    return LayerSpec("batchnorm")


RELU = LayerSpec("relu")


def conv_bn(filters, kernel_size=3):
    """Conv (linear) -> BatchNorm -> ReLU: normalise before the nonlinearity."""
    return [conv(filters, kernel_size, activation=None), batchnorm(), RELU]


def fc(hidden):
    """One hidden layer of `hidden` ReLU units: 784*n + n + 10*n + 10 = 795n + 10."""
    return [FLATTEN, dense(hidden), logits()]


ARCHITECTURES: dict[str, list[LayerSpec]] = {
    # Flatten -> Dense 128 ReLU -> Dense 10 (the TensorFlow quickstart model).
    "fc128": fc(128),
    # 784-500-300-10: the "3-layer NN, 500+300 HU, softmax, cross entropy, weight decay"
    # of LeCun's MNIST table (Hinton, unpublished, 2005: 1.53% test error).
    "mlp500": [FLATTEN, dense(500), dense(300), logits()],
    # A LeNet-5 in miniature: 5x5 convolutions, two conv/pool stages, two
    # dense layers, 1,765 parameters in all.
    "tiny": [conv(8, 5), pool(2), conv(3, 5), pool(2), FLATTEN, dense(16), logits()],
    # keras-io "Simple MNIST convnet".
    "convnet": [conv(32), pool(2), conv(64), pool(2), FLATTEN, dropout(0.5), logits()],
    "cnn3": [conv(64), pool(2), conv(128), pool(2), conv(256), pool(2),
             FLATTEN, dense(256), logits()],
    # The accuracy model: two VGG-style blocks of two 3x3 conv/BN/ReLU layers, each
    # block ending in max-pooling (28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4), then a
    # 128-unit dense/BN/ReLU layer with dropout. Trained with augmentation, a cosine
    # learning-rate schedule and label smoothing (see README's accuracy table).
    "best": [*conv_bn(32), *conv_bn(32), pool(2), *conv_bn(64), *conv_bn(64), pool(2),
             FLATTEN, dense(128, activation=None), batchnorm(), RELU, dropout(0.4),
             logits()],
}

_FC_NAME = re.compile(r"fc(\d+)$")


def model_names() -> list[str]:
    """The fixed zoo names (`fc<n>` works for any n as well)."""
    return list(ARCHITECTURES)


def architecture(name: str) -> list[LayerSpec]:
    """The layer list of zoo model `name`; `fc<n>` builds a one-hidden-layer MLP."""
    if name in ARCHITECTURES:
        return list(ARCHITECTURES[name])
    match = _FC_NAME.match(name)
    if match and int(match.group(1)) > 0:
        return fc(int(match.group(1)))
    raise KeyError(
        f"unknown model {name!r}: expected one of {', '.join(model_names())} or fc<n> (n >= 1)")


def name_argument(text: str) -> str:
    """argparse `type=` for a model name: the name, or a one-line usage error."""
    try:
        architecture(text)
    except KeyError as err:
        raise argparse.ArgumentTypeError(err.args[0]) from None
    return text


def has_conv(name: str) -> bool:
    """True when the model takes (28, 28, 1) images rather than needing them flat."""
    return any(spec.kind == "conv2d" for spec in architecture(name))


@dataclass
class ParamRow:
    """One line of a parameter table."""

    layer: str
    output_shape: tuple
    formula: str
    count: int
    shapes: dict = field(default_factory=dict)  # parameter name -> array shape


def _conv_out(size, kernel, padding):
    return size if padding == "same" else size - kernel + 1


def param_rows(name_or_specs) -> list[ParamRow]:
    """Per-layer output shapes (batch dim omitted) and parameter counts with formulas."""
    specs = architecture(name_or_specs) if isinstance(name_or_specs, str) else name_or_specs
    shape = INPUT_SHAPE
    rows = []
    for i, spec in enumerate(specs):
        label = f"{spec.kind}_{i}"
        if spec.kind == "conv2d":
            h, w, cin = shape
            k, cout = spec.kernel_size, spec.filters
            shape = (_conv_out(h, k, spec.padding), _conv_out(w, k, spec.padding), cout)
            count = k * k * cin * cout + cout
            rows.append(ParamRow(label, shape, f"{k}*{k}*{cin}*{cout} + {cout} = {count:,}",
                                 count, {"kernel": (k, k, cin, cout), "bias": (cout,)}))
        elif spec.kind == "maxpool2d":
            h, w, c = shape
            shape = (h // spec.pool_size, w // spec.pool_size, c)
            rows.append(ParamRow(label, shape, "0 (no weights)", 0))
        elif spec.kind == "flatten":
            size = 1
            for d in shape:
                size *= d
            formula = "0 (" + "*".join(str(d) for d in shape) + f" = {size:,} values)"
            shape = (size,)
            rows.append(ParamRow(label, shape, formula, 0))
        elif spec.kind == "dense":
            (fan_in,) = shape
            count = fan_in * spec.units + spec.units
            shape = (spec.units,)
            rows.append(ParamRow(label, shape, f"{fan_in}*{spec.units} + {spec.units} = {count:,}",
                                 count, {"kernel": (fan_in, spec.units), "bias": (spec.units,)}))
        elif spec.kind in ("dropout", "relu"):
            rows.append(ParamRow(label, shape, "0 (no weights)", 0))
        elif spec.kind == "batchnorm":
            c = shape[-1]
            rows.append(ParamRow(label, shape, f"2*{c} trainable (+ 2*{c} moving stats)", 2 * c,
                                 {"gamma": (c,), "beta": (c,)}))
        else:
            raise ValueError(f"unknown layer kind {spec.kind!r}")
    return rows


def count_params(name_or_specs) -> int:
    """Total trainable parameters of a zoo model."""
    return sum(row.count for row in param_rows(name_or_specs))
