"""`python compare.py parallel`: data parallelism by hand (scratch.parallel) against
tf.distribute (keras_impl.distribute), number for number.

    python compare.py parallel --model convnet --replicas 4 [--sync-bn] [--json F]
    python compare.py parallel --model fc16 --workers 2      # MultiWorkerMirroredStrategy

Tables, on one global batch split over K replicas (K logical CPUs, or K GPUs):
  1. the all-reduced K-replica gradient against the single-device gradient of the whole
     batch, float64 elementwise, in NumPy and in Keras: equal to rounding without
     BatchNorm or with --sync-bn; with per-replica BatchNorm, how far apart they are;
  2. NumPy K replicas against Keras K replicas: float64 elementwise (<= 1e-7) and
     float32 norm-wise (<= 1e-4), as `python compare.py` judges one device;
  3. lockstep: both K-replica trainings on the same batches, the largest loss difference;
  4. K = 1, 2, 4, ... at a fixed per-replica batch: the global batch, the scaled learning
     rate, one epoch of the Keras custom loop and of fit() under the strategy, the
     validation accuracy and the seconds it took (--limit for a quick run).
--workers W instead runs the custom loop in W worker processes on 127.0.0.1
(keras_impl.multiworker) and checks them against one process with W replicas and
against the NumPy replicas. Exit 1 when a check that must agree does not.
"""
from __future__ import annotations

import functools
import math
import time

import numpy as np
from rich.table import Table

from plumbing.args import at_most, batch_size, output_file, positive_int, seed_number
from scratch import zoo
from scratch.cli import add_optimizer_args, check_optimizer_args, model_name
from scratch.optim import DEFAULT_LR

MAX_REPLICAS = 16
SWEEP = (1, 2, 4)
# Multi-worker against one process: the same all-reduce of W float64 gradients, so the
# losses agree to the last bits; this allows for another order of the additions.
WORKER_TOLERANCE = 1e-12


def add_arguments(parser) -> None:
    parser.add_argument("--model", type=model_name, default="fc128", help="default fc128")
    parser.add_argument("--replicas", type=at_most(positive_int, MAX_REPLICAS), default=2,
                        metavar="K", help="replicas (devices) of tables 1-3 (default 2)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="synchronized BatchNorm: statistics of the global batch")
    parser.add_argument("--batch-size", type=batch_size, default=64,
                        help="global batch of tables 1-3, divisible by K (default 64)")
    parser.add_argument("--seed", type=seed_number, default=0)
    parser.add_argument("--lockstep-steps", type=positive_int, default=50)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="precision of the lockstep part")
    add_optimizer_args(parser)
    parser.add_argument("--sweep", type=at_most(positive_int, MAX_REPLICAS), nargs="*",
                        default=list(SWEEP), metavar="K",
                        help="replica counts of table 4 (default 1 2 4; none: skip it)")
    parser.add_argument("--limit", type=positive_int,
                        help="table 4 trains on the first N training images only")
    parser.add_argument("--workers", type=at_most(positive_int, 8), metavar="W",
                        help="run the multi-worker check with W local worker processes")
    parser.add_argument("--json", type=output_file, help="write every number to this JSON file")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four MNIST IDX files (default: $MNIST_DIR)")


def check_arguments(parser, args) -> None:
    """The rules between the options; parser.error (exit 2) when one is broken."""
    check_optimizer_args(parser, args)
    replicas = args.workers or args.replicas
    if args.batch_size % replicas:
        parser.error(f"--batch-size {args.batch_size}: not divisible by {replicas} replicas")


def main(args, console) -> dict:
    from keras_impl import distribute

    distribute.use_logical_cpus(max(args.workers or args.replicas, *args.sweep, 1))
    if args.workers:
        return workers_section(args, console)
    result = {"model": args.model, "replicas": args.replicas, "sync_bn": args.sync_bn,
              "gradients": gradient_section(args, console),
              "lockstep": lockstep_section(args, console)}
    if args.sweep:
        result["sweep"] = sweep_section(args, console)
    result["passed"] = result["gradients"]["passed"]
    return result


# --- the two twins on K replicas ---------------------------------------------------


