"""The Keras twin under tf.distribute: K replicas on K devices, one global batch per step.

    use_logical_cpus(4)                          # first, before TensorFlow uses a device
    strategy = mirrored_strategy(2)              # K GPUs if there are, else K logical CPUs
    with strategy.scope():
        model = build_twinnet("convnet")         # every variable mirrored on each device
        optimizer = keras.optimizers.SGD(0.1)
    batches = distribute_batches(strategy, lambda: make_dataset("train", 128), 128)
    train_step = make_distributed_train_step(strategy, model, optimizer, 128)
    for x, y in batches:
        loss = train_step(x, y)

What each part does (scratch.parallel does the same by hand):
  distribute_batches      each global batch of B is cut into K contiguous shards of B/K,
                          shard k for replica k (and, with several workers, worker w's
                          replicas take the w-th part), the shards scratch.parallel.shard cuts
  replica_loss            the replica's summed per-example loss / the GLOBAL batch B
                          (tf.nn.compute_average_loss), so the replicas' gradients add up
                          to the whole batch's
  strategy.run            runs the step on every replica at once, each on its shard
  all-reduce              optimizer.apply_gradients inside a replica sums the gradients over
                          the replicas (replica_ctx.all_reduce) before the same update
                          everywhere; strategy.reduce adds up the replicas' losses
  synchronize_batchnorm   keras.layers.BatchNormalization(synchronized=True): statistics of
                          the global batch, all-reduced per channel
`fit()` under the strategy does all of this itself (`fit_distributed`).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from keras_impl.zoo_model import arch_layers


def use_logical_cpus(count: int) -> None:
    """Split the CPU into `count` logical devices (/cpu:0 .. /cpu:count-1), so
    MirroredStrategy can place one replica on each. TensorFlow accepts this only before
    it first uses a device: call it at the start of the program. A no-op when the
    devices are already there; RuntimeError with a one-line reason otherwise."""
    cpu = tf.config.list_physical_devices("CPU")[0]  # physical: starts nothing yet
    if len(tf.config.get_logical_device_configuration(cpu) or [None]) >= count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        raise RuntimeError(f"TensorFlow's devices are already set up in this process: "
                           f"{count} logical CPUs must be asked for before TensorFlow "
                           "first runs anything (run in a fresh process)") from None


def replica_devices(replicas: int) -> list[str]:
    """K GPUs when the machine has that many, else K logical CPUs (`use_logical_cpus`)."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) >= replicas:
        return [gpu.name for gpu in gpus[:replicas]]
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) < replicas:
        raise RuntimeError(f"{replicas} replicas need {replicas} devices, TensorFlow has "
                           f"{len(cpus)} CPU and {len(gpus)} GPU: call "
                           f"use_logical_cpus({replicas}) at the start of the program")
    return [cpu.name for cpu in cpus[:replicas]]


def mirrored_strategy(replicas: int) -> tf.distribute.MirroredStrategy:
    """MirroredStrategy with one replica per device of `replica_devices`. On logical CPUs
    the all-reduce adds the replicas' tensors on one device (ReductionToOneDevice):
    collective ops would number their all-reduces per strategy, and two strategies in
    one process then clash; GPUs keep TensorFlow's choice (NCCL)."""
    devices = replica_devices(replicas)
    on_cpus = all("CPU" in device for device in devices)
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice() if on_cpus else None)


def synchronize_batchnorm(model) -> int:
    """Make every BatchNormalization layer of the model synchronized (statistics of the
    global batch, all-reduced per channel; call before the model first runs). Returns
    how many layers that was."""
    layers = [layer for layer in arch_layers(model)
              if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = True
    return len(layers)


def distribute_batches(strategy, make_global_dataset, global_batch: int):
    """The distributed dataset whose replica k gets rows k*B/K .. (k+1)*B/K - 1 of every
    global batch of `make_global_dataset()` (batches of exactly B = global_batch).

    `make_global_dataset` is called once per input pipeline (once per worker), so
    every worker builds the same seeded batches and keeps its own part of each.
    """
    def dataset_fn(context: tf.distribute.InputContext):
        per_replica = context.get_per_replica_batch_size(global_batch)
        per_pipeline = global_batch // context.num_input_pipelines
        start = context.input_pipeline_id * per_pipeline
        part = make_global_dataset().map(
            lambda x, y: (x[start:start + per_pipeline], y[start:start + per_pipeline]))
        # one element per local replica, in replica order: replica i takes the i-th
        return part.rebatch(per_replica)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options)


def forward_without_dropout(model, x, training: bool = True):
    """The model's logits with its Dropout layers off; training=True runs BatchNorm on
    the batch's statistics (updating the moving ones), as in training. Runs that draw
    different dropout masks (two engines, or K replicas against one device) can then be
    compared number for number."""
    for layer in arch_layers(model):
        x = layer(x, training=training and not isinstance(layer, keras.layers.Dropout))
    return x


def replica_loss(model, x, y, global_batch: int, forward=None):
    """One replica's loss on its shard: summed cross-entropy / global_batch, plus its
    1/K share of the L2 penalty. forward(x) -> logits defaults to model(x, training=True)."""
    logits = forward(x) if forward is not None else model(x, training=True)
    per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
    if model.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
    return loss


def make_distributed_train_step(strategy, model, optimizer, global_batch: int, forward=None):
    """`train_step(x, y) -> global loss`: one synchronous step of every replica on its
    shard (x, y: one element of `distribute_batches`), as a tf.function."""

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            loss = replica_loss(model, x, y, global_batch, forward)
        gradients = tape.gradient(loss, model.trainable_variables)
        # in a replica, apply_gradients all-reduces (sums) the gradients first
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function(jit_compile=False)
    def train_step(x, y):
        losses = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return train_step


def make_distributed_gradients(strategy, model, global_batch: int, forward=None):
    """`gradients(x, y) -> (global loss, [all-reduced gradient per trainable variable])`
    without an update: what train_step hands the optimizer, as NumPy arrays."""

    def replica_gradients(x, y):
        with tf.GradientTape() as tape:
            loss = replica_loss(model, x, y, global_batch, forward)
        gradients = tape.gradient(loss, model.trainable_variables)
        return loss, tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, gradients)

    @tf.function(jit_compile=False)
    def step(x, y):
        loss, gradients = strategy.run(replica_gradients, args=(x, y))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                [strategy.experimental_local_results(g)[0] for g in gradients])

    def gradients(x, y):
        loss, grads = step(x, y)
        return float(loss), [g.numpy() for g in grads]

    return gradients


def evaluate(model, batches) -> float:
    """Accuracy of the model in inference mode over (x, y) batches (replica 0's weights
    and moving statistics: what a saved model holds)."""
    correct = seen = 0
    for x, y in batches:
        predicted = tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)
        correct += int(tf.reduce_sum(tf.cast(predicted == y, tf.int32)))
        seen += int(tf.shape(y)[0])
    return correct / seen


def fit_distributed(strategy, model, optimizer, train_ds, epochs: int = 1) -> dict:
    """compile() and fit() under the strategy: Keras distributes the global batches of
    train_ds itself. The model and optimizer must have been made in strategy.scope()."""
    with strategy.scope():
        model.compile(optimizer=optimizer, jit_compile=False, metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(train_ds, epochs=epochs, verbose=0, shuffle=False)
    return {key: [float(v) for v in values] for key, values in history.history.items()}
