"""Full training of both implementations on the very same tf.data batches (compare.py, part 5).

Each batch is drawn once from the shared pipeline and handed to both models: the Keras
model takes the tensors, the NumPy model `x.numpy()`. The wall time of each side's
step is measured separately, and so is the time spent waiting for the pipeline, so
seconds per epoch compare the two engines and not the input pipeline.
"""
from __future__ import annotations

import time

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from keras_impl.data import make_dataset
from keras_impl.train import EpochMetrics, make_test_step, make_train_step
from comparison.twin import TwinPair, optimizer_pair
from plumbing.cpus import BlasThreads
from scratch import zoo
from scratch.train import evaluate as numpy_evaluate


def keras_evaluate(test_step, metrics: EpochMetrics, batches) -> tuple[float, float]:
    """(mean loss, accuracy) of the Keras model over `batches`."""
    metrics.reset()
    for x, y in batches:
        test_step(x, y)
    result = metrics.result()
    return result["loss"], result["accuracy"]


def train_side_by_side(pair: TwinPair, args, console) -> dict:
    """Train pair.keras_model and pair.numpy_model for args.epochs on shared batches.

    Returns per side: per-step losses, per-epoch metrics (train/val loss and accuracy,
    seconds), seconds per epoch (mean), images per second, test accuracy; plus the share
    of the epoch spent waiting for the input pipeline.
    """
    flat = not zoo.has_conv(pair.name)
    common = dict(flat=flat, data_dir=args.data_dir, limit=args.limit)
    train = make_dataset("train", args.batch_size, seed=args.seed, **common)
    val = make_dataset("val", 1000, **{**common, "limit": None})
    test = make_dataset("test", 1000, **{**common, "limit": None})
    keras_opt, numpy_opt = optimizer_pair(args.optimizer, args.lr, args.momentum,
                                          args.nesterov)
    train_metrics, eval_metrics = EpochMetrics("train"), EpochMetrics("eval")
    train_step = make_train_step(pair.keras_model, keras_opt, pair.loss_fn, train_metrics)
    test_step = make_test_step(pair.keras_model, pair.loss_fn, eval_metrics)
    sides = {side: {"step_loss": [], "epochs": [], "seconds": []} for side in ("numpy", "keras")}
    pipeline_seconds = 0.0
    n_batches = sum(1 for _ in train)  # one pass also fills the pipeline's cache
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeRemainingColumn())
    # NumPy's BLAS threads: one per CPU the machine leaves free
    with Progress(*columns, console=console, transient=True) as progress, \
            BlasThreads() as threads:
        for epoch in range(1, args.epochs + 1):
            task = progress.add_task(f"{pair.name} epoch {epoch}/{args.epochs}", total=n_batches,
                                     status="")
            spent = {"numpy": 0.0, "keras": 0.0}
            tally = [0.0, 0, 0]  # NumPy's loss sum, correct, seen; Keras has train_metrics
            train_metrics.reset()
            waited = time.perf_counter()
            for x, y in train:
                start = time.perf_counter()
                pipeline_seconds += start - waited
                threads.adjust()
                y_np = y.numpy()
                loss_np, logits = pair.numpy_model.loss_and_grads(x.numpy(), y_np, training=True)
                pair.numpy_model.apply_gradients(numpy_opt)
                middle = time.perf_counter()
                loss_tf = float(train_step(x, y))  # float() waits for the step to finish
                waited = time.perf_counter()
                spent["numpy"] += middle - start
                spent["keras"] += waited - middle
                sides["numpy"]["step_loss"].append(float(loss_np))
                sides["keras"]["step_loss"].append(loss_tf)
                tally[0] += float(loss_np) * len(y_np)
                tally[1] += int(np.sum(logits.argmax(1) == y_np))
                tally[2] += len(y_np)
                progress.update(task, advance=1, status=f"loss NumPy {loss_np:.3f} "
                                                        f"Keras {loss_tf:.3f}")
            progress.remove_task(task)
            keras_train = train_metrics.result()
            train_scores = {"numpy": (tally[0] / tally[2], tally[1] / tally[2]),
                     "keras": (keras_train["loss"], keras_train["accuracy"])}
            evaluations = {"numpy": numpy_evaluate(pair.numpy_model, val.as_numpy_iterator()),
                           "keras": keras_evaluate(test_step, eval_metrics, val)}
            for side, record in sides.items():
                train_loss, train_acc = train_scores[side]
                val_loss, val_acc = evaluations[side]
                record["seconds"].append(spent[side])
                record["epochs"].append({"train_loss": train_loss,
                                         "train_accuracy": train_acc,
                                         "val_loss": val_loss, "val_accuracy": val_acc,
                                         "seconds": spent[side]})
                console.print(f"{pair.name} epoch {epoch} {side:>5}: {spent[side]:6.1f} s, "
                              f"train acc {train_acc:.4f}, val acc {val_acc:.4f}")
    n_images = tally[2]  # images per epoch
    results = {}
    for side, record in sides.items():
        per_epoch = float(np.mean(record["seconds"]))
        results[side] = {**record, "seconds_per_epoch": per_epoch,
                         "images_per_second": n_images / per_epoch}
    results["numpy"]["steps_per_blas_thread_count"] = dict(threads.history)
    results["numpy"]["test_accuracy"] = numpy_evaluate(pair.numpy_model,
                                                       test.as_numpy_iterator())[1]
    results["keras"]["test_accuracy"] = keras_evaluate(test_step, eval_metrics, test)[1]
    total = sum(results[s]["seconds_per_epoch"] for s in sides) * args.epochs
    results["pipeline_share"] = pipeline_seconds / (pipeline_seconds + total)
    results["ratio_numpy_over_keras"] = (results["numpy"]["seconds_per_epoch"]
                                         / results["keras"]["seconds_per_epoch"])
    return results