def replicated_pair(name, dtype, replicas, seed, sync_bn):
    """(twin pair on one device, NumPy DataParallel, Keras model under a K-replica
    MirroredStrategy, the strategy): four copies of the same initial weights."""
    from comparison import layout, twin
    from keras_impl import distribute
    from keras_impl.zoo_model import build_twinnet
    from scratch.parallel import DataParallel

    pair = twin.twin_pair(name, dtype, seed)
    strategy = distribute.mirrored_strategy(replicas)
    with twin.keras_floatx(dtype), strategy.scope():
        keras_model = build_twinnet(name)
    if sync_bn:
        distribute.synchronize_batchnorm(keras_model)
    layout.to_keras(pair.numpy_model, keras_model)
    return pair, DataParallel(pair.numpy_model, replicas, sync_bn), keras_model, strategy


def one_batch(strategy, x, y):
    """The global batch x, y as one element of a distributed dataset (shard k on replica k)."""
    import tensorflow as tf

    from keras_impl import distribute

    dataset = distribute.distribute_batches(
        strategy, functools.partial(tf.data.Dataset.from_tensors, (x, y)), len(y))
    return next(iter(dataset))


def gradients_of(args, dtype, x, y) -> dict:
    """The four gradients of one global batch: NumPy and Keras, one device and K replicas."""
    from comparison import twin
    from keras_impl import distribute

    pair, replicas, keras_model, strategy = replicated_pair(
        args.model, dtype, args.replicas, args.seed, args.sync_bn)
    x = x.astype(dtype)
    labels = [f"{i}/{key}" for i, key, _ in pair.numpy_model.parameters()]
    loss_np_k, _ = replicas.loss_and_grads(x, y, dropout=False)
    replicas.all_reduce_gradients()
    numpy_k = dict(zip(labels, replicas.gradients().values()))
    loss_np_1, _ = pair.numpy_model.loss_and_grads(x, y, dropout=False)
    numpy_1 = {f"{i}/{key}": pair.numpy_model.layers[i].grads[key]
               for i, key, _ in pair.numpy_model.parameters()}
    loss_tf_1, keras_1 = twin.keras_loss_and_grads(pair, x, y)
    gradients = distribute.make_distributed_gradients(
        strategy, keras_model, len(y),
        forward=functools.partial(distribute.forward_without_dropout, keras_model))
    loss_tf_k, keras_k = gradients(*one_batch(strategy, x, y))
    zeros = {f"{i}/{key}" for i, key in pair.numpy_model.biases_before_batchnorm()}
    return {"numpy_1": numpy_1, "numpy_k": numpy_k, "keras_1": dict(zip(labels, keras_1)),
            "keras_k": dict(zip(labels, keras_k)), "zeros": zeros,
            "losses": {"numpy_1": loss_np_1, "numpy_k": loss_np_k, "keras_1": loss_tf_1,
                       "keras_k": loss_tf_k}}


def errors_between(grads, ours, theirs, measure):
    from comparison import twin

    pairs = {label: (grads[ours][label], grads[theirs][label]) for label in grads[ours]}
    elementwise, normwise = twin.gradient_errors(pairs, grads["zeros"])
    return elementwise if measure == "elementwise" else normwise


