"""Training a Keras model on MNIST, in the form of the TensorFlow "advanced quickstart".

    model = build_twinnet("fc128")
    result = fit_custom(model, make_dataset("train", flat=True), make_dataset("val", flat=True),
                        epochs=5, optimizer=keras.optimizers.Adam(1e-3), logdir="runs/fc128")

Read it from the top, as the quickstart goes:
  loss and metrics       make_loss_fn: cross-entropy from logits (labels smoothed when
                         asked), plus the L2 penalties the layers collected; EpochMetrics:
                         keras.metrics.Mean of the loss and SparseCategoricalAccuracy,
                         accumulated over an epoch.
  train_step, test_step  make_train_step: one optimizer step with its GradientTape;
                         make_test_step: one evaluation. Each is an @tf.function traced
                         once for any batch size.
  fit_custom             the epoch loop: train, validate, log to separate train/ and
                         validation/ summary writers, checkpoint, print.
  fit_baseline           the same run with compile()/fit() and Keras's TensorBoard callback.

What is not the idea but makes a real run lives in small modules beside this one:
keras_impl.multistep (fit_custom runs train_step STEPS_PER_CALL times per call, its
batches drawn in the graph), keras_impl.summaries (per-step loss, the graph, weight
histograms, misclassified digits), keras_impl.checkpoints and plumbing.interrupts.
The command line, `python -m keras_impl.train`, is keras_impl.train_cli.

Both loops checkpoint the start of a run and the end of every epoch (keras_impl.checkpoints).
Ctrl-C or SIGTERM returns "interrupted" with the model back at its last checkpoint: the
epoch under way is dropped. resume=True continues from the latest checkpoint and ends
bit for bit where an uninterrupted run ends: same weights, optimizer state and step,
and the same batches in the same order (`skip_shuffles`). A NaN/Inf loss stops
training ("diverged") and the last good checkpoint stays. The reported loss includes
the L2 penalty, as fit() reports it.
"""
from __future__ import annotations

import plumbing.quiet  # noqa: F401  first: quiets TensorFlow's start-up (see there)
import math
import runpy
import time
from pathlib import Path

import keras
import tensorflow as tf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from keras_impl.checkpoints import Checkpoints, TrainError
from plumbing.interrupts import stop_signal_name, stops_between_steps
from keras_impl.losses import SparseSmoothedCrossentropy
from keras_impl.zoo_model import batch_input_shape
from keras_impl.multistep import STEPS_PER_CALL, make_train_steps, train_epoch
from keras_impl.summaries import Misclassified, write_batch_loss, write_epoch, write_graph


# --- the loss and the metrics ----------------------------------------------------------

def make_loss_fn(label_smoothing: float = 0.0):
    """The training loss: cross-entropy from logits, labels smoothed when asked."""
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

def input_signature(model) -> list:
    """[images, labels] with batch dimension None: each step function is traced once.

    Images come in the model's compute dtype (float32, or float64 for a model built
    under keras.config.set_floatx("float64"), as the cross-checks do).
    """
    return [tf.TensorSpec(batch_input_shape(model), model.compute_dtype),
            tf.TensorSpec((None,), tf.int32)]


def make_train_step(model, optimizer, loss_fn, metrics: EpochMetrics | None = None):
    """`train_step(x, y) -> loss`: one optimizer step as a tf.function (no XLA).

    x: (B, 784) or (B, 28, 28, 1) in the model's compute dtype, y: (B,) int32.
    Updates `metrics` when given, and writes the loss as the `batch_loss` scalar at
    step optimizer.iterations when a summary writer is the default.
    """

    @tf.function(input_signature=input_signature(model), jit_compile=False)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_with_penalty(model, loss_fn, y, logits)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        if metrics is not None:
            metrics.update(loss, y, logits)
        write_batch_loss(loss, optimizer.iterations)
        return loss

    return train_step


def make_test_step(model, loss_fn, metrics: EpochMetrics | None = None):
    """`test_step(x, y) -> predicted labels (B,) int32`, inference mode, as a tf.function."""

    @tf.function(input_signature=input_signature(model), jit_compile=False)
    def test_step(x, y):
        logits = model(x, training=False)
        if metrics is not None:
            metrics.update(loss_with_penalty(model, loss_fn, y, logits), y, logits)
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    return test_step


# --- the custom loop -------------------------------------------------------------------

