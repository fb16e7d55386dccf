"""`python compare.py profile`: where the milliseconds and the bytes of a training step go.

Per layer of both twins, side by side: forward and backward milliseconds per batch,
the forward FLOPs with their formula (`scratch.registry`'s `flops`, 2 per
multiply-add: conv2d_0 of convnet does 2*26*26*9*32*B), the GFLOP/s achieved against
this machine's matmul peak, and the bytes of each layer's output and of the im2col
buffer the NumPy convolution builds (and keeps for its backward pass).

NumPy is timed function by function inside real training steps (`loss_and_grads`,
then Adam) on NUMPY_BLAS_THREADS BLAS thread, the NumPy CLI's default, in CPU time of
the one thread doing the work (the mean over STEPS steps); what the layers leave of
the step is Adam and the loss with the Python around them.

Keras is timed the same way, on TensorFlow's own threads, in wall-clock time: a
training step run layer by layer, each layer's forward pass one tf.function call
and its backward pass another (GradientTape's vector-Jacobian product of that layer
alone: the gradients of its weights and input from the gradient of its output),
then the loss and its gradient, then Adam, each call timed (the mean over STEPS
steps). Those parts add up to the layer-by-layer step; the rest is Python. The
fused `train_step` of keras_impl.train, one graph for all of it, is timed too:
what it saves against the layer-by-layer step is what TensorFlow gains by seeing
the whole step at once (fewer calls, operations overlapped on the two cores).
"""
from __future__ import annotations

import logging
import time

import numpy as np
import tensorflow as tf
from rich import box
from rich.table import Table
from threadpoolctl import threadpool_limits

from comparison.benchtimes import layer_flops, matmul_peak
from keras_impl.zoo_model import arch_layers
from comparison.params import DEFAULT_MODELS
from comparison.twin import optimizer_pair, twin_pair
from plumbing.files import write_figure
from keras_impl.data import make_dataset
from keras_impl.train import make_train_step
from plumbing.args import at_most, figure_file, positive_int
from scratch import zoo

WARMUP_STEPS = 2
STEPS = 10  # timed training steps (NumPy) and calls per Keras graph
NUMPY_BLAS_THREADS = 1  # busy-waiting OpenBLAS threads slow down badly on shared cores
MB = 1e6


def best_ms(fn, calls: int = STEPS) -> float:
    """Milliseconds of the fastest of `calls` calls of fn() after a warm-up call."""
    fn()
    fastest = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        fastest = min(fastest, time.perf_counter() - start)
    return fastest * 1e3


def work_rows(name: str, batch_size: int) -> list[dict]:
    """Per layer: output shape, forward and backward FLOPs with the formula, the bytes
    of its output and of the NumPy im2col buffer, and whether the step's backward
    pass runs through it (from the first weighted layer on).

    Backward FLOPs are twice the forward's (the weight gradient and the input
    gradient, one product each), once for the first weighted layer (no input gradient).
    """
    rows = zoo.param_rows(name)
    first_weighted = next(i for i, row in enumerate(rows) if row.count)
    shape, result = zoo.INPUT_SHAPE, []
    for i, (spec, row, (formula, flops)) in enumerate(zip(zoo.architecture(name), rows,
                                                           layer_flops(name))):
        im2col = 0
        if spec.kind == "conv2d":  # one row per output position: its patch and a 1
            h, w, _ = row.output_shape
            im2col = batch_size * h * w * (spec.kernel_size ** 2 * shape[-1] + 1) * 4
        result.append({
            "layer": row.layer, "output_shape": list(row.output_shape),
            "flops_formula": f"{formula}*B" if flops else "-",
            "forward_flops": flops * batch_size,
            "backward_flops": flops * batch_size * (1 if i == first_weighted else 2),
            "activation_bytes": batch_size * int(np.prod(row.output_shape)) * 4,
            "im2col_bytes": im2col, "in_backward": i >= first_weighted})
        shape = row.output_shape
    return result