def gradient_section(args, console) -> dict:
    from comparison import twin
    from keras_impl.data import make_dataset

    ds = make_dataset("train", args.batch_size, flat=not zoo.has_conv(args.model),
                      seed=args.seed, data_dir=args.data_dir)
    x, y = next(ds.as_numpy_iterator())
    k = args.replicas
    grads = {dtype: gradients_of(args, dtype, x, y) for dtype in ("float64", "float32")}
    g64 = grads["float64"]
    split = {side: errors_between(g64, f"{side}_k", f"{side}_1", "elementwise")
             for side in ("numpy", "keras")}
    twins = {dtype: errors_between(grads[dtype], "numpy_k", "keras_k", twin.GRAD_MEASURE[dtype])
             for dtype in grads}
    has_bn = any(spec.kind == "batchnorm" for spec in zoo.architecture(args.model))
    must_match = not has_bn or args.sync_bn
    tolerance = twin.GRAD_TOLERANCE["float64"]
    bn = " per-replica BN" if has_bn and not args.sync_bn else " sync BN" if has_bn else ""
    table = Table(title=f"{args.model}: {k} replicas x {len(y) // k} vs one device x "
                        f"{len(y)}{bn} (rel. error)")
    for column in ("variable", f"NumPy {k} vs 1", f"Keras {k} vs 1", "NumPy-Keras f64",
                   "NumPy-Keras f32"):
        table.add_column(column, justify="left" if column == "variable" else "right")
    for label in split["numpy"]:
        shown = label + (" (0)" if label in g64["zeros"] else "")
        table.add_row(shown, *(f"{e[label]:.1e}" for e in (split["numpy"], split["keras"],
                                                           twins["float64"], twins["float32"])))
    worst_split = max(max(e.values()) for e in split.values())
    split_ok = worst_split <= tolerance
    twin_ok = {dtype: max(errors.values()) <= twin.GRAD_TOLERANCE[dtype]
               for dtype, errors in twins.items()}
    verdict = ("agree" if split_ok else "DIFFER") if must_match else (
        "differ, as expected" if not split_ok else "agree")
    table.add_row("verdict", verdict, verdict, *("pass" if twin_ok[d] else "FAIL" for d in twins),
                  style="bold")
    table.caption = (f"float64 elementwise (<= {tolerance:g}) unless noted; f32: norm-wise "
                     f"(<= {twin.GRAD_TOLERANCE['float32']:g}). (0): 0 in exact arithmetic.")
    console.print(table)
    one_device_f32 = max(errors_between(grads["float32"], "numpy_1", "keras_1",
                                        "normwise").values())
    console.print(f"NumPy vs Keras float32 on ONE device (compare.py's own check), same "
                  f"batch: norm-wise {one_device_f32:.1e}")
    losses = g64["losses"]
    console.print(f"loss (float64): one device NumPy {losses['numpy_1']:.12f} Keras "
                  f"{losses['keras_1']:.12f}; {k} replicas NumPy {losses['numpy_k']:.12f} "
                  f"Keras {losses['keras_k']:.12f}")
    if has_bn and not args.sync_bn:
        console.print(f"Per-replica BatchNorm normalises each shard of {len(y) // k} with its "
                      f"own statistics: {k} replicas compute another function than one "
                      f"device (largest difference {worst_split:.1e}); --sync-bn restores it.")
    return {"k_vs_one_device": split, "numpy_vs_keras": twins,
            "k_vs_one_device_max": worst_split, "k_vs_one_device_agree": split_ok,
            "must_agree": must_match, "losses": {d: g["losses"] for d, g in grads.items()},
            "numpy_vs_keras_passed": twin_ok, "one_device_float32_normwise": one_device_f32,
            "passed": all(twin_ok.values()) and (split_ok or not must_match)}


