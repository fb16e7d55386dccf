"""Cross-entropy against integer labels with label smoothing, as a Keras loss.

Keras's SparseCategoricalCrossentropy takes integer labels but has no label
smoothing; its CategoricalCrossentropy smooths but wants one-hot labels. This loss
one-hots the labels and hands them to the latter: the target of an image of class c
becomes (1 - s) * onehot(c) + s / 10.
"""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="twinnet")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy from logits against integer labels smoothed by `label_smoothing`.

    y_true: (B,) integer labels; y_pred: (B, classes) logits. Returns the mean loss.
    Registered so a model compiled with it (the fit() loop) saves and loads.
    """

    def __init__(self, label_smoothing: float, name="sparse_smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        onehot = tf.one_hot(labels, tf.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            onehot, y_pred, from_logits=True, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}
