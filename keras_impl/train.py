"""Training a Keras model on MNIST: the TensorFlow "advanced quickstart", top to bottom.

    history = fit_custom(build_twinnet("fc128"), make_dataset("train", flat=True),
                         make_dataset("val", flat=True), epochs=5,
                         optimizer=keras.optimizers.Adam(1e-3), logdir="runs/fc128")

The loss and the keras.metrics; `train_step` (one optimizer step, its GradientTape) and
`test_step`, each an @tf.function; the loop: each epoch a train_step per training batch,
a test_step per validation batch, the numbers to two summary writers (train/, validation/).
Beside it: keras_impl.multistep runs the same train_step 20 times per call (faster: the
command line's default); keras_impl.runner wraps fit_custom for a real run (checkpoints,
resume, Ctrl-C, a progress bar) and holds the fit() baseline.
"""
from __future__ import annotations

if __name__ == "__main__":  # `python -m keras_impl.train`, the command line: quiet first
    import plumbing.quiet  # noqa: F401  (a module that imports this one keeps TF's logs)

import runpy
import time
from pathlib import Path

import keras
import tensorflow as tf

from keras_impl.losses import SparseSmoothedCrossentropy
from keras_impl.zoo_model import batch_input_shape
from keras_impl.summaries import Misclassified, write_batch_loss, write_epoch, write_graph

# --- the loss and the metrics ----------------------------------------------------------