def lockstep_section(args, console) -> dict:
    """Both K-replica twins trained on the same global batches, dropout off."""
    import tensorflow as tf

    from comparison import layout, twin
    from keras_impl import distribute
    from keras_impl.data import make_dataset

    pair, replicas, keras_model, strategy = replicated_pair(
        args.model, args.dtype, args.replicas, args.seed, args.sync_bn)
    with strategy.scope():
        keras_opt, numpy_opt = twin.optimizer_pair(args.optimizer, args.lr, args.momentum,
                                                   args.nesterov)
    ds = make_dataset("train", args.batch_size, flat=not zoo.has_conv(args.model),
                      seed=args.seed, data_dir=args.data_dir, drop_remainder=True)
    batches = list(ds.repeat().take(args.lockstep_steps).as_numpy_iterator())
    x = np.stack([b[0] for b in batches]).astype(args.dtype)
    y = np.stack([b[1] for b in batches])
    numpy_losses = [replicas.train_step(xb, yb, numpy_opt, dropout=False) for xb, yb in
                    zip(x, y)]
    step = distribute.make_distributed_train_step(
        strategy, keras_model, keras_opt, args.batch_size,
        forward=functools.partial(distribute.forward_without_dropout, keras_model))
    dataset = distribute.distribute_batches(
        strategy, functools.partial(tf.data.Dataset.from_tensor_slices, (x, y)), args.batch_size)
    keras_losses = [float(step(xs, ys)) for xs, ys in dataset]
    diffs = [abs(a - b) for a, b in zip(numpy_losses, keras_losses)]
    weights = {label: twin.normwise_rel_error(variable.numpy(), layer.params[key])
               for label, variable, layer, key in layout.paired_weights(keras_model,
                                                                       replicas.replicas[0])}
    console.print(f"lockstep: {len(diffs)} {args.optimizer} steps of {args.replicas} replicas "
                  f"({args.dtype}, dropout off): loss {numpy_losses[0]:.4f} -> NumPy "
                  f"{numpy_losses[-1]:.6f}, Keras {keras_losses[-1]:.6f}; largest loss "
                  f"difference {max(diffs):.2e}; weights after (replica 0, norm-wise) "
                  f"{max(weights.values()):.1e}; NumPy replicas identical: "
                  f"{replicas.max_replica_difference() == 0.0}")
    return {"numpy": numpy_losses, "keras": keras_losses, "max_abs_diff": max(diffs),
            "weights_max_diff": max(weights.values()), "dtype": args.dtype,
            "numpy_replicas_identical": replicas.max_replica_difference() == 0.0}


# --- how K changes a training ---------------------------------------------------------


def scaled_lr(optimizer: str, base: float, replicas: int) -> tuple[float, str]:
    """The learning rate for K replicas at a fixed per-replica batch (K times the global
    batch): linear scaling for SGD (Goyal et al. 2017: the K summed steps of one big
    step), square-root scaling for Adam (its steps are normalised already)."""
    if optimizer == "sgd":
        return base * replicas, "linear (x K)"
    return base * math.sqrt(replicas), "square root (x sqrt K)"


def sweep_section(args, console) -> dict:
    """One epoch per K, Keras custom loop and fit() under a K-replica MirroredStrategy."""
    import keras

    from keras_impl import distribute, optimizers
    from keras_impl.data import make_dataset
    from keras_impl.zoo_model import build_twinnet

    per_replica = args.batch_size // args.replicas
    base = args.lr or DEFAULT_LR[args.optimizer]
    flat = not zoo.has_conv(args.model)
    val = list(make_dataset("val", 500, flat=flat, data_dir=args.data_dir))
    rows = []
    for k in args.sweep:
        lr, rule = scaled_lr(args.optimizer, base, k)
        strategy = distribute.mirrored_strategy(k)
        row = {"replicas": k, "global_batch": per_replica * k, "lr": lr, "rule": rule}

        def global_batches():
            return make_dataset("train", per_replica * k, flat=flat, seed=args.seed,
                                data_dir=args.data_dir, limit=args.limit, drop_remainder=True)

        for loop in ("custom", "fit"):
            keras.utils.set_random_seed(args.seed)
            with strategy.scope():
                model = build_twinnet(args.model)
                optimizer = optimizers.make_optimizer(args.optimizer, lr, args.momentum,
                                                      args.nesterov)
            if args.sync_bn:
                distribute.synchronize_batchnorm(model)
            started = time.perf_counter()
            with console.status(f"K = {k}: one epoch of the {loop} loop"):
                if loop == "custom":
                    step = distribute.make_distributed_train_step(strategy, model, optimizer,
                                                                  per_replica * k)
                    row["steps"] = 0
                    for x, y in distribute.distribute_batches(strategy, global_batches,
                                                              per_replica * k):
                        step(x, y)
                        row["steps"] += 1
                else:
                    distribute.fit_distributed(strategy, model, optimizer, global_batches())
            row[f"{loop}_seconds"] = time.perf_counter() - started
            row[f"{loop}_val_accuracy"] = distribute.evaluate(model, val)
        rows.append(row)
    table = Table(title=f"{args.model}: one epoch, {per_replica} images per replica, "
                        f"{args.optimizer} {base:g} at K = 1")
    for column in ("K", "batch", "lr", "steps", "loop s", "loop val", "fit() s", "fit() val"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["replicas"]), str(r["global_batch"]), f"{r['lr']:.4g}",
                      str(r["steps"]), f"{r['custom_seconds']:.1f}",
                      f"{r['custom_val_accuracy']:.2%}", f"{r['fit_seconds']:.1f}",
                      f"{r['fit_val_accuracy']:.2%}")
    table.caption = (f"lr rule: {rows[0]['rule']}. K replicas on K logical CPUs share this "
                     "machine's cores: K GPUs would each take a shard in parallel.")
    console.print(table)
    return {"per_replica_batch": per_replica, "rows": rows}


