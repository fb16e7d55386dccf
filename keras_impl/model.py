"""The course's three models in Keras, written out the way a student writes them.

For each of `fc128`, `tiny` and `convnet`: first the `keras.Sequential` version, then the
same network as a `keras.Model` subclass, as in TensorFlow's "advanced quickstart":
`__init__` makes the layers and names them, `call` applies them in order. All six take
MNIST images (N, 28, 28, 1) and return logits (N, 10); the softmax lives in the loss.

Every layer keeps Keras's defaults: Glorot-uniform kernels, zero biases, 'valid'
padding, pooling strides equal to the pool size. `l2` > 0 adds keras.regularizers.L2(l2)
to the hidden layers' kernels, never to the output layer's. Each layer is named after
its attribute, and scratch/course_models.py, the NumPy twins, keys its `params` by the
same names.

These are the zoo's `fc128`, `tiny` and `convnet` (scratch/zoo.py), which
keras_impl/zoo_model.py builds from their declarations for the command lines;
tests/test_course_models.py proves each model here identical to its zoo build.
"""
from __future__ import annotations

import keras


def weight_decay(l2: float):
    """The kernel regularizer of the hidden layers: L2 with factor l2, or none for 0."""
    return keras.regularizers.L2(l2) if l2 else None


# --- fc128: the TensorFlow quickstart's model, 101,770 parameters -----------------------


def fc128_sequential(l2: float = 0.0) -> keras.Sequential:
    """Flatten -> Dense 128 ReLU -> Dense 10."""
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(128, activation="relu", kernel_regularizer=weight_decay(l2),
                           name="dense1"),
        keras.layers.Dense(10, name="dense2"),
    ], name="fc128")


class FC128(keras.Model):
    """Flatten -> Dense 128 ReLU -> Dense 10, as a class."""

    def __init__(self, l2: float = 0.0, name: str = "fc128"):
        super().__init__(name=name)
        self.flatten = keras.layers.Flatten(name="flatten")
        self.dense1 = keras.layers.Dense(128, activation="relu",
                                         kernel_regularizer=weight_decay(l2), name="dense1")
        self.dense2 = keras.layers.Dense(10, name="dense2")

    def call(self, x, training=False):
        x = self.flatten(x)    # (N, 784)
        x = self.dense1(x)     # (N, 128)
        return self.dense2(x)  # (N, 10)


# --- tiny: a LeNet-5 in miniature, 1,765 parameters --------------------------------------


def tiny_sequential(l2: float = 0.0) -> keras.Sequential:
    """Conv 8 5x5 -> pool -> conv 3 5x5 -> pool -> Dense 16 ReLU -> Dense 10."""
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(8, 5, activation="relu", kernel_regularizer=weight_decay(l2),
                            name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(3, 5, activation="relu", kernel_regularizer=weight_decay(l2),
                            name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=weight_decay(l2),
                           name="dense1"),
        keras.layers.Dense(10, name="dense2"),
    ], name="tiny")


class Tiny(keras.Model):
    """Conv 8 5x5 -> pool -> conv 3 5x5 -> pool -> Dense 16 ReLU -> Dense 10, as a class."""

    def __init__(self, l2: float = 0.0, name: str = "tiny"):
        super().__init__(name=name)
        self.conv1 = keras.layers.Conv2D(8, 5, activation="relu",
                                         kernel_regularizer=weight_decay(l2), name="conv1")
        self.pool1 = keras.layers.MaxPooling2D(2, name="pool1")
        self.conv2 = keras.layers.Conv2D(3, 5, activation="relu",
                                         kernel_regularizer=weight_decay(l2), name="conv2")
        self.pool2 = keras.layers.MaxPooling2D(2, name="pool2")
        self.flatten = keras.layers.Flatten(name="flatten")
        self.dense1 = keras.layers.Dense(16, activation="relu",
                                         kernel_regularizer=weight_decay(l2), name="dense1")
        self.dense2 = keras.layers.Dense(10, name="dense2")

    def call(self, x, training=False):
        x = self.conv1(x)      # (N, 24, 24, 8)
        x = self.pool1(x)      # (N, 12, 12, 8)
        x = self.conv2(x)      # (N, 8, 8, 3)
        x = self.pool2(x)      # (N, 4, 4, 3)
        x = self.flatten(x)    # (N, 48)
        x = self.dense1(x)     # (N, 16)
        return self.dense2(x)  # (N, 10)


# --- convnet: keras-io's "Simple MNIST convnet", 34,826 parameters -----------------------


def convnet_sequential(l2: float = 0.0) -> keras.Sequential:
    """Conv 32 3x3 -> pool -> conv 64 3x3 -> pool -> dropout 0.5 -> Dense 10."""
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu", kernel_regularizer=weight_decay(l2),
                            name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(64, 3, activation="relu", kernel_regularizer=weight_decay(l2),
                            name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dropout(0.5, name="dropout"),
        keras.layers.Dense(10, name="dense"),
    ], name="convnet")


class ConvNet(keras.Model):
    """Conv 32 3x3 -> pool -> conv 64 3x3 -> pool -> dropout 0.5 -> Dense 10, as a class.

    `training` reaches the dropout layer: it drops half of the 1,600 features while
    training and passes them all at inference.
    """

    def __init__(self, l2: float = 0.0, name: str = "convnet"):
        super().__init__(name=name)
        self.conv1 = keras.layers.Conv2D(32, 3, activation="relu",
                                         kernel_regularizer=weight_decay(l2), name="conv1")
        self.pool1 = keras.layers.MaxPooling2D(2, name="pool1")
        self.conv2 = keras.layers.Conv2D(64, 3, activation="relu",
                                         kernel_regularizer=weight_decay(l2), name="conv2")
        self.pool2 = keras.layers.MaxPooling2D(2, name="pool2")
        self.flatten = keras.layers.Flatten(name="flatten")
        self.dropout = keras.layers.Dropout(0.5, name="dropout")
        self.dense = keras.layers.Dense(10, name="dense")

    def call(self, x, training=False):
        x = self.conv1(x)                      # (N, 26, 26, 32)
        x = self.pool1(x)                      # (N, 13, 13, 32)
        x = self.conv2(x)                      # (N, 11, 11, 64)
        x = self.pool2(x)                      # (N, 5, 5, 64)
        x = self.flatten(x)                    # (N, 1600)
        x = self.dropout(x, training=training)
        return self.dense(x)                   # (N, 10)

