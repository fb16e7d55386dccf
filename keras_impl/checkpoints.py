"""Per-epoch checkpoints of a Keras training: weights, optimizer state and epoch count.

    ckpts = Checkpoints(model, optimizer, logdir / "checkpoints")
    done = ckpts.restore()      # completed epochs of the run being resumed
    ckpts.save(done + 1)        # after each epoch; Ctrl-C cannot tear the write

A checkpoint holds the model's variables, the optimizer's (its moments and its step
counter `iterations`, which also drives a learning-rate schedule) and the number of
completed epochs. tf.train.CheckpointManager keeps the newest CHECKPOINTS_KEPT.
"""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from keras_impl.interrupts import sigint_deferred

CHECKPOINTS_KEPT = 3


class TrainError(Exception):
    """A run that cannot start or continue; the message is one line."""


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
        """Write a checkpoint recording `completed_epochs`; returns its path."""
        with sigint_deferred():
            self.epoch.assign(completed_epochs)
            return self.manager.save()

    @property
    def step(self) -> int:
        """Optimizer steps taken so far (restored with the checkpoint)."""
        return int(self.optimizer.iterations.numpy())
