"""The bench's measurements (comparison.bench is its command line): seconds per epoch of
both implementations, measured in one run.

For every model: the NumPy engine, Keras `fit()` and the Keras custom loop (as
`keras_impl.runner.run_custom` runs it: `make_train_steps`, STEPS_PER_CALL steps per
call) train on the same pipeline (batch 128) for a fraction of an epoch after a
warm-up (tracing, caches), scaled to the 55,000-image epoch. The NumPy engine is timed
as its commands run it (BLAS threads from the free CPUs) and on fixed thread counts.
Also measured in the same run: each engine's achieved GFLOP/s and the CPU cores it kept
busy, the peak resident memory of a NumPy training of the model (comparison.memory, in
a fresh process), and what the tf.data pipeline costs the custom loop:

    pipeline share = 1 - (custom loop on one batch repeated from memory)
                         / (custom loop on the pipeline's batches)

i.e. the part of an epoch that would go if the batches cost nothing to make (the
step's compute does not depend on the pixel values). Both are timed ROUNDS times,
alternating, and the fastest of each is used: the machine is shared and noisy; so
are the NumPy engines and fit(), alternating, each round idle and then (--busy N)
beside N CPU-bound processes. For reference, also the pipeline alone: its batches
drawn in a graph loop, no training.
"""
from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from threadpoolctl import threadpool_limits

from keras_impl.data import make_dataset
from keras_impl.zoo_model import build_sequential
from keras_impl.multistep import STEPS_PER_CALL, make_train_steps
from comparison.memory import numpy_training_peak_mb
from comparison.twin import optimizer_pair, twin_pair
from plumbing.cpus import BlasThreads, busy_processes, own_seconds, usable_cpus
from scratch import zoo
from scratch.registry import kind_of

EPOCH_IMAGES = 55_000
BATCH = 128
# Fraction of an epoch timed per model (the big CNNs are scaled from a part of an epoch).
# best is timed in training mode: BatchNorm on batch statistics, dropout on.
FRACTIONS = {"fc128": 1.0, "mlp500": 0.5, "convnet": 0.25, "cnn3": 0.05, "best": 0.05}
WARMUP_STEPS = 5
ROUNDS = 3


def layer_flops(name: str) -> list[tuple[str, int]]:
    """Per layer of zoo model `name`: its forward FLOPs per image and their formula, as
    `scratch.registry` declares them (0 for layers without a matmul)."""
    shape, result = zoo.INPUT_SHAPE, []
    for spec, row in zip(zoo.architecture(name), zoo.param_rows(name)):
        result.append(kind_of(spec).flops(spec, shape))
        shape = row.output_shape
    return result


def training_flops(name: str) -> int:
    """FLOPs per image of a training step: 3x the forward's, for the backward's two
    products (weight and input gradient) per layer."""
    return 3 * sum(flops for _, flops in layer_flops(name))


def matmul_peak(n: int = 1024, repeats: int = 10) -> dict:
    """Best-of GFLOP/s of an n x n float32 matmul in NumPy and in TensorFlow."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    flops = 2 * n ** 3

    def best(fn):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return flops / min(times) / 1e9

    ta = tf.constant(a)
    return {"numpy": best(lambda: a @ a), "tensorflow": best(lambda: (ta @ ta).numpy())}


def timed_batches(name: str, steps: int, data_dir=None):
    ds = make_dataset("train", BATCH, flat=not zoo.has_conv(name), seed=0, data_dir=data_dir,
                      drop_remainder=True)
    return ds.repeat().take(WARMUP_STEPS + steps)


def time_loop(step, batches) -> float:
    """Seconds for step(x, y) over the batches after the warm-up ones, drawn in Python."""
    total = 0.0
    iterator = iter(batches)
    for i in range(len(batches)):
        start = time.perf_counter()
        step(*next(iterator))
        if i >= WARMUP_STEPS:
            total += time.perf_counter() - start
    return total


def time_custom_loop(train_steps, batches) -> float:
    """Seconds for train_steps (drawing STEPS_PER_CALL batches per call in the graph) over
    the batches after the warm-up ones."""
    iterator = iter(batches)
    train_steps(iterator, tf.constant(WARMUP_STEPS)).numpy()
    chunk = tf.constant(STEPS_PER_CALL)
    start = time.perf_counter()
    while train_steps(iterator, chunk).shape[0] == STEPS_PER_CALL:
        pass
    return time.perf_counter() - start


@tf.function
def _drain(iterator):
    count = tf.constant(0)
    for _ in iterator:
        count += 1
    return count


def time_pipeline_alone(batches) -> float:
    """Seconds to draw the batches after the warm-up ones in a graph loop, no training."""
    iterator = iter(batches.skip(WARMUP_STEPS))
    start = time.perf_counter()
    _drain(iterator).numpy()
    return time.perf_counter() - start


# The engines timed against each other, in this order in every round: the NumPy engine as
# its commands run it (BLAS threads chosen from the free CPUs, plumbing.cpus), NumPy on a
# fixed count (every usable CPU, the BLAS default; and 1), and Keras fit().
ENGINES = ("numpy", "numpy_all_cpus", "numpy_1thread", "keras_fit")


def cores_used(run) -> tuple[float, float]:
    """(what run() returns: seconds, the CPU cores this process kept busy meanwhile)."""
    start_wall, start_cpu = time.perf_counter(), own_seconds()
    seconds = run()
    return seconds, (own_seconds() - start_cpu) / max(time.perf_counter() - start_wall, 1e-9)


def time_engines(numpy_step, fit, batches, busy: int, rounds: int) -> dict:
    """{engine: {"idle": [(seconds, cores)...], "busy": [...]}}: every engine of ENGINES
    timed over `batches` once per round, idle and then beside `busy` CPU-bound processes
    (none: idle only), so the machine's drift touches all of them alike."""
    loads = {"idle": 0, **({"busy": busy} if busy else {})}
    times = {engine: {load: [] for load in loads} for engine in ENGINES}

    def adaptive():
        with BlasThreads() as threads:  # its first look at the machine is not timed
            return time_loop(lambda x, y: (threads.adjust(), numpy_step(x, y)), batches)

    runs = {"numpy": adaptive,
            "numpy_all_cpus": lambda: time_loop(numpy_step, batches),
            "numpy_1thread": lambda: time_loop(numpy_step, batches),
            "keras_fit": fit}
    limits = {"numpy": None, "numpy_all_cpus": len(usable_cpus()), "numpy_1thread": 1,
              "keras_fit": None}
    for _ in range(rounds):
        for load, count in loads.items():
            with busy_processes(count):
                for engine in ENGINES:
                    with threadpool_limits(limits=limits[engine], user_api="blas"):
                        times[engine][load].append(cores_used(runs[engine]))
    return times