def numpy_times(model, batches) -> dict:
    """Mean ms per training step (loss_and_grads, then Adam) after the warm-up ones:
    every layer's forward and backward, Adam, and the whole step. Timed in CPU seconds
    of this thread, which on one BLAS thread does all the work: what the step takes on
    an idle core, whatever else the machine runs. Means add up: the layers and Adam
    are parts of the step, the rest is the loss and Python."""
    seconds = {}
    for layer in model.layers:  # instance attributes in front of the class's methods
        for step in ("forward", "backward"):
            def timed(*args, _fn=getattr(layer, step), _key=f"{layer.name}/{step}", **kwargs):
                start = time.thread_time()
                out = _fn(*args, **kwargs)
                seconds[_key] = seconds.get(_key, 0.0) + time.thread_time() - start
                return out
            setattr(layer, step, timed)
    _, optimizer = optimizer_pair("adam", 1e-3)
    with threadpool_limits(limits=NUMPY_BLAS_THREADS, user_api="blas"):
        for i, (x, y) in enumerate(batches):
            if i == WARMUP_STEPS:
                seconds.clear()
            start = time.thread_time()
            model.loss_and_grads(x, y, training=True)
            adam_start = time.thread_time()
            model.apply_gradients(optimizer)
            end = time.thread_time()
            seconds["adam"] = seconds.get("adam", 0.0) + end - adam_start
            seconds["step"] = seconds.get("step", 0.0) + end - start
    ms = {key: total / (len(batches) - WARMUP_STEPS) * 1e3 for key, total in seconds.items()}
    return {"layers": {f"{layer.name}/{step}": ms.get(f"{layer.name}/{step}", 0.0)
                       for layer in model.layers for step in ("forward", "backward")},
            "adam_ms": ms["adam"], "step_ms": ms["step"]}


class KerasLayerSteps:
    """One tf.function per layer for its forward and one for its backward pass, the
    loss with its gradient, and Adam's update: a Keras training step as parts.

    input_grads[i]: whether layer i's backward returns its input gradient (every layer
    but the first weighted one and those before it).
    """

    def __init__(self, layers, loss_fn, optimizer, input_grads):
        self.layers = layers
        self.forward = [tf.function(lambda x, layer=layer: layer(x, training=True))
                        for layer in layers]
        self.backward = [tf.function(lambda x, dy, layer=layer, wanted=wanted:
                                     vector_jacobian(layer, x, dy, wanted))
                         for layer, wanted in zip(layers, input_grads)]
        self.loss = tf.function(lambda logits, y: vector_jacobian(
            lambda z, training: loss_fn(y, z), logits, None, True))
        self.variables = [v for layer in layers for v in layer.trainable_variables]
        self.apply = tf.function(lambda grads: optimizer.apply_gradients(
            zip(grads, self.variables)))

    def step(self, x, y, ms: dict) -> None:
        """One training step, part by part, each part's ms added to ms[part name]."""
        def timed(key, fn, *args):
            start = time.perf_counter()
            out = fn(*args)
            ms[key] = ms.get(key, 0.0) + (time.perf_counter() - start) * 1e3
            return out

        inputs = []
        for layer, forward in zip(self.layers, self.forward):
            inputs.append(x)
            x = timed(f"{layer.name}/forward", forward, x)
        dx, _ = timed("loss", self.loss, x, y)
        grads = {}
        for i in reversed(range(len(self.layers))):
            if dx is None:  # layers before the first weighted one: nothing to train
                break
            layer = self.layers[i]
            dx, grads[i] = timed(f"{layer.name}/backward", self.backward[i], inputs[i], dx)
        flat = [g for i in range(len(self.layers)) for g in grads.get(i, [])]
        timed("adam", self.apply, flat)


def vector_jacobian(layer, x, dy, input_grad: bool):
    """(dL/dx or None, [dL/dw for the layer's weights]) from dy = dL/d(layer's output);
    dy None: the layer's output is the loss itself."""
    weights = getattr(layer, "trainable_variables", [])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, training=True)
    grads = tape.gradient(out, [x, *weights], output_gradients=dy)
    return (grads[0] if input_grad else None), grads[1:]


