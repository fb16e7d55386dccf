"""Keras layers of twinnet's own, written from built-in Keras layers: the twins of the
registry kinds that Keras has no single layer for.

`ResidualBlock` is the twin of `scratch.residual.residual_forward`: its sublayers are named
so that their variables' paths, "conv_a/kernel", "bn_a/gamma", ..., are the keys of the
NumPy block's params (`keras_impl.zoo_model.weight_key`). `built_in_graph` writes the
same block out in built-in layers, for the graders' `.h5` (keras_impl/export.py), whose
Keras has no twinnet classes.
"""
from __future__ import annotations

import keras


def built_in_copy(layer, name: str):
    """An unbuilt copy of built-in Keras layer `layer` (its config, a new name); the caller
    copies the weights once it is built."""
    return type(layer).from_config({**layer.get_config(), "name": name})


@keras.saving.register_keras_serializable(package="twinnet")
class ResidualBlock(keras.layers.Layer):
    """A ResNet basic block: relu(bn_b(conv_b(relu(bn_a(conv_a(x))))) + skip(x)).

    conv_a: 3x3, `strides`, 'same'; conv_b: 3x3, 'same'; no biases (each BatchNorm has
    its beta). skip: x itself, or a 1x1 convolution with `strides` and a BatchNorm when
    the block changes the shape (strides other than 1, or `filters` other than the
    input's channels), decided when the block is built.
    """

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = strides
        self.conv_a = keras.layers.Conv2D(filters, 3, strides=strides, padding="same",
                                          use_bias=False, name="conv_a")
        self.bn_a = keras.layers.BatchNormalization(name="bn_a")
        self.conv_b = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                          name="conv_b")
        self.bn_b = keras.layers.BatchNormalization(name="bn_b")
        self.shortcut_conv = self.shortcut_bn = None

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
        if strides != (1, 1) or input_shape[-1] != self.filters:
            self.shortcut_conv = keras.layers.Conv2D(self.filters, 1, strides=self.strides,
                                                     use_bias=False, name="shortcut_conv")
            self.shortcut_bn = keras.layers.BatchNormalization(name="shortcut_bn")
            self.shortcut_conv.build(input_shape)
            self.shortcut_bn.build(self.shortcut_conv.compute_output_shape(input_shape))
        self.conv_a.build(input_shape)
        shape = self.conv_a.compute_output_shape(input_shape)
        self.bn_a.build(shape)
        self.conv_b.build(shape)
        self.bn_b.build(shape)

    def call(self, x, training=False):
        main = keras.ops.relu(self.bn_a(self.conv_a(x), training=training))
        main = self.bn_b(self.conv_b(main), training=training)
        skip = x if self.shortcut_conv is None else self.shortcut_bn(
            self.shortcut_conv(x), training=training)
        return keras.ops.relu(main + skip)

    def compute_output_shape(self, input_shape):
        return self.conv_a.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}

    def built_in_graph(self, x, copies: list, name: str):
        """The block applied to the symbolic tensor x in built-in Keras layers, as the
        graders' Keras can load them: copies of its sublayers named "<name>_conv_a", ...,
        joined by Add and ReLU layers, the same computation as `call`. Appends every
        (copy, sublayer) pair to `copies`, for the caller to copy the weights over once
        the graph is built. Returns the output tensor."""

        def apply(layer, value):
            copy = built_in_copy(layer, f"{name}_{layer.name}")
            copies.append((copy, layer))
            return copy(value)

        main = keras.layers.ReLU(name=f"{name}_relu_a")(
            apply(self.bn_a, apply(self.conv_a, x)))
        main = apply(self.bn_b, apply(self.conv_b, main))
        skip = x if self.shortcut_conv is None else apply(self.shortcut_bn,
                                                          apply(self.shortcut_conv, x))
        total = keras.layers.Add(name=f"{name}_add")([main, skip])
        return keras.layers.ReLU(name=f"{name}_relu")(total)