def bench_model(name: str, fraction: float, data_dir=None, busy: int = 0,
                rounds: int = ROUNDS, steps: int | None = None, extras: bool = True) -> dict:
    """One zoo model's measurements; `steps` (default: `fraction` of an epoch) batches
    timed per run. extras: also the custom loop, the pipeline's share and the peak memory."""
    steps = steps or max(1, int(fraction * EPOCH_IMAGES / BATCH))
    batches = timed_batches(name, steps, data_dir)
    list(batches.take(1))  # files read and pipeline built before anything is timed

    pair = twin_pair(name)
    keras_opt, numpy_opt = optimizer_pair("adam", 1e-3)
    model = pair.numpy_model

    def numpy_step(x, y):
        model.loss_and_grads(x.numpy(), y.numpy(), training=True)
        model.apply_gradients(numpy_opt)

    sequential = build_sequential(name)
    sequential.compile(optimizer=keras.optimizers.Adam(1e-3),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sequential.fit(batches.take(WARMUP_STEPS), shuffle=False, verbose=0)

    def fit():
        start = time.perf_counter()
        sequential.fit(batches.skip(WARMUP_STEPS), shuffle=False, verbose=0)
        return time.perf_counter() - start

    # every engine's fastest run of the rounds: the machine is shared and noisy
    times = time_engines(numpy_step, fit, batches, busy, rounds)
    idle = {engine: min(times[engine]["idle"]) for engine in ENGINES}
    scale = EPOCH_IMAGES / (steps * BATCH)
    flops = training_flops(name) * steps * BATCH
    result = {"fraction_timed": steps * BATCH / EPOCH_IMAGES}
    for engine, (seconds, cores) in idle.items():
        result[f"{engine}_s_per_epoch"] = seconds * scale
        result[f"{engine}_gflops"] = flops / seconds / 1e9
        result[f"{engine}_cores"] = cores
    if busy:
        result.update(slowdowns(times, idle, busy))
    fit_seconds = idle["keras_fit"][0]
    result["ratio_numpy_over_fit"] = idle["numpy"][0] / fit_seconds
    result["ratio_numpy_1thread_over_fit"] = idle["numpy_1thread"][0] / fit_seconds
    if extras:
        result.update(custom_loop_and_pipeline(pair, keras_opt, batches, fit_seconds, scale,
                                               flops))
        result["numpy_peak_rss_mb"] = numpy_training_peak_mb(name, data_dir)
    return result


def slowdowns(times: dict, idle: dict, busy: int) -> dict:
    """Each engine's seconds beside `busy` processes over its idle seconds, and its fair
    share: the slowdown of a program that kept `cores` CPUs busy alone when the machine's
    C usable CPUs are split evenly between it and the busy processes,
    max(1, cores * (busy + 1) / C)."""
    usable = len(usable_cpus())
    result = {"busy_processes": busy}
    for engine in ENGINES:
        seconds = min(times[engine]["busy"])[0]
        result[f"{engine}_busy_s"] = seconds
        result[f"{engine}_slowdown"] = seconds / idle[engine][0]
        result[f"{engine}_fair_slowdown"] = max(1.0, idle[engine][1] * (busy + 1) / usable)
    return result


def custom_loop_and_pipeline(pair, keras_opt, batches, fit_seconds, scale, flops) -> dict:
    """The Keras custom loop (idle), and what the pipeline costs it (see the docstring)."""
    train_steps = make_train_steps(pair.keras_model, keras_opt, pair.loss_fn)
    # One batch again and again, straight from memory: the same compute, no pipeline.
    repeated = tf.data.Dataset.from_tensors(next(iter(batches))).repeat(len(batches))
    custom_times, repeated_times = [], []
    for _ in range(ROUNDS):
        custom_times.append(time_custom_loop(train_steps, batches))
        repeated_times.append(time_custom_loop(train_steps, repeated))
    custom_seconds, repeated_seconds = min(custom_times), min(repeated_times)
    pipeline_seconds = min(time_pipeline_alone(batches) for _ in range(ROUNDS))
    result = {}
    for key, seconds in (("keras_custom", custom_seconds),
                         ("keras_custom_batches_in_memory", repeated_seconds),
                         ("pipeline_alone", pipeline_seconds)):
        result[f"{key}_s_per_epoch"] = seconds * scale
        if key != "pipeline_alone":
            result[f"{key}_gflops"] = flops / seconds / 1e9
    result["ratio_custom_over_fit"] = custom_seconds / fit_seconds
    result["pipeline_share"] = 1 - repeated_seconds / custom_seconds
    result["pipeline_alone_share"] = pipeline_seconds / custom_seconds
    return result