def keras_times(pair, train_step, batches, rows) -> dict:
    """Mean ms per training step of each Keras layer's forward and backward, of the loss,
    of Adam and of the whole layer-by-layer step (KerasLayerSteps), on the batches after
    the warm-up ones; and the fused train_step's fastest time on batches[0]."""
    layers = arch_layers(pair.keras_model)
    optimizer, _ = optimizer_pair("adam", 1e-3)
    parts = KerasLayerSteps(layers, pair.loss_fn, optimizer,
                            [row["in_backward"] and i > 0 and rows[i - 1]["in_backward"]
                             for i, row in enumerate(rows)])
    ms = {}
    # Each function is traced once, but the layers' functions share their Python code,
    # which TensorFlow counts as retracing and warns about: not here.
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel(logging.ERROR)
    try:
        for i, (x, y) in enumerate(batches):
            if i == WARMUP_STEPS:
                ms.clear()
            start = time.perf_counter()
            parts.step(tf.constant(x), tf.constant(y), ms)
            ms["step"] = ms.get("step", 0.0) + (time.perf_counter() - start) * 1e3
    finally:
        logger.setLevel(level)
    ms = {key: total / (len(batches) - WARMUP_STEPS) for key, total in ms.items()}
    x, y = (tf.constant(a) for a in batches[0])
    return {"layers": {f"{layer.name}/{step}": ms.get(f"{layer.name}/{step}", 0.0)
                       for layer in layers for step in ("forward", "backward")},
            "loss_ms": ms["loss"], "adam_ms": ms["adam"], "step_ms": ms["step"],
            "fused_step_ms": best_ms(lambda: train_step(x, y).numpy())}


def measured_peak() -> dict:
    """benchtimes.matmul_peak with NumPy on the BLAS threads its layers are timed on."""
    with threadpool_limits(limits=NUMPY_BLAS_THREADS, user_api="blas"):
        return matmul_peak()


def profile_model(name: str, batch_size: int, data_dir=None, peak: dict | None = None) -> dict:
    """Everything `compare.py profile` reports for zoo model `name` (see the module docstring)."""
    rows = work_rows(name, batch_size)
    dataset = make_dataset("train", batch_size, flat=not zoo.has_conv(name), seed=0,
                           data_dir=data_dir, drop_remainder=True)
    batches = list(dataset.repeat().take(WARMUP_STEPS + STEPS).as_numpy_iterator())
    pair = twin_pair(name)
    keras_opt, _ = optimizer_pair("adam", 1e-3)
    train_step = make_train_step(pair.keras_model, keras_opt, pair.loss_fn)
    sides = {"numpy": numpy_times(pair.numpy_model, batches),
             "keras": keras_times(pair, train_step, batches, rows)}
    for side in sides.values():
        side["layers_ms"] = sum(side["layers"].values())
        side["outside_ms"] = side["step_ms"] - side["layers_ms"]
    for row in rows:
        for side, times in sides.items():
            row[side] = {step: times["layers"].get(f"{row['layer']}/{step}", 0.0)
                         for step in ("forward", "backward")}
    flops = sum(r["forward_flops"] + r["backward_flops"] for r in rows)
    for side in sides.values():  # Keras: as it trains, in one fused graph
        side["gflops"] = flops / side.get("fused_step_ms", side["step_ms"]) / 1e6
    return {"model": name, "batch_size": batch_size, "numpy_blas_threads": NUMPY_BLAS_THREADS,
            "layers": rows, "totals": sides, "step_flops": flops,
            "matmul_peak_gflops": peak or measured_peak()}


# --- output ------------------------------------------------------------------------------


def ms_text(ms: float) -> str:
    """Milliseconds with three or four significant digits: 0.12, 12.34, 123.4, 1234."""
    return f"{ms:.2f}" if ms < 100 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def gflops(row: dict, side: str, peak: float) -> str:
    """Achieved GFLOP/s of a layer's forward + backward, and the share of the matmul peak."""
    ms = row[side]["forward"] + row[side]["backward"]
    if not row["forward_flops"] or not ms:
        return ""
    rate = (row["forward_flops"] + row["backward_flops"]) / ms / 1e6
    return f"{rate:.0f} ({rate / peak:.0%})"


