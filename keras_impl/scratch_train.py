"""Train a zoo model in pure NumPy on the same tf.data batches the Keras side sees.

    python -m keras_impl.scratch_train --model fc128 --epochs 10 --optimizer sgd --lr 0.1 \
        --momentum 0.9
    python -m keras_impl.scratch_train --model convnet --epochs 10 --json runs/convnet.json \
        --save convnet.npz
    python -m keras_impl.scratch_train --model convnet --epochs 10 --resume convnet.npz
    python -m keras_impl.scratch_train --model best --epochs 8 --augment --schedule cosine \
        --warmup-epochs 1 --label-smoothing 0.1 --lr 0.002 --save best.npz  # accuracy recipe

The model, its backprop and the loops are scratch/'s (NumPy only); this command line
lives on the TensorFlow side because its batches come from keras_impl.data's tf.data
pipeline. Each epoch: one pass over the 55,000 training images (shuffled by --seed,
as in `keras_impl.data.make_dataset`), then the validation split; at the end the test
split. Reported losses include the L2 penalty, as Keras reports them. --save
rewrites its .npz atomically after every epoch (weights, optimizer state,
history), so a crash loses at most the epoch in progress and --resume with the
same arguments continues exactly where the run stopped. Runs with the same
arguments are bit-for-bit reproducible. --json records, per epoch, the running
training loss and accuracy, the validation numbers and the seconds of the
training pass (validation not included).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from threadpoolctl import threadpool_info, threadpool_limits

# keras_impl.data loads TensorFlow only when a pipeline is built, so bad arguments are
# reported without it.
from keras_impl.data import add_data_dir_arg, make_dataset, run_cli, seed_tensorflow
from scratch import zoo
from scratch.model import CheckpointError, atomic_write, build_model, save_npz
from scratch.optim import OPTIMIZERS, CosineDecay
from scratch.train import (RUN_SETTINGS, checkpoint_extras, evaluate, restore_checkpoint,
                           train_epoch)


def _number(kind, low, high=None, low_open=False):
    """An argparse type: `kind` within [low, high] (or (low, ...] when low_open)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if (value <= low if low_open else value < low) or (high is not None and value > high):
            limits = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high else "")
            raise argparse.ArgumentTypeError(f"{text} must be {limits}")
        return value
    return parse


def parse_args(argv) -> argparse.Namespace:
    """The checked arguments (argparse exits with a one-line error otherwise)."""
    parser = argparse.ArgumentParser(prog="python -m keras_impl.scratch_train",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="NAME", type=zoo.name_argument,
                        help=f"{', '.join(zoo.model_names())} or fc<n>")
    parser.add_argument("--epochs", required=True, metavar="N", type=_number(int, 1),
                        help="epochs in total")
    parser.add_argument("--batch-size", metavar="B", type=_number(int, 1), default=128,
                        help="default 128")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="default adam")
    parser.add_argument("--lr", metavar="X", type=_number(float, 0, low_open=True), default=None,
                        help="learning rate (default: Keras's, 0.01 for sgd, 0.001 for adam)")
    parser.add_argument("--momentum", metavar="X", type=_number(float, 0, 1), default=0.0,
                        help="sgd momentum (default 0)")
    parser.add_argument("--nesterov", action="store_true", help="sgd with Nesterov momentum")
    parser.add_argument("--l2", metavar="X", type=_number(float, 0), default=0.0,
                        help="L2 factor on the hidden kernels, as keras.regularizers.L2 "
                             "(default 0)")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                        help="learning rate: constant (default) or cosine decay to 0 over "
                             "--epochs, after --warmup-epochs of linear warmup")
    parser.add_argument("--warmup-epochs", metavar="E", type=_number(float, 0), default=0.0,
                        help="cosine schedule: epochs of linear warmup from 0 (default 0)")
    parser.add_argument("--label-smoothing", metavar="S", type=_number(float, 0, 0.99),
                        default=0.0, help="targets (1-s)*onehot + s/10 instead of onehot "
                                          "(default 0)")
    parser.add_argument("--augment", action="store_true",
                        help="random rotation/shift/scale/stroke width on training batches "
                             "(keras_impl.augment, the same batches as the Keras side)")
    parser.add_argument("--init", choices=("glorot_uniform", "he_uniform", "he_normal"),
                        default="glorot_uniform",
                        help="kernel initializer (default glorot_uniform)")
    parser.add_argument("--seed", metavar="S", type=int, default=0,
                        help="weights, dropout masks and batch order (default 0)")
    add_data_dir_arg(parser)
    parser.add_argument("--limit", metavar="N", type=_number(int, 1), default=None,
                        help="use only the first N examples of each split (quick runs)")
    parser.add_argument("--json", metavar="FILE", type=Path, default=None,
                        help="write per-epoch metrics and seconds per epoch here")
    parser.add_argument("--save", metavar="FILE", type=Path, default=None,
                        help="checkpoint .npz, rewritten after every epoch")
    parser.add_argument("--threads", metavar="N", type=_number(int, 0), default=1,
                        help="threads for NumPy's matrix products (default 1: OpenBLAS threads "
                             "busy-wait and slow down badly on busy cores; 2 is ~30%% faster for "
                             "CNNs on 2 idle cores; 0: the BLAS default)")
    parser.add_argument("--resume", metavar="FILE", type=Path, default=None,
                        help="continue the run saved in this checkpoint (same arguments; "
                             "--save defaults to it)")
    args = parser.parse_args(argv)
    if args.optimizer != "sgd" and (args.momentum or args.nesterov):
        parser.error("--momentum and --nesterov apply to --optimizer sgd only")
    if args.nesterov and not args.momentum:
        parser.error("--nesterov needs --momentum > 0")
    if args.warmup_epochs and (args.schedule != "cosine" or args.warmup_epochs >= args.epochs):
        parser.error("--warmup-epochs needs --schedule cosine and must be below --epochs")
    for option in ("json", "save"):
        path = getattr(args, option)
        if path is not None and not path.parent.is_dir():
            parser.error(f"--{option} {path}: folder {path.parent} does not exist")
    if args.resume is not None:
        args.save = args.save or args.resume
        try:
            args.restored = restore_checkpoint(args.resume, run_settings(args))
        except CheckpointError as err:
            parser.error(f"--resume: {err}")
        if len(args.restored[1]) >= args.epochs:
            parser.error(f"--resume: {args.resume} already has {len(args.restored[1])} epochs, "
                         f"--epochs is {args.epochs}")
    return args


