"""A real training run: keras_impl.train's loop wrapped from outside, and the fit() baseline.

    result = run_custom(model, train_ds, val_ds, epochs=5, optimizer=opt, logdir="runs/x")
    result = run_custom(model, train_ds, val_ds, ..., resume=True)   # continue a run
    result = fit_baseline(model, train_ds, val_ds, epochs=5, optimizer=opt, logdir="runs/y")

run_custom runs train.fit_custom with the steps STEPS_PER_CALL per tf.function call
(keras_impl.multistep; steps_per_call=1 is the plain loop, a train_step call per batch:
the same training, slower) and adds, through fit_custom's callbacks:
  - a progress bar per epoch and a printed line per epoch;
  - Ctrl-C or SIGTERM acted on between steps (plumbing.interrupts): "interrupted", the
    model back at its last checkpoint, the epoch under way dropped;
  - a NaN/Inf loss: "diverged", the last good checkpoint stays;
  - checkpoints at the start of a run and the end of every epoch (keras_impl.checkpoints).
resume=True continues from the latest checkpoint and ends bit for bit where an
uninterrupted run ends: same weights, optimizer state and step, and the same batches
in the same order (`skip_shuffles`). fit_baseline does all of it with compile()/fit()
and Keras's TensorBoard callback. Both return {"status": "completed" | "interrupted" |
"diverged", "epochs": [per-epoch records of the whole run], "step", "checkpoint",
"seconds_per_epoch", "resumed_from", ...}.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import keras
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from keras_impl.checkpoints import Checkpoints, TrainError
from keras_impl.multistep import STEPS_PER_CALL, MultistepEpochs
from keras_impl.train import epoch_record, fit_custom, format_epoch, make_loss_fn, train_epoch
from plumbing.interrupts import stop_signal_name, stops_between_steps
from plumbing.quiet import make_console


class Diverged(Exception):
    """A step's loss was NaN or Inf."""

    def __init__(self, loss: float):
        super().__init__(f"loss became {loss}")
        self.loss = loss


def run_custom(model, train_ds, val_ds, *, epochs: int, optimizer, logdir,
               resume: bool = False, console=None, loss_fn=None,
               steps_per_call: int = STEPS_PER_CALL) -> dict:
    """train.fit_custom with checkpoints, resume, Ctrl-C/SIGTERM, NaN and a progress bar.

    train_ds, val_ds: tf.data.Datasets of (x, y) batches (x of the model's input shape
    and dtype, y int32), a new iterator per epoch; with `resume`, train_ds made afresh,
    as the resumed command makes it (`skip_shuffles`). Trains until `epochs` epochs are
    complete in total, counting the checkpointed ones. loss_fn defaults to make_loss_fn().
    """
    console = console or make_console()
    logdir = Path(logdir)
    ckpts = Checkpoints(model, optimizer, logdir / "checkpoints")
    records = start_or_resume(ckpts, resume, epochs)
    resumed_from = len(records)
    skip_shuffles(train_ds, resumed_from)  # one iterator per epoch
    try:
        with stops_between_steps() as stop, _progress(console) as progress:
            callbacks = RunCallbacks(ckpts, records, stop, progress, console, epochs,
                                     epoch_length(train_ds))
            try:
                fit_custom(model, train_ds, val_ds, epochs=epochs, optimizer=optimizer,
                           logdir=logdir, loss_fn=loss_fn,
                           callbacks=callbacks, first_epoch=resumed_from + 1,
                           graph=not resume,  # a resumed run wrote it the first time
                           train_epoch=(train_epoch if steps_per_call == 1
                                        else MultistepEpochs(steps_per_call)))
            except Diverged as bad:
                return _summary("diverged", records, ckpts, resumed_from,
                                epoch=len(records) + 1, bad_loss=bad.loss)
    except KeyboardInterrupt as stop:
        return _interrupted(ckpts, resumed_from, stop)
    return _summary("completed", records, ckpts, resumed_from, epoch=len(records))


class RunCallbacks:
    """fit_custom's callbacks in a real run (the protocol of train.PrintEpochs).

    records: the run's per-epoch records so far, extended in place and checkpointed
    after every epoch; stop: the StopRequest of plumbing.interrupts, checked between
    steps and after every epoch; progress: a rich Progress, one task per epoch.
    """

    def __init__(self, ckpts: Checkpoints, records: list[dict], stop, progress, console,
                 epochs: int, steps_per_epoch: int | None):
        self.ckpts, self.records, self.stop = ckpts, records, stop
        self.progress, self.console = progress, console
        self.epochs, self.steps_per_epoch, self.task = epochs, steps_per_epoch, None

    def on_epoch_begin(self, epoch: int) -> None:
        self.task = self.progress.add_task(f"epoch {epoch}/{self.epochs}",
                                           total=self.steps_per_epoch, status="")

    def after_steps(self, steps: int, loss) -> None:
        loss = float(loss)
        if not math.isfinite(loss):
            raise Diverged(loss)
        self.progress.update(self.task, advance=steps, status=f"loss {loss:.4f}")
        self.stop.check()  # a Ctrl-C or SIGTERM stops the run here, between steps

    def on_epoch_end(self, record: dict) -> None:
        self.progress.remove_task(self.task)
        self.records.append(record)
        self.ckpts.save(self.records)
        self.console.print(format_epoch(record, self.epochs), soft_wrap=True)
        self.stop.check()


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
    `run_custom`; the progress display is Keras's own.
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
        self.records.append(epoch_record(epoch + 1, self.ckpts.step, train, val,
                                         time.perf_counter() - self.started))
        self.ckpts.save(self.records)
        self.stop.check()
