"""keras_impl.train's training loop, faster: many steps per tf.function call, the batches
drawn inside the graph.

    fit_custom(..., train_epoch=MultistepEpochs(STEPS_PER_CALL))   # instead of train.train_epoch
    train_steps = make_train_steps(model, optimizer, loss_fn)      # the graph loop alone
    losses = train_steps(iter(train_ds), tf.constant(20))

Calling a tf.function from Python and fetching its batch through Python cost ~0.7 ms
per step, more than half of an fc128 step on 2 cores. `train_steps` therefore calls
the very same `train.train_step` up to STEPS_PER_CALL times in one graph loop, each on
the iterator's next batch, and writes each loss as `batch_loss` as train.train_epoch
does. The training is the same, step for step (tests/test_keras_train.py checks it);
only how often Python gets control changes: after_steps (the progress bar, Ctrl-C,
the NaN check) acts between calls.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_impl.summaries import write_batch_loss
from keras_impl.train import train_step

# Past ~20 steps per call fc128 gains little, and the progress bar still moves.
STEPS_PER_CALL = 20


def make_train_steps(model, optimizer, loss_fn, metrics=None):
    """`train_steps(iterator, max_steps) -> losses`: up to `max_steps` train_steps in
    one tf.function call, each on the iterator's next batch.

    Stops early at the end of the data and after a step whose loss is NaN/Inf (that
    step's update is applied, as in the one-step loop). iterator: `iter(dataset)` of
    (x, y) batches; max_steps: int32 scalar tensor (a Python int would retrace for every
    value). Returns the losses of the steps taken, (n,) float32, n <= max_steps. The
    summary writer that is the default at the first call gets every batch_loss.
    """
    # train_step may create variables only in its first trace ever: the slots first.
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=False)
    def train_steps(iterator, max_steps):
        losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        for i in tf.range(max_steps):
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            loss = train_step(model, optimizer, loss_fn, metrics, *batch.get_value())
            write_batch_loss(loss, optimizer.iterations)
            loss = tf.cast(loss, tf.float32)
            losses = losses.write(i, loss)
            if not tf.math.is_finite(loss):
                break
        return losses.stack()

    return train_steps


class MultistepEpochs:
    """A drop-in for keras_impl.train.train_epoch, `steps_per_call` steps per call: one per
    run, as fit_custom's train_epoch. Its graph loop is traced in the run's first epoch
    (for its model, optimizer, loss, metrics and summary writer) and reused after."""

    def __init__(self, steps_per_call: int = STEPS_PER_CALL):
        self.steps_per_call = steps_per_call
        self.train_steps = None

    def __call__(self, model, optimizer, loss_fn, metrics, train_ds, after_steps=None):
        if self.train_steps is None:
            self.train_steps = make_train_steps(model, optimizer, loss_fn, metrics)
        batches, chunk = iter(train_ds), tf.constant(self.steps_per_call, tf.int32)
        while True:
            losses = self.train_steps(batches, chunk).numpy()
            if len(losses) and after_steps is not None:
                after_steps(len(losses), losses[-1])
            # A short call: the data ran out, or a loss went NaN (after_steps saw it).
            if len(losses) < self.steps_per_call and np.isfinite(losses).all():
                return
