"""`python compare.py bench`: seconds per epoch of both implementations, measured in one run.

For every model: the NumPy engine, Keras `fit()` and the Keras custom loop (as
`keras_impl.runner.run_custom` runs it: `make_train_steps`, STEPS_PER_CALL steps per
call) train on the same pipeline (batch 128) for a fraction of an epoch after a
warm-up (tracing, caches), scaled to the 55,000-image epoch. Also measured in the
same run: this machine's matmul peak (NumPy and TensorFlow, float32), each engine's
achieved GFLOP/s, the peak resident memory of a NumPy training of the model
(comparison.memory, in a fresh process), and what the tf.data pipeline
costs the custom loop:

    pipeline share = 1 - (custom loop on one batch repeated from memory)
                         / (custom loop on the pipeline's batches)

i.e. the part of an epoch that would go if the batches cost nothing to make (the
step's compute does not depend on the pixel values). Both are timed ROUNDS times,
alternating, and the fastest of each is used: the machine is shared and noisy; so
are NumPy (on 1 and on 2 BLAS threads) and fit(), alternating. For reference, also
the pipeline alone: its batches drawn in a graph loop, no training.
"""
from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from rich.table import Table
from threadpoolctl import threadpool_limits

from keras_impl.data import make_dataset
from keras_impl.zoo_model import build_sequential
from keras_impl.multistep import STEPS_PER_CALL, make_train_steps
from comparison import benchreadme
from comparison.memory import numpy_training_peak_mb
from comparison.twin import optimizer_pair, twin_pair
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


def bench_model(name: str, fraction: float, data_dir=None) -> dict:
    steps = max(1, int(fraction * EPOCH_IMAGES / BATCH))
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

    # NumPy (TensorFlow uses both cores; NumPy's CLI defaults to 1 thread) and fit(),
    # alternating, the fastest of ROUNDS each: the ratio of the two is the headline.
    numpy_times, fit_times = {1: [], 2: []}, []
    for _ in range(ROUNDS):
        for threads in (1, 2):
            with threadpool_limits(limits=threads, user_api="blas"):
                numpy_times[threads].append(time_loop(numpy_step, batches))
        start = time.perf_counter()
        sequential.fit(batches.skip(WARMUP_STEPS), shuffle=False, verbose=0)
        fit_times.append(time.perf_counter() - start)
    numpy_seconds = {threads: min(times) for threads, times in numpy_times.items()}
    fit_seconds = min(fit_times)

    train_steps = make_train_steps(pair.keras_model, keras_opt, pair.loss_fn)
    # One batch again and again, straight from memory: the same compute, no pipeline.
    repeated = tf.data.Dataset.from_tensors(next(iter(batches))).repeat(len(batches))
    custom_times, repeated_times = [], []
    for _ in range(ROUNDS):
        custom_times.append(time_custom_loop(train_steps, batches))
        repeated_times.append(time_custom_loop(train_steps, repeated))
    custom_seconds, repeated_seconds = min(custom_times), min(repeated_times)
    pipeline_seconds = min(time_pipeline_alone(batches) for _ in range(ROUNDS))

    scale = EPOCH_IMAGES / (steps * BATCH)
    flops = training_flops(name) * steps * BATCH
    result = {"fraction_timed": steps * BATCH / EPOCH_IMAGES}
    for key, seconds in (("numpy_1thread", numpy_seconds[1]), ("numpy", numpy_seconds[2]),
                         ("keras_custom", custom_seconds), ("keras_fit", fit_seconds),
                         ("keras_custom_batches_in_memory", repeated_seconds),
                         ("pipeline_alone", pipeline_seconds)):
        result[f"{key}_s_per_epoch"] = seconds * scale
        if key != "pipeline_alone":
            result[f"{key}_gflops"] = flops / seconds / 1e9
    result["ratio_numpy_over_fit"] = numpy_seconds[2] / fit_seconds
    result["ratio_numpy_1thread_over_fit"] = numpy_seconds[1] / fit_seconds
    result["ratio_custom_over_fit"] = custom_seconds / fit_seconds
    result["pipeline_share"] = 1 - repeated_seconds / custom_seconds
    result["pipeline_alone_share"] = pipeline_seconds / custom_seconds
    result["numpy_peak_rss_mb"] = numpy_training_peak_mb(name, data_dir)
    return result


def bench_tables(results: dict) -> list[Table]:
    """The measurements of `main` as two tables that fit 80 columns: seconds per epoch,
    then the ratios and throughputs."""
    seconds = Table(title="Seconds per 55,000-image epoch (batch 128, Adam), fastest of "
                          f"{ROUNDS} rounds; "
                          "NumPy with 2 BLAS threads (1 thread in brackets)")
    for column in ("model", "timed", "NumPy", "Keras fit", "Keras custom", "NumPy peak MB"):
        seconds.add_column(column, justify="left" if column == "model" else "right")
    speed = Table(title="Relative to Keras fit() (NumPy: 1 BLAS thread in brackets), "
                        "and throughput")
    for column in ("model", "NumPy/fit", "custom/fit", "NumPy GFLOP/s", "fit GFLOP/s",
                   "pipeline share"):
        speed.add_column(column, justify="left" if column == "model" else "right")
    for name, r in results["models"].items():
        seconds.add_row(name, f"{r['fraction_timed']:.0%}",
                        f"{r['numpy_s_per_epoch']:.1f} ({r['numpy_1thread_s_per_epoch']:.1f})",
                        f"{r['keras_fit_s_per_epoch']:.1f}",
                        f"{r['keras_custom_s_per_epoch']:.1f}", f"{r['numpy_peak_rss_mb']:,.0f}")
        speed.add_row(name, f"{r['ratio_numpy_over_fit']:.2f} "
                            f"({r['ratio_numpy_1thread_over_fit']:.2f})",
                      f"{r['ratio_custom_over_fit']:.2f}", f"{r['numpy_gflops']:.1f}",
                      f"{r['keras_fit_gflops']:.1f}", f"{r['pipeline_share']:.1%}")
    return [seconds, speed]


def add_arguments(parser) -> None:
    """`python compare.py bench`'s own options."""
    parser.add_argument("--readme", type=benchreadme.readme_file, metavar="FILE",
                        help="write the results table, with the targets, into this "
                             "Markdown file (between its bench-table marker lines)")


def main(args, console) -> dict:
    names = args.model or list(FRACTIONS)
    peak = matmul_peak()
    console.print(f"matmul peak (1024x1024 float32): NumPy {peak['numpy']:.1f} GFLOP/s, "
                  f"TensorFlow {peak['tensorflow']:.1f} GFLOP/s")
    results = {"matmul_peak_gflops": peak, "batch_size": BATCH, "models": {}}
    for name in names:
        results["models"][name] = bench_model(name, FRACTIONS.get(name, 0.25), args.data_dir)
    for table in bench_tables(results):
        console.print(table)
    if args.readme:
        benchreadme.rewrite_readme(args.readme, benchreadme.bench_markdown(results))
        console.print(f"table with the targets: {args.readme}")
    return results
