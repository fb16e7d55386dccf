"""Train a zoo model with Keras: the `fit()` baseline or the custom GradientTape loop.

    python -m keras_impl.train --model fc128 --loop custom --epochs 5
    python -m keras_impl.train --model convnet --loop fit --epochs 3 --optimizer sgd --lr 0.05
    python -m keras_impl.train --model fc128 --epochs 10 --resume     # continue a run
    python -m keras_impl.train --model fc128 --epochs 1 --limit 2000 --json run.json
    python -m keras_impl.train --model best --epochs 20 --augment --schedule cosine \
        --warmup-epochs 1 --label-smoothing 0.1 --lr 0.002     # the accuracy recipe

--loop fit     the Sequential model, compile()/fit() and Keras's TensorBoard callback.
--loop custom  (default) the subclassed TwinNet, @tf.function train/test steps (the
               training steps 20 per call, batches drawn in the graph: make_train_steps),
               keras.metrics accumulators, a rich progress bar and our own TensorBoard
               logging: per-step train loss, per-epoch loss/accuracy/learning rate,
               the forward graph, a histogram of every weight, 12 misclassified
               validation digits with their true and predicted labels.

Everything goes to --logdir (default runs/<model>-<loop>):
    train/, validation/   TensorBoard event files (separate writers, as Keras does)
    checkpoints/          tf.train.CheckpointManager, one checkpoint per epoch
    run.json              the settings, checked again by --resume
    model.keras           the final model; model.h5 the grader export (keras_impl.export)
--augment draws a random rotation, shift, scale and stroke width for every training
image (keras_impl.augment); --schedule cosine decays the learning rate to 0 over the
run after --warmup-epochs of linear warmup; --label-smoothing s trains against
(1 - s) * onehot + s / 10. The NumPy side (keras_impl.scratch_train) has the same options.
--json FILE adds a summary: status, per-epoch loss/accuracy/val_loss/val_accuracy,
step and seconds, and seconds_per_epoch (for comparing the two loops).

Epoch summaries use step = epoch index from 0, like Keras's TensorBoard callback, so
fit and custom runs overlay; per-step summaries use the optimizer's step counter,
which is checkpointed and so continues across --resume. Ctrl-C saves a checkpoint
(weights, optimizer state, step) and exits with code 130; --resume then runs the
interrupted epoch again from its first batch, starting from the weights and step
reached. A NaN/Inf loss stops training (exit 1); the last good checkpoint stays. The
reported loss includes the L2 penalty, as fit() reports it. The shuffle order of a
resumed run differs from an uninterrupted one (tf.data cannot start at epoch k).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tensorboard.plugins.scalar.metadata import create_summary_metadata

from keras_impl.data import add_data_dir_arg, make_dataset, run_cli
from keras_impl.export import ExportError, export_h5
from keras_impl.augment import Augmentation
from keras_impl.model import batch_input_shape, build_sequential, build_twinnet
from scratch import zoo
from scratch.optim import CosineDecay

DEFAULT_LR = {"adam": 1e-3, "sgd": 0.1}
MISCLASSIFIED_SHOWN = 12
CHECKPOINTS_KEPT = 3
# Settings a resumed run must share (the checkpoint restores the learning rate too).
RESUME_KEYS = ("model", "loop", "optimizer", "lr", "l2", "batch_size", "schedule",
               "warmup_epochs", "label_smoothing", "augment")
EXIT_INTERRUPTED = 130  # the shell's code for "ended by Ctrl-C"
# Training steps per tf.function call in the custom loop. The progress bar, Ctrl-C and
# the NaN check act between calls; past ~20 steps per call fc128 gains little.
STEPS_PER_CALL = 20
BATCH_LOSS = create_summary_metadata(display_name="batch_loss",
                                     description="training loss of each step")


class TrainError(Exception):
    """A run that cannot start or continue; the message is one line."""


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


def make_optimizer(name: str, lr: float | None = None, schedule: CosineDecay | None = None):
    """A Keras optimizer: "adam" or "sgd", learning rate `lr` (default DEFAULT_LR[name]).

    `schedule` (scratch.optim.CosineDecay, the NumPy side's schedule) replaces the fixed
    rate by keras.optimizers.schedules.CosineDecay with the same numbers.
    """
    lr = DEFAULT_LR[name] if lr is None else lr
    if schedule is not None:
        lr = keras_schedule(schedule)
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "sgd":
        return keras.optimizers.SGD(lr)
    raise ValueError(f"unknown optimizer {name!r}: expected adam or sgd")


def keras_schedule(schedule: CosineDecay):
    """keras.optimizers.schedules.CosineDecay with the numbers of the NumPy schedule."""
    warm = schedule.warmup_steps
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warm else schedule.peak, schedule.decay_steps, alpha=schedule.alpha,
        warmup_target=schedule.peak if warm else None, warmup_steps=warm)


@keras.saving.register_keras_serializable(package="twinnet")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy from logits against integer labels smoothed by `label_smoothing`.

    Keras's SparseCategoricalCrossentropy has no label smoothing and its
    CategoricalCrossentropy wants one-hot labels; this one-hots the labels first.
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


def make_loss_fn(label_smoothing: float = 0.0):
    """The training loss: cross-entropy from logits, labels smoothed when asked."""
    if label_smoothing:
        return SparseSmoothedCrossentropy(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _penalised_loss(model, loss_fn, y, logits):
    """Cross-entropy plus the L2 penalties the layers' kernel_regularizers collected."""
    loss = loss_fn(y, logits)
    return loss + tf.add_n(model.losses) if model.losses else loss


def _batch_signature(model):
    """One input signature, batch dimension None: each step function is traced once.

    Images come in the model's compute dtype (float32, or float64 for a model built
    under keras.config.set_floatx("float64"), as the cross-checks do).
    """
    return [tf.TensorSpec(batch_input_shape(model), model.compute_dtype),
            tf.TensorSpec((None,), tf.int32)]


def _train_step_body(model, optimizer, loss_fn, metrics: EpochMetrics | None):
    """One optimizer step on (x, y), plain Python: traced inside the tf.functions below."""

    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = _penalised_loss(model, loss_fn, y, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        if metrics is not None:
            metrics.update(loss, y, logits)
        # tf.summary.scalar would prefix the tag with train_steps' loop scope
        # (while/cond_1/batch_loss); written with a fixed tag instead.
        tf.summary.write("batch_loss", tf.cast(loss, tf.float32),
                         step=tf.cast(optimizer.iterations, tf.int64), metadata=BATCH_LOSS)
        return loss

    return step


def make_train_step(model, optimizer, loss_fn, metrics: EpochMetrics | None = None):
    """`train_step(x, y) -> loss`: one optimizer step as a tf.function (no XLA).

    x: (B, 784) or (B, 28, 28, 1) float32, y: (B,) int32. Writes the step's loss as
    the `batch_loss` scalar at step `optimizer.iterations` when a summary writer
    is the default (it is a no-op otherwise).
    """
    return tf.function(_train_step_body(model, optimizer, loss_fn, metrics),
                       input_signature=_batch_signature(model), jit_compile=False)


def make_train_steps(model, optimizer, loss_fn, metrics: EpochMetrics | None = None):
    """`train_steps(iterator, max_steps) -> losses`: up to `max_steps` optimizer steps
    in one tf.function call, each on the iterator's next batch.

    The same step as `make_train_step`, but the batches are drawn inside the graph:
    a call from Python plus a batch fetched through Python cost ~0.7 ms per step,
    more than half of an fc128 step on 2 cores. Stops early at the end of the data
    and after a step whose loss is NaN/Inf (that step's update is applied, as in the
    one-step loop). iterator: `iter(dataset)` of (x, y) batches; max_steps: int32
    scalar tensor (a Python int would retrace for every value). Returns the losses
    of the steps taken, (n,) float32, n <= max_steps.
    """
    step = _train_step_body(model, optimizer, loss_fn, metrics)

    @tf.function(jit_compile=False)
    def train_steps(iterator, max_steps):
        losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        for i in tf.range(max_steps):
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            loss = tf.cast(step(*batch.get_value()), tf.float32)
            losses = losses.write(i, loss)
            if not tf.math.is_finite(loss):
                break
        return losses.stack()

    return train_steps


def make_test_step(model, loss_fn, metrics: EpochMetrics | None = None):
    """`test_step(x, y) -> predicted labels (B,) int32`, inference mode, as a tf.function."""

    @tf.function(input_signature=_batch_signature(model), jit_compile=False)
    def test_step(x, y):
        logits = model(x, training=False)
        if metrics is not None:
            metrics.update(_penalised_loss(model, loss_fn, y, logits), y, logits)
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    return test_step


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


@contextmanager
def _sigint_deferred():
    """Hold off Ctrl-C while a checkpoint is written, so a second press cannot tear it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda *_: pressed.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


class Checkpoints:
    """Model, optimizer (with its step counter) and completed-epoch count, per epoch."""

    def __init__(self, model, optimizer, directory: Path):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        # Slots must exist before a restore can fill them.
        optimizer.build(model.trainable_variables)
        self.optimizer = optimizer
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                              epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory),
                                                  max_to_keep=CHECKPOINTS_KEPT)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore(self) -> int:
        """Load the latest checkpoint; returns the number of completed epochs."""
        path = self.latest
        if path is None:
            raise TrainError(f"{self.manager.directory}: no checkpoint to resume from")
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, AssertionError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise TrainError(f"{path}: cannot restore checkpoint ({type(err).__name__}: "
                             f"{first_line})") from None
        return int(self.epoch.numpy())

    def save(self, completed_epochs: int) -> str:
        with _sigint_deferred():
            self.epoch.assign(completed_epochs)
            return self.manager.save()

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())


def _length(dataset) -> int | None:
    try:
        return len(dataset)
    except TypeError:
        return None


def _epoch_record(epoch: int, step: int, train: dict, val: dict, seconds: float) -> dict:
    return {"epoch": epoch, "step": step, "loss": train["loss"], "accuracy": train["accuracy"],
            "val_loss": val.get("loss"), "val_accuracy": val.get("accuracy"),
            "seconds": seconds}


def _summary(status: str, epochs: list, ckpts: Checkpoints, **extra) -> dict:
    seconds = [e["seconds"] for e in epochs]
    return {"status": status, "epochs": epochs, "step": ckpts.step,
            "checkpoint": ckpts.latest,
            "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None, **extra}


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


def _write_graph(model, writer) -> None:
    """The forward pass alone, traced for the model's input signature (no optimizer,
    no iterator).

    Written from the traced function's graph rather than with trace_on/trace_export:
    in TF 2.21 trace_export leaves graph collection on, so the next trace would also
    hold every function run in between (train steps, tf.data, Keras's predict).
    """
    @tf.function(input_signature=_batch_signature(model)[:1])
    def forward(images):
        return model(images, training=False)

    with writer.as_default():
        tf.summary.graph(forward.get_concrete_function().graph)
    writer.flush()


def fit_custom(model, train_ds, val_ds, *, epochs: int, optimizer, logdir,
               resume: bool = False, console=None, loss_fn=None,
               steps_per_call: int = STEPS_PER_CALL) -> dict:
    """The GradientTape loop with checkpoints and full TensorBoard logging.

    train_ds: a tf.data.Dataset of (x, y) batches (x float32 of the model's input
    shape, y int32), e.g. `make_dataset(...)`, drawn `steps_per_call` at a time by
    `make_train_steps`; val_ds: an iterable of such batches, or None. Trains until
    `epochs` epochs are complete in total (with `resume`, counting the checkpointed
    ones). Ctrl-C and a NaN/Inf loss end the run early. Returns {"status":
    "completed" | "interrupted" | "diverged", "epochs": [per-epoch records of this
    call], "step", "checkpoint", "seconds_per_epoch", ...}. loss_fn defaults to
    make_loss_fn().
    """
    console = console or Console()
    logdir = Path(logdir)
    ckpts = Checkpoints(model, optimizer, logdir / "checkpoints")
    done = completed = ckpts.restore() if resume else 0
    loss_fn = loss_fn or make_loss_fn()
    train_metrics, val_metrics = EpochMetrics("train"), EpochMetrics("val")
    train_steps = make_train_steps(model, optimizer, loss_fn, train_metrics)
    test_step = make_test_step(model, loss_fn, val_metrics)
    train_writer = tf.summary.create_file_writer(str(logdir / "train"))
    val_writer = tf.summary.create_file_writer(str(logdir / "validation"))
    records: list[dict] = []
    if not done:  # a resumed run wrote it the first time
        _write_graph(model, train_writer)
    try:
        with _progress(console) as progress:
            for epoch in range(done + 1, epochs + 1):
                started = time.perf_counter()
                task = progress.add_task(f"epoch {epoch}/{epochs}", total=_length(train_ds),
                                         status="")
                train_metrics.reset()
                with train_writer.as_default():
                    bad_loss = _train_epoch(train_steps, iter(train_ds), steps_per_call,
                                            progress, task)
                if bad_loss is not None:
                    return _summary("diverged", records, ckpts, epoch=epoch, bad_loss=bad_loss)
                progress.remove_task(task)
                val, wrong = _validate(test_step, val_metrics, val_ds)
                _log_epoch(model, optimizer, epoch - 1, train_metrics.result(), val, wrong,
                           train_writer, val_writer)
                completed = epoch  # first: a Ctrl-C held off during the save re-saves it
                ckpts.save(epoch)
                records.append(_epoch_record(epoch, ckpts.step, train_metrics.result(), val,
                                             time.perf_counter() - started))
                _print_epoch(console, records[-1], epochs)
    except KeyboardInterrupt:
        ckpts.save(completed)
        return _summary("interrupted", records, ckpts, epoch=completed + 1)
    finally:
        train_writer.close()
        val_writer.close()
    return _summary("completed", records, ckpts, epoch=completed)


def _train_epoch(train_steps, batches, steps_per_call: int, progress, task) -> float | None:
    """Train on every batch left in the iterator `batches`, `steps_per_call` per call,
    advancing the progress bar's `task` after each call. Returns None, or the NaN/Inf
    loss that stopped the epoch."""
    chunk = tf.constant(steps_per_call, tf.int32)
    while True:
        losses = train_steps(batches, chunk).numpy()
        if len(losses):
            if not math.isfinite(losses[-1]):
                return float(losses[-1])
            progress.update(task, advance=len(losses), status=f"loss {losses[-1]:.4f}")
        if len(losses) < steps_per_call:  # the iterator is used up
            return None


def _validate(test_step, metrics: EpochMetrics, val_ds):
    """Validation metrics and up to 12 misclassified (images, labels, predictions)."""
    metrics.reset()
    shown = ([], [], [])
    if val_ds is None:
        return {}, shown
    for x, y in val_ds:
        pred = test_step(x, y)
        if len(shown[0]) < MISCLASSIFIED_SHOWN:
            y, pred = np.asarray(y), np.asarray(pred)
            for i in np.flatnonzero(pred != y)[:MISCLASSIFIED_SHOWN - len(shown[0])]:
                shown[0].append(np.asarray(x[i]))
                shown[1].append(y[i])
                shown[2].append(pred[i])
    return metrics.result(), shown


def _log_epoch(model, optimizer, index, train, val, wrong, train_writer, val_writer):
    """Epoch scalars in both writers, weight histograms and misclassified digits."""
    with train_writer.as_default():
        tf.summary.scalar("epoch_loss", train["loss"], step=index)
        tf.summary.scalar("epoch_accuracy", train["accuracy"], step=index)
        tf.summary.scalar("epoch_learning_rate", float(optimizer.learning_rate), step=index)
        for variable in model.weights:
            tf.summary.histogram(variable.path, variable, step=index)
    if val:
        with val_writer.as_default():
            tf.summary.scalar("epoch_loss", val["loss"], step=index)
            tf.summary.scalar("epoch_accuracy", val["accuracy"], step=index)
            if wrong[0]:
                tf.summary.image("misclassified", label_digits(*wrong), step=index,
                                 max_outputs=MISCLASSIFIED_SHOWN,
                                 description="the first misclassified validation digits: "
                                             "true label (white), prediction (red)")
    train_writer.flush()
    val_writer.flush()


def fit_baseline(model, train_ds, val_ds, *, epochs: int, optimizer, logdir,
                 resume: bool = False, console=None, loss_fn=None) -> dict:
    """compile()/fit() with Keras's TensorBoard callback (histograms every epoch).

    Same checkpoints, Ctrl-C, NaN handling and return value as `fit_custom`; the
    progress display is Keras's own.
    """
    model.compile(optimizer=optimizer, loss=loss_fn or make_loss_fn(), metrics=["accuracy"],
                  jit_compile=False)
    ckpts = Checkpoints(model, optimizer, Path(logdir) / "checkpoints")
    done = ckpts.restore() if resume else 0
    tracker = _FitTracker(ckpts, done)
    callbacks = [keras.callbacks.TensorBoard(str(logdir), histogram_freq=1), tracker]
    try:
        if done < epochs:
            model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=done,
                      callbacks=callbacks, shuffle=False, verbose="auto")
    except KeyboardInterrupt:
        ckpts.save(tracker.completed)
        return _summary("interrupted", tracker.records, ckpts, epoch=tracker.completed + 1)
    if tracker.bad_loss is not None:
        return _summary("diverged", tracker.records, ckpts, epoch=tracker.completed + 1,
                        bad_loss=tracker.bad_loss)
    return _summary("completed", tracker.records, ckpts, epoch=tracker.completed)


class _FitTracker(keras.callbacks.Callback):
    """fit()'s side of the bookkeeping: checkpoint and time each epoch, stop on NaN."""

    def __init__(self, ckpts: Checkpoints, done: int):
        super().__init__()
        self.ckpts, self.completed = ckpts, done
        self.records, self.bad_loss, self.started = [], None, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self.bad_loss = loss
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.bad_loss is not None:
            return
        self.completed = epoch + 1
        self.ckpts.save(epoch + 1)
        logs = logs or {}
        train = {"loss": float(logs["loss"]), "accuracy": float(logs["accuracy"])}
        val = ({"loss": float(logs["val_loss"]), "accuracy": float(logs["val_accuracy"])}
               if "val_loss" in logs else {})
        self.records.append(_epoch_record(epoch + 1, self.ckpts.step, train, val,
                                          time.perf_counter() - self.started))


def save_final(model, logdir) -> dict:
    """Write model.keras and the graders' model.h5, each atomically; returns their paths."""
    logdir = Path(logdir)
    paths = {"keras": logdir / "model.keras", "h5": logdir / "model.h5"}
    partial = paths["keras"].with_name("model.partial.keras")  # Keras wants the suffix
    model.save(partial)
    os.replace(partial, paths["keras"])
    export_h5(model, paths["h5"])  # writes to a temporary file and checks it itself
    return {kind: str(p) for kind, p in paths.items()}


def write_json(path, data) -> None:
    """JSON written to a temporary file first, then moved into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _check_run_config(logdir: Path, config: dict, resume: bool) -> None:
    """Refuse to mix runs: a fresh run needs an empty logdir, --resume the same settings."""
    saved_path = logdir / "run.json"
    has_checkpoint = (logdir / "checkpoints" / "checkpoint").exists()
    if not resume:
        if has_checkpoint:
            raise TrainError(f"{logdir}: already holds a run; add --resume to continue it "
                             "or choose another --logdir")
        return
    if not has_checkpoint:
        raise TrainError(f"{logdir / 'checkpoints'}: no checkpoint to resume from")
    try:
        saved = json.loads(saved_path.read_text())
    except (OSError, ValueError) as err:
        raise TrainError(f"{saved_path}: cannot read the run's settings ({err})") from None
    for key in (*RESUME_KEYS, "epochs") if "epochs" in config else RESUME_KEYS:
        if saved.get(key) != config[key]:
            raise TrainError(f"--resume: {logdir} was trained with --{key.replace('_', '-')} "
                             f"{saved.get(key)}, not {config[key]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m keras_impl.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help=f"zoo model: {', '.join(zoo.model_names())} or fc<n>")
    parser.add_argument("--loop", choices=("fit", "custom"), default="custom",
                        help="compile()/fit() baseline or the GradientTape loop (default)")
    parser.add_argument("--epochs", type=int, default=5, help="total epochs (default 5)")
    parser.add_argument("--batch-size", type=int, default=128, help="default 128")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="adam",
                        help="default adam")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default 0.001 for adam, 0.1 for sgd)")
    parser.add_argument("--l2", type=float, default=0.0,
                        help="L2 penalty factor on the hidden kernels (default 0)")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                        help="learning rate: constant (default) or cosine decay to 0 over "
                             "--epochs, after --warmup-epochs of linear warmup")
    parser.add_argument("--warmup-epochs", type=float, default=0.0,
                        help="cosine schedule: epochs of linear warmup from 0 (default 0)")
    parser.add_argument("--label-smoothing", type=float, default=0.0,
                        help="targets (1-s)*onehot + s/10 instead of onehot (default 0)")
    parser.add_argument("--augment", action="store_true",
                        help="random rotation/shift/scale/stroke width on training batches "
                             "(keras_impl.augment)")
    parser.add_argument("--seed", type=int, default=0, help="weights, dropout, shuffling")
    add_data_dir_arg(parser)
    parser.add_argument("--logdir", default=None,
                        help="where events, checkpoints and models go "
                             "(default runs/<model>-<loop>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --logdir from its latest checkpoint")
    parser.add_argument("--json", metavar="FILE", help="write per-epoch metrics and timings")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N train and N validation images")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        zoo.architecture(args.model)
    except KeyError as err:
        parser.error(f"--model: {err.args[0]}")
    for name in ("epochs", "batch_size", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be a positive number, got {args.lr}")
    if not (math.isfinite(args.l2) and args.l2 >= 0):
        parser.error(f"--l2 must be a number >= 0, got {args.l2}")
    if not 0 <= args.label_smoothing < 1:
        parser.error(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    if not (0 <= args.warmup_epochs < args.epochs):
        parser.error(f"--warmup-epochs must be >= 0 and below --epochs, got {args.warmup_epochs}")
    if args.warmup_epochs and args.schedule != "cosine":
        parser.error("--warmup-epochs applies to --schedule cosine only")
    args.lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    args.logdir = Path(args.logdir or Path("runs") / f"{args.model}-{args.loop}")
    return args


def train(args: argparse.Namespace, console=None) -> dict:
    """Run one training as the command line describes; returns the summary dict."""
    console = console or Console()
    config = {key: getattr(args, key) for key in (
        "model", "loop", "optimizer", "lr", "l2", "batch_size", "seed", "limit", "schedule",
        "warmup_epochs", "label_smoothing", "augment")}
    if args.schedule != "constant":  # the schedule's length is part of the run
        config["epochs"] = args.epochs
    _check_run_config(args.logdir, config, args.resume)
    keras.utils.set_random_seed(args.seed)
    if args.loop == "custom":
        model, fit = build_twinnet(args.model, l2=args.l2), fit_custom
    else:
        model, fit = build_sequential(args.model, l2=args.l2), fit_baseline
    data = dict(batch_size=args.batch_size, flat=len(batch_input_shape(model)) == 2,
                data_dir=args.data_dir,
                limit=args.limit)
    train_ds = make_dataset("train", seed=args.seed,
                            augment=Augmentation() if args.augment else None, **data)
    val_ds = make_dataset("val", **data)
    schedule = None
    if args.schedule == "cosine":
        schedule = CosineDecay.for_run(args.lr, args.epochs, _length(train_ds),
                                       args.warmup_epochs)
    args.logdir.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        write_json(args.logdir / "run.json", config)
    result = fit(model, train_ds, val_ds, epochs=args.epochs,
                 optimizer=make_optimizer(args.optimizer, args.lr, schedule),
                 logdir=args.logdir, resume=args.resume, console=console,
                 loss_fn=make_loss_fn(args.label_smoothing))
    result.update(config=config, logdir=str(args.logdir))
    if result["status"] == "completed":
        result["saved"] = save_final(model, args.logdir)
    if args.json:
        write_json(args.json, result)
    return result


def report(result: dict, console) -> int:
    """Say where everything went (or why the run stopped); returns the exit code."""
    logdir = result["logdir"]
    if result["status"] == "diverged":
        print(f"error: loss became {result['bad_loss']} in epoch {result['epoch']} at step "
              f"{result['step']}: training stopped; the last good checkpoint is "
              f"{result['checkpoint'] or 'none (no epoch completed)'}. Try a lower --lr.",
              file=sys.stderr)
        return 1
    if result["status"] == "interrupted":
        print(f"interrupted in epoch {result['epoch']}: saved checkpoint {result['checkpoint']}"
              f" (step {result['step']}); continue with the same command plus --resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if result["epochs"]:
        console.print(f"{len(result['epochs'])} epochs, "
                      f"{result['seconds_per_epoch']:.1f} s per epoch")
    console.print(f"checkpoints  {result['checkpoint']}", soft_wrap=True)
    console.print(f"model        {result['saved']['keras']}", soft_wrap=True)
    console.print(f"grader .h5   {result['saved']['h5']}", soft_wrap=True)
    console.print(f"TensorBoard  {logdir}/train and {logdir}/validation; view with:",
                  soft_wrap=True)
    console.print(f"  tensorboard --logdir {logdir}", soft_wrap=True, highlight=False)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console()
    try:
        result = train(args, console)
    except (TrainError, ExportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return report(result, console)


if __name__ == "__main__":
    sys.exit(run_cli(main))
