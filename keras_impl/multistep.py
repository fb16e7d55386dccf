"""Many training steps per tf.function call, the batches drawn inside the graph.

    train_steps = make_train_steps(train_step)      # train_step from keras_impl.train
    bad_loss = train_epoch(train_steps, iter(train_ds), STEPS_PER_CALL, advance)

Calling a tf.function from Python and fetching its batch through Python cost ~0.7 ms
per step, more than half of an fc128 step on 2 cores. `train_steps` therefore runs up
to STEPS_PER_CALL steps of the very same `train_step` in one graph loop, each on the
iterator's next batch. The training is the same, step for step and bit for bit, as
calling `train_step` once per batch; only how often Python gets control changes (the
progress bar, Ctrl-C and the NaN check act between calls).
"""
from __future__ import annotations

import math

import tensorflow as tf

# Past ~20 steps per call fc128 gains little, and the progress bar still moves.
STEPS_PER_CALL = 20


def make_train_steps(train_step):
    """`train_steps(iterator, max_steps) -> losses`: up to `max_steps` calls of
    `train_step` in one tf.function call, each on the iterator's next batch.

    train_step: the tf.function of `keras_impl.train.make_train_step`. Stops early at
    the end of the data and after a step whose loss is NaN/Inf (that step's update is
    applied, as in the one-step loop). iterator: `iter(dataset)` of (x, y) batches;
    max_steps: int32 scalar tensor (a Python int would retrace for every value).
    Returns the losses of the steps taken, (n,) float32, n <= max_steps.
    """
    # The step's Python body is traced into this loop: the same operations as
    # train_step, without a function call per step.
    step = train_step.python_function

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


def train_epoch(train_steps, batches, steps_per_call: int, advance) -> float | None:
    """Train on every batch left in the iterator `batches`, `steps_per_call` per call.

    advance(steps, last_loss) is called after each call that trained (a progress bar).
    Returns None, or the NaN/Inf loss that stopped the epoch.
    """
    chunk = tf.constant(steps_per_call, tf.int32)
    while True:
        losses = train_steps(batches, chunk).numpy()
        if len(losses):
            if not math.isfinite(losses[-1]):
                return float(losses[-1])
            advance(len(losses), float(losses[-1]))
        if len(losses) < steps_per_call:  # the iterator is used up
            return None