def print_tables(result: dict, console) -> None:
    """The time table and the work table (each under 80 columns) and the step's totals."""
    name, batch = result["model"], result["batch_size"]
    peak = result["matmul_peak_gflops"]
    times = Table(title=f"{name}: ms per batch of {batch} (NumPy on "
                        f"{result['numpy_blas_threads']} BLAS thread)", box=box.SIMPLE)
    for column in ("layer", "NumPy\nfwd", "NumPy\nbwd", "Keras\nfwd", "Keras\nbwd",
                   "NumPy\nGFLOP/s", "Keras\nGFLOP/s"):
        times.add_column(column, justify="left" if column == "layer" else "right")
    passes = [(side, step) for side in ("numpy", "keras") for step in ("forward", "backward")]
    for row in result["layers"]:
        times.add_row(row["layer"], *(ms_text(row[side][step]) for side, step in passes),
                      gflops(row, "numpy", peak["numpy"]),
                      gflops(row, "keras", peak["tensorflow"]))
    times.add_row("layers", *(ms_text(sum(r[side][step] for r in result["layers"]))
                              for side, step in passes), style="bold")
    numpy_side, keras_side = result["totals"]["numpy"], result["totals"]["keras"]
    console.print(times)
    work = Table(title=f"{name}: work and memory per batch of {batch} (B)", box=box.SIMPLE)
    for column in ("layer", "output", "forward FLOPs", "GFLOP\nfwd+bwd", "output\nMB",
                   "im2col\nMB"):
        work.add_column(column, justify="left" if column in ("layer", "forward FLOPs")
                        else "right")
    for row in result["layers"]:
        work.add_row(row["layer"], str(tuple(row["output_shape"])), row["flops_formula"],
                     f"{(row['forward_flops'] + row['backward_flops']) / 1e9:.3f}",
                     f"{row['activation_bytes'] / MB:.1f}",
                     f"{row['im2col_bytes'] / MB:.1f}" if row["im2col_bytes"] else "")
    console.print(work)
    console.print(
        f"NumPy step {numpy_side['step_ms']:.1f} ms = layers {numpy_side['layers_ms']:.1f} + "
        f"Adam {numpy_side['adam_ms']:.1f} + loss and Python "
        f"{numpy_side['outside_ms'] - numpy_side['adam_ms']:.1f}\n"
        f"Keras step {keras_side['step_ms']:.1f} ms = layers {keras_side['layers_ms']:.1f} + "
        f"loss {keras_side['loss_ms']:.1f} + Adam {keras_side['adam_ms']:.1f} + Python "
        f"{keras_side['outside_ms'] - keras_side['loss_ms'] - keras_side['adam_ms']:.1f}\n"
        f"  (layer by layer; as one fused graph, train_step takes "
        f"{keras_side['fused_step_ms']:.1f} ms)\n"
        f"GFLOP/s of the step: NumPy {numpy_side['gflops']:.0f}, Keras "
        f"{keras_side['gflops']:.0f}; matmul peak: NumPy {peak['numpy']:.0f}, TensorFlow "
        f"{peak['tensorflow']:.0f}")


def save_figure(results: list[dict], path) -> None:
    """Per model: for every layer a NumPy bar next to a Keras bar, each forward stacked
    under backward, then the rest of the step (loss, optimizer, Python)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(12, 4 * len(results)), squeeze=False)
    colors = {"numpy": "tab:orange", "keras": "tab:blue"}
    for ax, result in zip(axes[:, 0], results):
        labels = [row["layer"] for row in result["layers"]] + ["outside\nlayers"]
        positions = np.arange(len(labels))
        for offset, (side, color) in zip((-0.2, 0.2), colors.items()):
            totals = result["totals"][side]
            forward = [row[side]["forward"] for row in result["layers"]] + [0.0]
            backward = [row[side]["backward"] for row in result["layers"]]
            backward.append(max(0.0, totals["outside_ms"]))
            twin = {"numpy": "NumPy", "keras": "Keras"}[side]
            ax.bar(positions + offset, forward, 0.4, color=color,
                   label=f"{twin} forward (step {totals['step_ms']:.1f} ms)")
            ax.bar(positions + offset, backward, 0.4, bottom=forward, color=color, alpha=0.45,
                   hatch="//", label=f"{twin} backward; outside: the rest of the step")
        ax.set_xticks(positions, labels, rotation=45, ha="right", fontsize=8)
        ax.set(ylabel="ms per batch",
               title=f"{result['model']}: where a training step's time goes "
                     f"(batch {result['batch_size']})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(fig, path, dpi=90)
    plt.close(fig)


def add_arguments(parser) -> None:
    """`python compare.py profile`'s own options."""
    parser.add_argument("--batch-size", type=at_most(positive_int, 55_000), default=128)
    parser.add_argument("--figure", type=figure_file, help="stacked bars per layer")


def main(args, console) -> dict:
    peak = measured_peak()
    results = [profile_model(name, args.batch_size, args.data_dir, peak)
               for name in args.model or DEFAULT_MODELS]
    for result in results:
        print_tables(result, console)
    if args.figure:
        save_figure(results, args.figure)
        console.print(f"figure: {args.figure}")
    return {"matmul_peak_gflops": peak, "batch_size": args.batch_size,
            "models": {result["model"]: result for result in results}}
