"""Per-epoch checkpoints of a Keras training: every model variable, the optimizer, the history.

    ckpts = Checkpoints(model, optimizer, logdir / "checkpoints")
    ckpts.save([])              # a new run: its start, "epoch 0"
    history = ckpts.restore()   # the per-epoch records of the run being resumed
    ckpts.save(history)         # after each epoch; neither Ctrl-C nor SIGTERM tears the write

A checkpoint is the state at the end of an epoch, everything the next epoch depends on:
  - every variable of the model: the weights, and what training changes besides them
    (BatchNorm's moving statistics, the state of dropout's random-seed generator);
  - the optimizer's variables: its moments and its step counter `iterations`, which
    also drives a learning-rate schedule;
  - the per-epoch records so far (JSON), so a resumed run reports every epoch.
Checkpoint ckpt-N holds the end of epoch N; tf.train.CheckpointManager keeps the newest
CHECKPOINTS_KEPT.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import tensorflow as tf

from plumbing.files import tensorflow_write_failure
from plumbing.interrupts import interrupts_deferred

CHECKPOINTS_KEPT = 3


class TrainError(Exception):
    """A run that cannot start or continue; the message is one line."""


def failed_write(err: tf.errors.OpError, directory) -> TrainError | None:
    """The one-line TrainError for TensorFlow failing to write a file of the run (a full
    disk under the event files, say), naming the file and the checkpoint --resume
    continues from (in `directory`); None when `err` is about something else."""
    failure = tensorflow_write_failure(err)
    if failure is None:
        return None
    return TrainError(f"{failure}; {_kept(tf.train.latest_checkpoint(str(directory)))}")


def _kept(last_good: str | None) -> str:
    return f"--resume continues from {last_good}" if last_good else "no checkpoint was kept"


class Checkpoints:
    """Model variables, optimizer (with its step counter) and per-epoch records, per epoch."""

    def __init__(self, model, optimizer, directory: Path):
        # Slots must exist before a restore can fill them.
        optimizer.build(model.trainable_variables)
        self.optimizer = optimizer
        self.history = tf.Variable("[]", dtype=tf.string, trainable=False)
        # model.variables rather than the model: tf.train.Checkpoint does not see the
        # variables of a subclassed Keras model's layer list, nor any seed generator.
        self.checkpoint = tf.train.Checkpoint(model=list(model.variables),
                                              optimizer=optimizer, history=self.history)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory),
                                                  max_to_keep=CHECKPOINTS_KEPT)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore(self) -> list[dict]:
        """Load the latest checkpoint; returns its per-epoch records (one per completed epoch)."""
        path = self.latest
        if path is None:
            raise TrainError(f"{self.manager.directory}: no checkpoint to resume from")
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
            return json.loads(self.history.numpy())
        except (tf.errors.OpError, ValueError, AssertionError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise TrainError(f"{path}: cannot restore checkpoint ({type(err).__name__}: "
                             f"{first_line})") from None

    def save(self, history: list[dict]) -> str:
        """Write checkpoint ckpt-N after N = len(history) completed epochs; returns its path.

        A write that fails (a full disk, say) removes what it wrote of ckpt-N and raises
        TrainError naming it; the checkpoints before it stay, for --resume."""
        number = len(history)
        with interrupts_deferred():
            self.history.assign(json.dumps(history))
            try:
                return self.manager.save(checkpoint_number=number)
            except tf.errors.OpError as err:
                raise self._failed_save(number, err) from None

    def _failed_save(self, number: int, err: tf.errors.OpError) -> TrainError:
        """Remove the parts of unfinished ckpt-`number` (its `_temp` folder of shards, a
        .index or .data the checkpoint list never got); the error to raise."""
        directory = Path(self.manager.directory)
        last_good = tf.train.latest_checkpoint(str(directory))  # the list on disk
        unfinished = directory / f"ckpt-{number}"
        if last_good != str(unfinished):
            shutil.rmtree(directory / f"ckpt-{number}_temp", ignore_errors=True)
            for part in directory.glob(f"ckpt-{number}.*"):
                part.unlink(missing_ok=True)
        failure = tensorflow_write_failure(err)
        reason = failure.reason if failure else type(err).__name__
        return TrainError(f"{unfinished}: cannot write the checkpoint ({reason}); "
                          f"{_kept(last_good)}")

    @property
    def step(self) -> int:
        """Optimizer steps taken so far (restored with the checkpoint)."""
        return int(self.optimizer.iterations.numpy())