def make_loss_fn(label_smoothing: float = 0.0):
    """Cross-entropy from logits against integer labels, smoothed when asked."""
    if label_smoothing:
        return SparseSmoothedCrossentropy(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def loss_with_penalty(model, loss_fn, y, logits):
    """loss_fn(y, logits) plus the L2 penalties of the layers' kernel_regularizers
    (model.losses): what the optimizer minimises and fit() reports."""
    loss = loss_fn(y, logits)
    return loss + tf.add_n(model.losses) if model.losses else loss


class EpochMetrics:
    """keras.metrics accumulators for one pass over the data: mean loss and accuracy."""

    def __init__(self, prefix: str):
        self.loss = keras.metrics.Mean(name=f"{prefix}_loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name=f"{prefix}_accuracy")

    def update(self, loss, y, logits):
        # Weighted by batch size so a short last batch counts as much as it should.
        self.loss.update_state(loss, sample_weight=tf.shape(y)[0])
        self.accuracy.update_state(y, logits)

    def reset(self):
        self.loss.reset_state()
        self.accuracy.reset_state()

    def result(self) -> dict:
        return {"loss": float(self.loss.result()), "accuracy": float(self.accuracy.result())}


# --- the steps -------------------------------------------------------------------------

@tf.function(jit_compile=False)
def train_step(model, optimizer, loss_fn, metrics, x, y):
    """One optimizer step on the batch x (B, 784) or (B, 28, 28, 1), y (B,) int32;
    returns the loss. metrics (EpochMetrics) may be None (the bench times the step)."""
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = loss_with_penalty(model, loss_fn, y, logits)
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    if metrics is not None:
        metrics.update(loss, y, logits)
    return loss


@tf.function(jit_compile=False)
def test_step(model, loss_fn, metrics, x, y):
    """Evaluate one batch in inference mode; returns the predicted labels (B,) int32."""
    logits = model(x, training=False)
    metrics.update(loss_with_penalty(model, loss_fn, y, logits), y, logits)
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


# --- the loop --------------------------------------------------------------------------

def train_epoch(model, optimizer, loss_fn, metrics, train_ds, after_steps=None):
    """A train_step per batch of train_ds, each loss written as `batch_loss` to the
    default summary writer; after_steps(1, loss), when given, after every step."""
    for x, y in train_ds:
        loss = train_step(model, optimizer, loss_fn, metrics, x, y)
        write_batch_loss(loss, optimizer.iterations)
        if after_steps is not None:
            after_steps(1, loss)


def fit_custom(model, train_ds, val_ds, *, epochs: int, optimizer, logdir, loss_fn=None,
               callbacks=None, first_epoch: int = 1, graph: bool = True,
               train_epoch=train_epoch) -> list[dict]:
    """Train epochs first_epoch..epochs on train_ds, validating on val_ds after each
    ((x, y) batches, e.g. `make_dataset(...)`); returns one record per epoch trained.
    graph: write the forward pass to train/ (a resumed run has it already)."""
    loss_fn = loss_fn or make_loss_fn()
    callbacks = callbacks or PrintEpochs(epochs)
    train_metrics, val_metrics = EpochMetrics("train"), EpochMetrics("val")
    trace_steps(model, optimizer, loss_fn, train_metrics, val_metrics)
    train_writer = tf.summary.create_file_writer(str(Path(logdir) / "train"))
    val_writer = tf.summary.create_file_writer(str(Path(logdir) / "validation"))
    if graph:
        write_graph(model, input_signature(model)[0], train_writer)
    history = []
    try:
        for epoch in range(first_epoch, epochs + 1):
            started = time.perf_counter()
            callbacks.on_epoch_begin(epoch)
            train_metrics.reset()
            with train_writer.as_default():
                train_epoch(model, optimizer, loss_fn, train_metrics, train_ds,
                            callbacks.after_steps)
            val_metrics.reset()
            wrong = Misclassified()  # the first wrong predictions, shown in TensorBoard
            for x, y in val_ds:
                wrong.add(x, y, test_step(model, loss_fn, val_metrics, x, y))
            train, val = train_metrics.result(), val_metrics.result()
            write_epoch(model, optimizer, epoch - 1, train, val, wrong, train_writer, val_writer)
            history.append(epoch_record(epoch, int(optimizer.iterations), train, val,
                                        time.perf_counter() - started))
            callbacks.on_epoch_end(history[-1])
    finally:
        train_writer.close()
        val_writer.close()
    return history


# --- what the loop relies on -----------------------------------------------------------

def input_signature(model) -> list:
    """[images, labels] with batch dimension None, in the model's compute dtype (float32,
    or float64 for a model built under keras.config.set_floatx("float64"))."""
    return [tf.TensorSpec(batch_input_shape(model), model.compute_dtype),
            tf.TensorSpec((None,), tf.int32)]


def trace_steps(model, optimizer, loss_fn, train_metrics, val_metrics) -> None:
    """Trace train_step and test_step for this model once, for every batch size.

    A tf.function traces again for each new input shape; traced here with the batch
    dimension None (`input_signature`), each serves every batch, the short last one
    too, and train_step's graph is the one keras_impl.multistep's loop runs. A
    tf.function creates variables only in its first trace: the optimizer makes its
    slots first (no-op when it has them); a subclassed model not yet called makes its
    weights here, at a first call on one blank image."""
    if not model.built:
        model(tf.zeros((1, *batch_input_shape(model)[1:])))
    optimizer.build(model.trainable_variables)
    x, y = input_signature(model)
    train_step.get_concrete_function(model, optimizer, loss_fn, train_metrics, x, y)
    test_step.get_concrete_function(model, loss_fn, val_metrics, x, y)


def epoch_record(epoch: int, step: int, train: dict, val: dict, seconds: float) -> dict:
    """One epoch's line of a run's history (val {}: no validation numbers)."""
    return {"epoch": epoch, "step": step, "loss": train["loss"], "accuracy": train["accuracy"],
            "val_loss": val.get("loss"), "val_accuracy": val.get("accuracy"),
            "seconds": seconds}


def format_epoch(record: dict, epochs: int) -> str:
    val = (f"  val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.2%}"
           if record["val_loss"] is not None else "")
    return (f"epoch {record['epoch']}/{epochs}  loss {record['loss']:.4f}  "
            f"acc {record['accuracy']:.2%}{val}  {record['seconds']:.1f} s  "
            f"step {record['step']}")


class PrintEpochs:
    """fit_custom's callbacks unless given others: print each epoch, as the quickstart.

    The protocol: on_epoch_begin(epoch); after_steps(steps, last loss), after every
    call that trained; on_epoch_end(record). keras_impl.runner's RunCallbacks adds a
    progress bar, Ctrl-C and the NaN check between steps and a checkpoint per epoch.
    """

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_begin(self, epoch: int) -> None:
        pass

    def after_steps(self, steps: int, loss) -> None:
        pass

    def on_epoch_end(self, record: dict) -> None:
        print(format_epoch(record, self.epochs))


# --- the steps bound to one model ------------------------------------------------------

def make_train_step(model, optimizer, loss_fn, metrics: EpochMetrics | None = None):
    """`step(x, y) -> loss`: train_step for this model alone, traced once for any batch
    size, as a tf.function of its own. For code that steps a model by hand in a long
    process (compare.py's side by side, the lab, profile): freed with the model, where
    train_step keeps a trace for every model it has trained."""

    @tf.function(input_signature=input_signature(model), jit_compile=False)
    def step(x, y):
        return train_step.python_function(model, optimizer, loss_fn, metrics, x, y)

    return step


def make_test_step(model, loss_fn, metrics: EpochMetrics):
    """`step(x, y) -> predicted labels`: test_step for this model alone (see make_train_step)."""

    @tf.function(input_signature=input_signature(model), jit_compile=False)
    def step(x, y):
        return test_step.python_function(model, loss_fn, metrics, x, y)

    return step


if __name__ == "__main__":  # `python -m keras_impl.train` is the command line module
    runpy.run_module("keras_impl.train_cli", run_name="__main__", alter_sys=True)