# --- several workers ---------------------------------------------------------------


def workers_section(args, console) -> dict:
    """W worker processes (MultiWorkerMirroredStrategy) against one process with W
    replicas (MirroredStrategy) and against the NumPy replicas, float64 SGD."""
    from comparison import twin
    from keras_impl import distribute, multiworker
    from scratch.model import build_model
    from scratch.optim import SGD
    from scratch.parallel import DataParallel

    w, steps, lr = args.workers, min(args.lockstep_steps, 20), args.lr or 0.05
    options = ["--model", args.model, "--steps", str(steps), "--batch-size",
               str(args.batch_size), "--lr", str(lr), "--seed", str(args.seed)]
    if args.data_dir:
        options += ["--data-dir", args.data_dir]
    started = time.perf_counter()
    with console.status(f"{w} workers on 127.0.0.1, {steps} steps each"):
        workers = multiworker.launch_local(w, options)
    seconds = time.perf_counter() - started
    batches = multiworker.fixed_batches(args.model, args.batch_size, steps, args.data_dir)
    with twin.keras_floatx("float64"):
        single_losses, single_weights = multiworker.train_replicated(
            distribute.mirrored_strategy(w), args.model, batches, lr, args.seed)
    replicas = DataParallel(build_model(args.model, seed=args.seed).astype(np.float64), w)
    numpy_losses = [replicas.train_step(x, y, SGD(lr), dropout=False) for x, y in batches]
    numpy_weights = [value for _, _, value in replicas.replicas[0].weights()]

    def largest(a, b):
        return max(float(np.abs(np.asarray(p) - np.asarray(q)).max()) for p, q in zip(a, b))

    worker_weights = [[result[f"weight_{i}"] for i in range(len(single_weights))]
                      for result in workers]
    rows = {"workers vs each other": (largest(workers[0]["losses"], workers[-1]["losses"]),
                                      largest(worker_weights[0], worker_weights[-1])),
            f"workers vs 1 process, {w} replicas": (
                largest(workers[0]["losses"], single_losses),
                largest(worker_weights[0], single_weights)),
            f"workers vs NumPy, {w} replicas": (largest(workers[0]["losses"], numpy_losses),
                                                largest(worker_weights[0], numpy_weights))}
    table = Table(title=f"{args.model}: {w} workers x 1 replica, {steps} SGD steps, "
                        f"float64 (largest |difference|)")
    for column in ("compared", "losses", "weights"):
        table.add_column(column, justify="left" if column == "compared" else "right")
    for label, (loss_diff, weight_diff) in rows.items():
        table.add_row(label, f"{loss_diff:.1e}", f"{weight_diff:.1e}")
    passed = (max(rows["workers vs each other"]) == 0.0
              and max(rows[f"workers vs 1 process, {w} replicas"]) <= WORKER_TOLERANCE
              and max(rows[f"workers vs NumPy, {w} replicas"]) <= 1e-9)
    table.caption = (f"loss {single_losses[0]:.6f} -> {single_losses[-1]:.6f}; workers "
                     f"started, trained and finished in {seconds:.1f} s")
    console.print(table)
    console.print("multi-worker check: " + ("[green]pass[/]" if passed else "[red]FAIL[/]"))
    return {"workers": w, "steps": steps, "seconds": seconds,
            "losses": {"workers": [list(map(float, r["losses"])) for r in workers],
                       "one_process": single_losses, "numpy": numpy_losses},
            "differences": {label: {"losses": a, "weights": b} for label, (a, b) in rows.items()},
            "passed": passed}
