"""Keras builders for any zoo architecture declared in `scratch.zoo`: the engine behind
the command lines and cross-checks (keras_impl/model.py writes the course's models out).

`build_sequential(name)`: a Sequential model of architecture `name`, from `keras.Input`.
`TwinNet(arch)` / `build_twinnet(name)`: the subclassed model of the custom training
loop, layer for layer the NumPy model (`arch_layers[i]` is zoo spec i).
`batch_input_shape(model)`: (None, 784) or (None, 28, 28, 1) for any of these models.
"""
from __future__ import annotations

import keras

from keras_impl import blocks
from scratch import zoo
from scratch.registry import LayerSpec, kind_of


def keras_class(name: str):
    """keras.layers.<name>, or the twinnet layer of that name (keras_impl.blocks)."""
    return getattr(keras.layers, name, None) or getattr(blocks, name)


def keras_layer(spec: LayerSpec, l2: float = 0.0, name: str | None = None):
    """The Keras layer of one zoo `LayerSpec`, as its registry entry names it (L2 on the
    kernel when l2 > 0 and the kind's kernel takes it). Explicit padding numbers make it
    a Sequential of a ZeroPadding2D and the layer, the layer named like the whole, so
    that its weights' paths end in "<name>/kernel" as a plain layer's do."""
    kind = kind_of(spec)
    kwargs = kind.keras_kwargs(spec)
    if kind.regularizable and spec.regularize and l2 > 0:
        kwargs["kernel_regularizer"] = keras.regularizers.L2(l2)
    layer = keras_class(kind.keras_class)(**kwargs, name=name)
    padding = kind.keras_padding(spec)
    if padding is None:
        return layer
    return keras.Sequential([keras.layers.ZeroPadding2D(padding), layer], name=layer.name)


def weight_key(layer, variable) -> str:
    """The name of `variable` within `layer`, the key of the NumPy layer's `params`: its
    path after the layer's name, "kernel" for a Conv2D's kernel, "conv_a/kernel" for a
    residual block's first convolution."""
    parts = variable.path.split("/")
    if layer.name not in parts:
        return variable.name
    last = len(parts) - 1 - parts[::-1].index(layer.name)
    return "/".join(parts[last + 1:])


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


@keras.saving.register_keras_serializable(package="twinnet")
class TwinNet(keras.Model):
    """The subclassed Keras model of zoo architecture `arch`, returning logits.

    `arch_layers[i]` is the built-in Keras layer of zoo spec i, named
    f"{spec.kind}_{i}" like row i of `zoo.param_rows` and layer i of the NumPy
    model. `flat` chooses (None, 784) input instead of (None, 28, 28, 1); by
    default MLPs are flat and CNNs take images.

    `get_config` is explicit: Keras 3's automatic config records the `__init__`
    defaults, so an fc37 with l2=1e-4 would come back as something else.
    """

    def __init__(self, arch: str, l2: float = 0.0, flat: bool | None = None, **kwargs):
        kwargs.setdefault("name", arch)
        super().__init__(**kwargs)
        self.arch = arch
        self.l2 = float(l2)
        self.flat = (not zoo.has_conv(arch)) if flat is None else bool(flat)
        self.arch_layers = [keras_layer(spec, self.l2, name=f"{spec.kind}_{i}")
                            for i, spec in enumerate(zoo.architecture(arch))]

    def build(self, input_shape):
        # Explicit, so `.keras` loading (which calls build with the saved input
        # shape) creates every layer's weights before assigning them.
        shape = tuple(input_shape)
        for layer in self.arch_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, x, training=False):
        for layer in self.arch_layers:
            x = layer(x, training=training)
        return x

    def get_config(self):
        return {"arch": self.arch, "l2": self.l2, "flat": self.flat,
                "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_twinnet(name: str, l2: float = 0.0, flat: bool | None = None) -> TwinNet:
    """A TwinNet with its weights created for its input shape (so `count_params` works)."""
    model = TwinNet(name, l2=l2, flat=flat)
    model.build((None, *input_shape(name, model.flat)))
    return model


def batch_input_shape(model: keras.Model) -> tuple:
    """The input shape with batch dimension None, (None, 784) or (None, 28, 28, 1).

    A TwinNet knows it from its architecture; Sequential and Functional models from
    their `keras.Input`. Other subclassed models (the course's `ConvNet` of
    keras_impl/model.py, say) have no `input_shape`: once called, theirs is the shape
    they were built for; before the first call, MNIST images (None, 28, 28, 1), which
    is what they take.
    """
    if isinstance(model, TwinNet):
        return (None, *input_shape(model.arch, model.flat))
    try:
        return tuple(model.input_shape)
    except AttributeError:
        built = (model.get_build_config() or {}).get("input_shape")
        return (None, *(built[1:] if built else zoo.INPUT_SHAPE))


def arch_layers(keras_model) -> list:
    """The Keras layers that correspond to the zoo declaration, in declaration order.

    TwinNet exposes them as `arch_layers`; for a Sequential they are its layers
    minus a trailing Softmax (the exported models' extra output layer).
    """
    if hasattr(keras_model, "arch_layers"):
        return list(keras_model.arch_layers)
    return [layer for layer in keras_model.layers if not isinstance(layer, keras.layers.Softmax)]