def fit_custom(model, train_ds, val_ds, *, epochs: int, optimizer, logdir,
               resume: bool = False, console=None, loss_fn=None,
               steps_per_call: int = STEPS_PER_CALL) -> dict:
    """The GradientTape loop with checkpoints and full TensorBoard logging.

    train_ds: a tf.data.Dataset of (x, y) batches (x of the model's input shape and
    dtype, y int32), e.g. `make_dataset(...)`, drawn `steps_per_call` at a time by
    keras_impl.multistep, a new iterator per epoch; val_ds: an iterable of such
    batches, or None. Trains until `epochs` epochs are complete in total (with
    `resume`, counting the checkpointed ones; train_ds then made afresh, as the resumed
    command makes it, for `skip_shuffles`). Returns {"status": "completed" |
    "interrupted" | "diverged", "epochs": [per-epoch records of the whole run], "step",
    "checkpoint", "seconds_per_epoch", "resumed_from", ...}. loss_fn defaults to
    make_loss_fn().
    """
    console = console or Console()
    logdir = Path(logdir)
    ckpts = Checkpoints(model, optimizer, logdir / "checkpoints")
    records = start_or_resume(ckpts, resume, epochs)
    resumed_from = len(records)
    skip_shuffles(train_ds, resumed_from)  # one iterator per epoch
    loss_fn = loss_fn or make_loss_fn()
    train_metrics, val_metrics = EpochMetrics("train"), EpochMetrics("val")
    train_steps = make_train_steps(make_train_step(model, optimizer, loss_fn, train_metrics))
    test_step = make_test_step(model, loss_fn, val_metrics)
    train_writer = tf.summary.create_file_writer(str(logdir / "train"))
    val_writer = tf.summary.create_file_writer(str(logdir / "validation"))
    if not resume:  # a resumed run wrote it the first time
        write_graph(model, input_signature(model)[0], train_writer)
    try:
        with stops_between_steps() as stop, _progress(console) as progress:
            for epoch in range(resumed_from + 1, epochs + 1):
                started = time.perf_counter()
                task = progress.add_task(f"epoch {epoch}/{epochs}", total=epoch_length(train_ds),
                                         status="")

                def advance(steps, loss):
                    progress.update(task, advance=steps, status=f"loss {loss:.4f}")
                    stop.check()  # a Ctrl-C or SIGTERM stops the loop here, between calls

                train_metrics.reset()
                with train_writer.as_default():  # train_step's batch_loss goes here
                    bad_loss = train_epoch(train_steps, iter(train_ds), steps_per_call, advance)
                if bad_loss is not None:
                    return _summary("diverged", records, ckpts, resumed_from, epoch=epoch,
                                    bad_loss=bad_loss)
                progress.remove_task(task)
                val, wrong = _validate(test_step, val_metrics, val_ds)
                write_epoch(model, optimizer, epoch - 1, train_metrics.result(), val, wrong,
                            train_writer, val_writer)
                records.append(_epoch_record(epoch, ckpts.step, train_metrics.result(), val,
                                             time.perf_counter() - started))
                ckpts.save(records)
                _print_epoch(console, records[-1], epochs)
                stop.check()
    except KeyboardInterrupt as stop:
        return _interrupted(ckpts, resumed_from, stop)
    finally:
        train_writer.close()
        val_writer.close()
    return _summary("completed", records, ckpts, resumed_from, epoch=len(records))


def start_or_resume(ckpts: Checkpoints, resume: bool, epochs: int) -> list[dict]:
    """The records of the epochs already done: the latest checkpoint's with `resume`;
    else none, and the run's start is checkpointed, so that even an interrupted first
    epoch can be resumed. Raises TrainError when more than `epochs` are done."""
    if not resume:
        ckpts.save([])
        return []
    records = ckpts.restore()
    if len(records) > epochs:
        raise TrainError(f"{ckpts.latest}: holds {len(records)} completed epochs, more than "
                         f"the {epochs} asked for (the epoch count is the run's total)")
    return records


def skip_shuffles(train_ds, iterators: int) -> None:
    """Make and drop `iterators` iterators of train_ds, reading nothing from them.

    make_dataset's training split reshuffles (and redraws its augmentation seeds)
    whenever an iterator is made, drawing from a seed generator that starts afresh with
    each new Dataset. A resumed run therefore first makes the iterators of the epochs
    already done: its next epoch then sees the batches that epoch of an uninterrupted
    run saw.
    """
    for _ in range(iterators):
        iter(train_ds)


def _interrupted(ckpts: Checkpoints, resumed_from: int, stop: KeyboardInterrupt) -> dict:
    """Ctrl-C or SIGTERM: the epoch under way is dropped, model and optimizer go back to
    the last checkpoint (where --resume starts again)."""
    records = ckpts.restore()
    return _summary("interrupted", records, ckpts, resumed_from, epoch=len(records) + 1,
                    signal=stop_signal_name(stop))


def _validate(test_step, metrics: EpochMetrics, val_ds) -> tuple[dict, Misclassified]:
    """Validation metrics ({} without val_ds) and the first misclassified digits."""
    metrics.reset()
    wrong = Misclassified()
    if val_ds is None:
        return {}, wrong
    for x, y in val_ds:
        wrong.add(x, y, test_step(x, y))
    return metrics.result(), wrong