def run_settings(args) -> dict:
    settings = {key: getattr(args, key) for key in RUN_SETTINGS}
    if args.schedule != "constant":  # the schedule's length is part of the run
        settings["epochs"] = args.epochs
    return settings


def make_optimizer(args):
    if args.optimizer == "sgd":
        return OPTIMIZERS["sgd"](args.lr or 0.01, args.momentum, args.nesterov)
    return OPTIMIZERS["adam"](args.lr or 0.001)


def progress_bar(console):
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.4f}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console)


def main(argv=None) -> dict:
    """Run the CLI; returns the report that --json writes."""
    args = parse_args(argv)
    from keras_impl.augment import Augmentation  # imports TensorFlow: after the checks

    seed_tensorflow(args.seed)  # the batch order and augmentations of keras_impl.train
    # Restored on exit: tests call main in-process.
    with threadpool_limits(limits=args.threads or None, user_api="blas"):
        return run(args, Augmentation() if args.augment else None)


def blas_threads() -> int | None:
    """How many threads NumPy's matrix products use now (None if threadpoolctl sees no BLAS)."""
    return max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"),
               default=None)


def run(args, augmentation=None) -> dict:
    """The training run of parsed arguments `args`; returns the --json report.

    augmentation: a keras_impl.augment.Augmentation for the training batches, or None.
    """
    settings = run_settings(args)
    if args.resume is not None:
        model, history = args.restored
    else:
        model = build_model(args.model, l2=args.l2, seed=args.seed, init=args.init)
        history = []
    optimizer = make_optimizer(args)
    flat = not zoo.has_conv(args.model)
    data = dict(batch_size=args.batch_size, flat=flat, data_dir=args.data_dir, limit=args.limit)
    train_ds = make_dataset("train", seed=args.seed, augment=augmentation, **data)
    val_ds = make_dataset("val", **data)
    test_ds = make_dataset("test", **data)
    for _ in history:  # each new iterator reshuffles: skip the orders of the epochs done
        iter(train_ds)
    report = {"implementation": "numpy", "settings": settings,
              "optimizer": {"name": args.optimizer, **dataclasses.asdict(optimizer)},
              "params": model.count_params(), "blas_threads": blas_threads(), "epochs": history}

    console = Console()
    console.print(f"{args.model}: {model.count_params():,} parameters, {optimizer}, "
                  f"batch {args.batch_size}, {blas_threads()} BLAS thread(s)", soft_wrap=True)
    steps = int(train_ds.cardinality())
    steps = steps if steps >= 0 else None  # unknown for some pipelines
    schedule = None
    if args.schedule == "cosine":
        schedule = CosineDecay.for_run(args.lr or optimizer.learning_rate, args.epochs, steps,
                                       args.warmup_epochs)
        report["schedule"] = dataclasses.asdict(schedule)
    for epoch in range(len(history) + 1, args.epochs + 1):
        with progress_bar(console) as progress:
            task = progress.add_task(f"epoch {epoch}/{args.epochs}", total=steps, loss=0, acc=0)
            start = time.perf_counter()
            loss, acc = train_epoch(
                model, optimizer, train_ds.as_numpy_iterator(),
                lambda loss, acc: progress.update(task, advance=1, loss=loss, acc=acc),
                schedule=schedule, first_step=(epoch - 1) * (steps or 0),
                label_smoothing=args.label_smoothing)
            seconds = time.perf_counter() - start
        val_loss, val_acc = evaluate(model, val_ds.as_numpy_iterator(), args.label_smoothing)
        history.append({"epoch": epoch, "loss": loss, "accuracy": acc, "val_loss": val_loss,
                        "val_accuracy": val_acc, "seconds": seconds})
        console.print(f"epoch {epoch}/{args.epochs}: loss {loss:.4f} accuracy {acc:.4f} "
                      f"val_loss {val_loss:.4f} val_accuracy {val_acc:.4f} ({seconds:.1f} s)",
                      soft_wrap=True)
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


def write_json(path, report: dict) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(report, indent=2).encode() + b"\n"))


if __name__ == "__main__":
    try:
        run_cli(main)
    except KeyboardInterrupt:
        print("interrupted: the last finished epoch is in the --save checkpoint, if any",
              file=sys.stderr)
        sys.exit(130)
