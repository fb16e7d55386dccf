"""`python compare.py bench`: seconds per epoch of both implementations, measured in one run.

For every model: the NumPy engine, Keras `fit()` and the Keras custom loop train on the
same pipeline (batch 128) for a fraction of an epoch after a warm-up (tracing, caches),
scaled to the 55,000-image epoch. Also measured in the same run: this machine's matmul
peak (NumPy and TensorFlow, float32), each engine's achieved GFLOP/s, and the time the
input pipeline alone needs for the same batches (its share of an epoch).
"""
from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from rich.table import Table
from threadpoolctl import threadpool_limits

from keras_impl.data import make_dataset
from keras_impl.model import build_sequential
from keras_impl.train import make_train_step
from keras_impl.twin import optimizer_pair, twin_pair
from scratch import zoo

EPOCH_IMAGES = 55_000
BATCH = 128
# Fraction of an epoch timed per model (the big CNNs are scaled from a part of an epoch).
FRACTIONS = {"fc128": 1.0, "mlp500": 0.5, "convnet": 0.25, "cnn3": 0.05}
WARMUP_STEPS = 5


def training_flops(name: str) -> int:
    """Multiply-adds x 2 x 3 per image: forward, plus backward's two products per layer."""
    forward = 0
    for spec, row in zip(zoo.architecture(name), zoo.param_rows(name)):
        if spec.kind == "dense":
            forward += 2 * (row.count - spec.units)
        elif spec.kind == "conv2d":
            h, w, _ = row.output_shape
            forward += 2 * (row.count - spec.filters) * h * w
    return 3 * forward


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


def timed_batches(name: str, steps: int):
    ds = make_dataset("train", BATCH, flat=not zoo.has_conv(name), seed=0,
                      drop_remainder=True)
    return ds.repeat().take(WARMUP_STEPS + steps)


def time_loop(step, batches) -> tuple[float, float]:
    """(seconds, seconds spent waiting for the pipeline) over the batches after the warm-up."""
    total = waiting = 0.0
    iterator = iter(batches)
    for i in range(len(batches)):
        start = time.perf_counter()
        x, y = next(iterator)
        fetched = time.perf_counter()
        step(x, y)
        if i >= WARMUP_STEPS:
            waiting += fetched - start
            total += time.perf_counter() - start
    return total, waiting


def bench_model(name: str, fraction: float) -> dict:
    steps = max(1, int(fraction * EPOCH_IMAGES / BATCH))
    batches = timed_batches(name, steps)
    list(batches.take(1))  # fill the cache before anything is timed
    pipeline, _ = time_loop(lambda x, y: (x.numpy(), y.numpy()), batches)

    pair = twin_pair(name)
    keras_opt, numpy_opt = optimizer_pair("adam", 1e-3)
    model = pair.numpy_model

    def numpy_step(x, y):
        model.loss_and_grads(x.numpy(), y.numpy(), training=True)
        model.apply_gradients(numpy_opt)

    numpy_seconds = {}
    for threads in (1, 2):  # TensorFlow uses both cores; NumPy's CLI defaults to 1 thread
        with threadpool_limits(limits=threads, user_api="blas"):
            numpy_seconds[threads] = time_loop(numpy_step, batches)[0]
    train_step = make_train_step(pair.keras_model, keras_opt, pair.loss_fn)
    custom_seconds, custom_waiting = time_loop(lambda x, y: float(train_step(x, y)), batches)

    sequential = build_sequential(name)
    sequential.compile(optimizer=keras.optimizers.Adam(1e-3),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sequential.fit(batches.take(WARMUP_STEPS), verbose=0)
    start = time.perf_counter()
    sequential.fit(batches.skip(WARMUP_STEPS), verbose=0)
    fit_seconds = time.perf_counter() - start

    scale = EPOCH_IMAGES / (steps * BATCH)
    flops = training_flops(name) * steps * BATCH
    result = {"fraction_timed": steps * BATCH / EPOCH_IMAGES}
    for key, seconds in (("numpy_1thread", numpy_seconds[1]), ("numpy", numpy_seconds[2]),
                         ("keras_custom", custom_seconds), ("keras_fit", fit_seconds),
                         ("pipeline", pipeline)):
        result[f"{key}_s_per_epoch"] = seconds * scale
        result[f"{key}_gflops"] = flops / seconds / 1e9
    result["ratio_numpy_over_fit"] = numpy_seconds[2] / fit_seconds
    result["ratio_numpy_1thread_over_fit"] = numpy_seconds[1] / fit_seconds
    result["ratio_custom_over_fit"] = custom_seconds / fit_seconds
    # The custom loop's time blocked in next(iterator): what the pipeline costs training
    # (prefetching overlaps the rest); `pipeline` alone is the cost without overlap.
    result["pipeline_share"] = custom_waiting / custom_seconds
    result["pipeline_alone_share"] = pipeline / custom_seconds
    return result


def main(args, console) -> dict:
    names = args.model or list(FRACTIONS)
    peak = matmul_peak()
    console.print(f"matmul peak (1024x1024 float32): NumPy {peak['numpy']:.1f} GFLOP/s, "
                  f"TensorFlow {peak['tensorflow']:.1f} GFLOP/s")
    results = {"matmul_peak_gflops": peak, "batch_size": BATCH, "models": {}}
    table = Table(title="Seconds per 55,000-image epoch (batch 128, Adam), one run; "
                        "NumPy with 2 BLAS threads (1 thread in brackets)")
    for column in ("model", "timed", "NumPy", "Keras fit", "Keras custom", "NumPy/fit",
                   "custom/fit", "NumPy GFLOP/s", "fit GFLOP/s", "pipeline share"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in names:
        r = bench_model(name, FRACTIONS.get(name, 0.25))
        results["models"][name] = r
        table.add_row(name, f"{r['fraction_timed']:.0%}",
                      f"{r['numpy_s_per_epoch']:.1f} ({r['numpy_1thread_s_per_epoch']:.1f})",
                      f"{r['keras_fit_s_per_epoch']:.1f}", f"{r['keras_custom_s_per_epoch']:.1f}",
                      f"{r['ratio_numpy_over_fit']:.2f} "
                      f"({r['ratio_numpy_1thread_over_fit']:.2f})",
                      f"{r['ratio_custom_over_fit']:.2f}",
                      f"{r['numpy_gflops']:.1f}", f"{r['keras_fit_gflops']:.1f}",
                      f"{r['pipeline_share']:.1%}")
    console.print(table)
    return results
