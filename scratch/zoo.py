"""The model zoo, declared once as data.

Both implementations build their networks from these declarations
(`scratch.model.build_model` and `keras_impl.zoo_model.build_sequential` /
`TwinNet`), so a NumPy model and a Keras model of the same name cannot drift
apart. Layout is NHWC for activations and HWIO for convolution kernels on both
sides; inputs are 28x28x1 images (a `flatten` first makes an MLP). The course's
`fc128`, `tiny` and `convnet` are also written out by hand (keras_impl/model.py,
scratch/course_models.py); tests/test_course_models.py holds them to these declarations.

Every entry is a list of `LayerSpec`, each of a kind declared in
`scratch.registry`. `param_rows(name)` walks the list and gives, per layer, the
output shape and the parameter count with its formula, as the registry declares
them; it is what the lecturer tables print and what tests check both
implementations' real arrays against.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

from scratch.layer_shapes import param_count
from scratch.registry import LayerSpec, kind_of

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def conv(filters, kernel_size=3, padding="valid", activation="relu"):
    return LayerSpec("conv2d", filters=filters, kernel_size=kernel_size,
                     padding=padding, activation=activation)


def pool(size=2):
    return LayerSpec("maxpool2d", pool_size=size)


def avgpool(size=2):
    return LayerSpec("avgpool2d", pool_size=size)


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
GLOBAL_AVERAGE = LayerSpec("globalavgpool2d")
LAYER_NORM = LayerSpec("layernorm")


def group_norm(groups):
    return LayerSpec("groupnorm", groups=groups)


def residual(filters, strides=1):
    """A ResNet basic block (scratch.residual.residual_forward); strides 2 halves the image."""
    return LayerSpec("residual", filters=filters, strides=strides)


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
    # learning-rate schedule and label smoothing (see docs/accuracy.md).
    "best": [*conv_bn(32), *conv_bn(32), pool(2), *conv_bn(64), *conv_bn(64), pool(2),
             FLATTEN, dense(128, activation=None), batchnorm(), RELU, dropout(0.4),
             logits()],
    # LeNet-5's layout (LeCun et al. 1998) as Keras tutorials build it: 'same' padding on
    # 28x28 in place of the paper's 32x32, ReLU, plain average pooling, every C3 map reading
    # all six S2 maps, C5 as the dense 400 -> 120 it amounts to, dense logits instead of RBF
    # units: 61,706 parameters. (The paper's own net is scratch.famous's "lenet5", 60,840.)
    "lenet": [conv(6, 5, padding="same"), avgpool(2), conv(16, 5), avgpool(2), FLATTEN,
              dense(120), dense(84), logits()],
    # A small ResNet (He et al. 2016's CIFAR layout, shrunk): a 3x3 'same' conv/BN/ReLU stem, one
    # basic block at 28x28x16, a strided block down to 14x14x32 (its skip a 1x1 strided
    # conv), one more at 14x14x32, global average pooling, the logits.
    "resnet": [conv(16, padding="same", activation=None), batchnorm(), RELU, residual(16),
               residual(32, strides=2), residual(32), GLOBAL_AVERAGE, logits()],
    # Normalised without batch statistics (each image on its own, the same in training and
    # at inference): a stride-2 'same' convolution (28 -> 14), LayerNorm over its 8
    # channels, overlapping 3x3 max pooling at stride 2 (14 -> 7), a 3x3 convolution,
    # GroupNorm in 4 groups of 6 channels, global average pooling, the logits: 2,146
    # parameters.
    "normnet": [LayerSpec("conv2d", filters=8, kernel_size=3, strides=2, padding="same"),
                LAYER_NORM, RELU, LayerSpec("maxpool2d", pool_size=3, strides=2, padding="same"),
                conv(24, padding="same", activation=None), group_norm(4), RELU,
                GLOBAL_AVERAGE, logits()],
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


def param_rows(name_or_specs) -> list[ParamRow]:
    """Per-layer output shapes (batch dim omitted) and parameter counts with formulas,
    as `scratch.registry` declares them for each layer kind."""
    specs = architecture(name_or_specs) if isinstance(name_or_specs, str) else name_or_specs
    shape = INPUT_SHAPE
    rows = []
    for i, spec in enumerate(specs):
        label = f"{spec.kind}_{i}"
        try:
            shape, shapes, formula = kind_of(spec).describe(spec, shape)
        except ValueError as err:
            raise ValueError(f"{label}: {err}") from None
        rows.append(ParamRow(label, shape, formula, param_count(shapes), shapes))
    return rows


def count_params(name_or_specs) -> int:
    """Total trainable parameters of a zoo model."""
    return sum(row.count for row in param_rows(name_or_specs))
