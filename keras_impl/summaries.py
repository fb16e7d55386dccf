"""What the custom loop writes for TensorBoard besides the quickstart's scalars.

    write_batch_loss(loss, optimizer.iterations)   # after every train_step: one point per step
    write_graph(model, input_spec, train_writer)   # the forward pass, once per run
    write_epoch(model, optimizer, epoch, train, val, wrong, train_writer, val_writer)

Per epoch: loss, accuracy and learning rate (step = epoch index from 0, as Keras's
TensorBoard callback does, so fit() and custom runs overlay), a histogram of every
weight, and the first MISCLASSIFIED_SHOWN misclassified validation digits captioned
with their true and predicted labels (`label_digits`).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont
from tensorboard.plugins.scalar.metadata import create_summary_metadata

MISCLASSIFIED_SHOWN = 12
BATCH_LOSS = create_summary_metadata(display_name="batch_loss",
                                     description="training loss of each step")


def write_batch_loss(loss, step) -> None:
    """The step's loss as scalar `batch_loss` in the default writer (none: a no-op).

    Called from Python (train.train_epoch) and inside keras_impl.multistep's graph
    loop, where tf.summary.scalar would prefix the tag with the loop's name scope
    (while/cond_1/batch_loss): the scalar is written with tf.summary.write and a fixed tag.
    """
    tf.summary.write("batch_loss", tf.cast(loss, tf.float32),
                     step=tf.cast(step, tf.int64), metadata=BATCH_LOSS)


def write_graph(model, input_spec: tf.TensorSpec, writer) -> None:
    """The forward pass alone, traced for `input_spec` (no optimizer, no iterator).

    Written from the traced function's graph rather than with trace_on/trace_export:
    in TF 2.21 trace_export leaves graph collection on, so the next trace would also
    hold every function run in between (train steps, tf.data, Keras's predict).
    """
    @tf.function(input_signature=[input_spec])
    def forward(images):
        return model(images, training=False)

    with writer.as_default():
        tf.summary.graph(forward.get_concrete_function().graph)
    writer.flush()


class Misclassified:
    """The first MISCLASSIFIED_SHOWN wrong predictions of a pass over the data."""

    def __init__(self):
        self.images, self.labels, self.predictions = [], [], []

    def add(self, x, y, predictions) -> None:
        """Keep the misclassified of one batch, x (B, ...), y and predictions (B,)."""
        room = MISCLASSIFIED_SHOWN - len(self.images)
        if room <= 0:
            return
        y, predictions = np.asarray(y), np.asarray(predictions)
        for i in np.flatnonzero(predictions != y)[:room]:
            self.images.append(np.asarray(x[i]))
            self.labels.append(y[i])
            self.predictions.append(predictions[i])


def label_digits(images: np.ndarray, labels, predictions, scale: int = 4) -> np.ndarray:
    """Digits enlarged `scale` times under a caption "true T  pred P", for image summaries.

    images: (N, 28, 28) or (N, 784) floats in [0, 1]. Returns uint8 (N, H, W, 3),
    H = 28*scale + 14 (the caption band), W = 28*scale.
    """
    font = ImageFont.load_default()
    side = 28 * scale
    out = []
    for image, true, pred in zip(images, labels, predictions):
        digit = Image.fromarray(np.uint8(np.clip(image, 0, 1).reshape(28, 28) * 255))
        canvas = Image.new("RGB", (side, side + 14))
        canvas.paste(digit.resize((side, side), Image.Resampling.NEAREST).convert("RGB"),
                     (0, 14))
        draw = ImageDraw.Draw(canvas)
        draw.text((2, 1), f"true {int(true)}", fill=(255, 255, 255), font=font)
        draw.text((side // 2 + 2, 1), f"pred {int(pred)}", fill=(255, 80, 80), font=font)
        out.append(np.asarray(canvas))
    return np.stack(out)


def write_epoch(model, optimizer, index: int, train: dict, val: dict, wrong: Misclassified,
                train_writer, val_writer) -> None:
    """Epoch `index` (from 0): scalars in both writers, weight histograms and the
    misclassified digits. train, val: {"loss", "accuracy"}."""
    with train_writer.as_default():
        tf.summary.scalar("epoch_loss", train["loss"], step=index)
        tf.summary.scalar("epoch_accuracy", train["accuracy"], step=index)
        tf.summary.scalar("epoch_learning_rate", float(optimizer.learning_rate), step=index)
        for variable in model.weights:
            tf.summary.histogram(variable.path, variable, step=index)
    with val_writer.as_default():
        tf.summary.scalar("epoch_loss", val["loss"], step=index)
        tf.summary.scalar("epoch_accuracy", val["accuracy"], step=index)
        if wrong.images:
            tf.summary.image("misclassified",
                             label_digits(wrong.images, wrong.labels, wrong.predictions),
                             step=index, max_outputs=MISCLASSIFIED_SHOWN,
                             description="the first misclassified validation digits: "
                                         "true label (white), prediction (red)")
    train_writer.flush()
    val_writer.flush()