def epoch_length(dataset) -> int | None:
    """Batches per epoch of a tf.data.Dataset, or None when it cannot tell."""
    try:
        return len(dataset)
    except TypeError:
        return None


def _progress(console):
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                    console=console, transient=True)


def _print_epoch(console, record: dict, epochs: int) -> None:
    val = (f"  val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.2%}"
           if record["val_loss"] is not None else "")
    console.print(f"epoch {record['epoch']}/{epochs}  loss {record['loss']:.4f}  "
                  f"acc {record['accuracy']:.2%}{val}  {record['seconds']:.1f} s  "
                  f"step {record['step']}", soft_wrap=True)


def _epoch_record(epoch: int, step: int, train: dict, val: dict, seconds: float) -> dict:
    return {"epoch": epoch, "step": step, "loss": train["loss"], "accuracy": train["accuracy"],
            "val_loss": val.get("loss"), "val_accuracy": val.get("accuracy"),
            "seconds": seconds}


def _summary(status: str, epochs: list, ckpts: Checkpoints, resumed_from: int,
             **extra) -> dict:
    seconds = [e["seconds"] for e in epochs]
    return {"status": status, "epochs": list(epochs), "step": ckpts.step,
            "checkpoint": ckpts.latest, "resumed_from": resumed_from,
            "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None, **extra}


# --- the fit() baseline ----------------------------------------------------------------

# fit() makes two iterators of the training data per epoch (Keras 3 makes the next
# epoch's when an epoch ends, and a fresh one when the next begins, for a dataset of
# known length such as make_dataset's): a resumed run skips as many.
FIT_ITERATORS_PER_EPOCH = 2


def fit_baseline(model, train_ds, val_ds, *, epochs: int, optimizer, logdir,
                 resume: bool = False, console=None, loss_fn=None) -> dict:
    """compile()/fit() with Keras's TensorBoard callback (histograms every epoch).

    Same checkpoints, Ctrl-C/SIGTERM, NaN handling, exact resume and return value as
    `fit_custom`; the progress display is Keras's own.
    """
    model.compile(optimizer=optimizer, loss=loss_fn or make_loss_fn(), metrics=["accuracy"],
                  jit_compile=False)
    ckpts = Checkpoints(model, optimizer, Path(logdir) / "checkpoints")
    records = start_or_resume(ckpts, resume, epochs)
    resumed_from = len(records)
    skip_shuffles(train_ds, FIT_ITERATORS_PER_EPOCH * resumed_from)
    try:
        with stops_between_steps() as stop:
            tracker = _FitTracker(ckpts, records, stop)
            callbacks = [keras.callbacks.TensorBoard(str(logdir), histogram_freq=1), tracker]
            if resumed_from < epochs:
                model.fit(train_ds, validation_data=val_ds, epochs=epochs,
                          initial_epoch=resumed_from, callbacks=callbacks, shuffle=False,
                          verbose="auto")
    except KeyboardInterrupt as stop:
        return _interrupted(ckpts, resumed_from, stop)
    if tracker.bad_loss is not None:
        return _summary("diverged", records, ckpts, resumed_from, epoch=len(records) + 1,
                        bad_loss=tracker.bad_loss)
    return _summary("completed", records, ckpts, resumed_from, epoch=len(records))


class _FitTracker(keras.callbacks.Callback):
    """fit()'s side of the bookkeeping: record, checkpoint and time each epoch, stop on NaN,
    on Ctrl-C and on SIGTERM.

    records: the run's per-epoch records so far, extended in place; stop: the
    StopRequest of plumbing.interrupts, checked after every batch and epoch.
    """

    def __init__(self, ckpts: Checkpoints, records: list[dict], stop):
        super().__init__()
        self.ckpts, self.records, self.stop = ckpts, records, stop
        self.bad_loss, self.started = None, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self.bad_loss = loss
            self.model.stop_training = True
        self.stop.check()

    def on_epoch_end(self, epoch, logs=None):
        if self.bad_loss is not None:
            return
        logs = logs or {}
        train = {"loss": float(logs["loss"]), "accuracy": float(logs["accuracy"])}
        val = ({"loss": float(logs["val_loss"]), "accuracy": float(logs["val_accuracy"])}
               if "val_loss" in logs else {})
        self.records.append(_epoch_record(epoch + 1, self.ckpts.step, train, val,
                                          time.perf_counter() - self.started))
        self.ckpts.save(self.records)
        self.stop.check()


if __name__ == "__main__":  # `python -m keras_impl.train` is the command line module
    runpy.run_module("keras_impl.train_cli", run_name="__main__", alter_sys=True)
