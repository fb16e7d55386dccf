"""The NumPy model trained epoch by epoch on the Keras side's tf.data batches.

    report = run(args, settings, augmentation)   # args: comparison.scratch_train's

The loops are scratch.train's (NumPy only); this driver feeds them the batches of
keras_impl.data's pipeline as NumPy arrays, so both implementations can train on the
very same batches. Each epoch: one pass over the training split (shuffled by
args.seed), then the validation split; at the end the test split. After every epoch
it rewrites the --save checkpoint and the --json report, each atomically.
"""
from __future__ import annotations

import dataclasses
import time

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from threadpoolctl import threadpool_info

from keras_impl.data import make_dataset
from plumbing.cpus import BlasThreads
from plumbing.interrupts import stops_between_steps
from plumbing.quiet import make_console
from scratch import zoo
from plumbing.files import write_json
from scratch.model import build_model, save_npz
from scratch.optim import CosineDecay, make_optimizer
from scratch.train import checkpoint_extras, evaluate, train_epoch


def blas_threads() -> int | None:
    """How many threads NumPy's matrix products use now (None if threadpoolctl sees no BLAS)."""
    return max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"),
               default=None)


def progress_bar(console):
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.4f}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console)


def stopping_progress(progress, task, stop, threads=None):
    """train_epoch's on_batch: advance the progress bar, then stop the run here, between
    steps, if a Ctrl-C or SIGTERM was noted (`stop`, of plumbing.interrupts); and let
    `threads` (a plumbing.cpus.BlasThreads, or None) re-decide the BLAS thread count."""
    def on_batch(loss, acc):
        progress.update(task, advance=1, loss=loss, acc=acc)
        stop.check()
        if threads is not None:
            threads.adjust()

    return on_batch


def run(args, settings: dict, augmentation=None) -> dict:
    """Train as the parsed comparison.scratch_train arguments `args` say; returns the report.

    settings: the run's settings, stored in every checkpoint (what --resume must match).
    augmentation: a keras_impl.augment.Augmentation for the training batches, or None.
    """
    if args.resume is not None:
        model, history = args.restored
    else:
        model = build_model(args.model, l2=args.l2, seed=args.seed, init=args.init)
        history = []
    model.fast = not args.readable_layers
    optimizer = make_optimizer(args.optimizer, args.lr, args.momentum, args.nesterov)
    data = dict(batch_size=args.batch_size, flat=not zoo.has_conv(args.model),
                data_dir=args.data_dir, limit=args.limit)
    train_ds = make_dataset("train", seed=args.seed, augment=augmentation, **data)
    val_ds = make_dataset("val", **data)
    test_ds = make_dataset("test", **data)
    for _ in history:  # each new iterator reshuffles: skip the orders of the epochs done
        iter(train_ds)
    # no --threads: one per CPU the machine leaves free (scratch_train restores the count)
    threads = BlasThreads() if args.threads is None else None
    report = {"implementation": "numpy", "settings": settings,
              "optimizer": {"name": args.optimizer, **dataclasses.asdict(optimizer)},
              "params": model.count_params(), "blas_threads": blas_threads(), "epochs": history}
    chosen = " (one per free CPU, re-decided every second)" if threads else ""

    console = make_console()
    console.print(f"{args.model}: {model.count_params():,} parameters, {optimizer}, "
                  f"batch {args.batch_size}, {blas_threads()} BLAS thread(s){chosen}",
                  soft_wrap=True)
    steps = int(train_ds.cardinality())
    steps = steps if steps >= 0 else None  # unknown for some pipelines
    schedule = None
    if args.schedule == "cosine":
        schedule = CosineDecay.for_run(optimizer.learning_rate, args.epochs, steps,
                                       args.warmup_epochs)
        report["schedule"] = dataclasses.asdict(schedule)
    with stops_between_steps() as stop:  # see plumbing.interrupts
        for epoch in range(len(history) + 1, args.epochs + 1):
            with progress_bar(console) as progress:
                task = progress.add_task(f"epoch {epoch}/{args.epochs}", total=steps,
                                         loss=0, acc=0)
                start = time.perf_counter()
                loss, acc = train_epoch(model, optimizer, train_ds.as_numpy_iterator(),
                                        stopping_progress(progress, task, stop, threads),
                                        schedule=schedule, first_step=(epoch - 1) * (steps or 0),
                                        label_smoothing=args.label_smoothing)
                seconds = time.perf_counter() - start
            val_loss, val_acc = evaluate(model, val_ds.as_numpy_iterator(),
                                         args.label_smoothing)
            history.append({"epoch": epoch, "loss": loss, "accuracy": acc,
                            "val_loss": val_loss, "val_accuracy": val_acc, "seconds": seconds})
            if threads:
                report["steps_per_blas_thread_count"] = dict(threads.history)
            console.print(f"epoch {epoch}/{args.epochs}: loss {loss:.4f} accuracy {acc:.4f} "
                          f"val_loss {val_loss:.4f} val_accuracy {val_acc:.4f} "
                          f"({seconds:.1f} s)", soft_wrap=True)
            if args.save:
                save_npz(model, args.save, checkpoint_extras(model, settings, history))
            if args.json:
                write_json(args.json, report)
    report["test_loss"], report["test_accuracy"] = evaluate(model, test_ds.as_numpy_iterator(),
                                                            args.label_smoothing)
    console.print(f"test: loss {report['test_loss']:.4f} accuracy {report['test_accuracy']:.4f}")
    if args.json:
        write_json(args.json, report)
    return report
