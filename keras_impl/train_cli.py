"""Train a zoo model with Keras: the `fit()` baseline or the custom GradientTape loop.

    python -m keras_impl.train --model fc128 --loop custom --epochs 5
    python -m keras_impl.train --model convnet --loop fit --epochs 3 --optimizer sgd --lr 0.05
    python -m keras_impl.train --model fc128 --epochs 10 --resume     # continue a run
    python -m keras_impl.train --model fc128 --epochs 1 --limit 2000 --json run.json
    python -m keras_impl.train --model best --epochs 20 --augment --schedule cosine \
        --warmup-epochs 1 --label-smoothing 0.1 --lr 0.002     # the accuracy recipe

--loop fit     the Sequential model, compile()/fit() and Keras's TensorBoard callback.
--loop custom  (default) the subclassed TwinNet and keras_impl.train's GradientTape
               loop, the training steps --steps-per-call (20) per tf.function call,
               batches drawn in the graph (keras_impl.multistep; 1: the plain loop, a
               train_step call per batch), keras.metrics accumulators, a rich progress bar
               and our own TensorBoard logging: per-step train loss, per-epoch
               loss/accuracy/learning rate, the forward graph, a histogram of every
               weight, 12 misclassified validation digits with their true and
               predicted labels.

Everything goes to --logdir (default runs/<model>-<loop>):
    train/, validation/   TensorBoard event files (separate writers, as Keras does)
    checkpoints/          tf.train.CheckpointManager, one checkpoint per epoch
    run.json              the settings, checked again by --resume
    model.keras           the final model; model.h5 the grader export (keras_impl.export)
--augment draws a random rotation, shift, scale and stroke width for every training
image (keras_impl.augment); --schedule cosine decays the learning rate to 0 over the
run after --warmup-epochs of linear warmup; --label-smoothing s trains against
(1 - s) * onehot + s / 10. The NumPy side (comparison.scratch_train) has the same options.
--json FILE adds a summary: status, per-epoch loss/accuracy/val_loss/val_accuracy,
step and seconds, and seconds_per_epoch (for comparing the two loops).

Epoch summaries use step = epoch index from 0, like Keras's TensorBoard callback, so
fit and custom runs overlay; per-step summaries use the optimizer's step counter,
which is checkpointed and so continues across --resume.

Stopping and resuming: a checkpoint is written at the start and after every epoch.
Ctrl-C (or SIGTERM) drops the epoch under way and exits with code 130 (143); the same
command plus --resume runs that epoch again from its start, and the run ends bit for
bit as an uninterrupted one would: the same batches in the same order, the same
optimizer steps, schedule and weights. --resume refuses other settings (seed and
--limit included) and an --epochs below the epochs done; --epochs equal to them only
writes the model files again (after a Ctrl-C during the final save, say). --json
holds every epoch of the run, resumed or not. A NaN/Inf loss stops training (exit 1);
the last good checkpoint stays. The reported loss includes the L2 penalty, as fit()
reports it.
"""
from __future__ import annotations

import plumbing.quiet  # noqa: F401  first: quiets TensorFlow's start-up (see there)
import argparse
import json
import signal
import sys
from functools import partial
from pathlib import Path

import keras
import tensorflow as tf

from keras_impl.augment import Augmentation
from keras_impl.checkpoints import TrainError, failed_write
from keras_impl.data import add_data_dir_arg, make_dataset, run_cli
from keras_impl.export import ExportError, export_h5
from plumbing.interrupts import sigterm_as_interrupt, stop_signal_name
from keras_impl.zoo_model import batch_input_shape, build_sequential, build_twinnet
from keras_impl.optimizers import make_optimizer
from keras_impl.multistep import STEPS_PER_CALL
from keras_impl.runner import epoch_length, fit_baseline, run_custom
from keras_impl.train import make_loss_fn
from scratch import zoo
from plumbing.args import (batch_size, checked_output, epoch_count, fraction, nonnegative_float,
                           output_file, output_folder, positive_int, seed_number)
from plumbing.files import WriteError, atomic_path, write_json
from scratch.cli import add_optimizer_args, check_optimizer_args, model_name
from scratch.optim import DEFAULT_LR, CosineDecay

MODEL_FILES = ("model.keras", "model.h5")  # the trained model, and the graders' export
# Settings a resumed run must share (the checkpoint restores the learning rate too).
RESUME_KEYS = ("model", "loop", "optimizer", "lr", "momentum", "nesterov", "l2", "batch_size",
               "seed", "limit", "schedule", "warmup_epochs", "label_smoothing", "augment")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m keras_impl.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="NAME", type=model_name,
                        help=f"zoo model: {', '.join(zoo.model_names())} or fc<n>")
    parser.add_argument("--loop", choices=("fit", "custom"), default="custom",
                        help="compile()/fit() baseline or the GradientTape loop (default)")
    parser.add_argument("--steps-per-call", metavar="K", type=positive_int,
                        default=STEPS_PER_CALL,
                        help="--loop custom: training steps per tf.function call (default "
                             f"{STEPS_PER_CALL}; 1: the plain loop; the same training)")
    parser.add_argument("--epochs", metavar="N", type=epoch_count, default=5,
                        help="total epochs (default 5)")
    parser.add_argument("--batch-size", metavar="B", type=batch_size, default=128,
                        help="default 128")
    add_optimizer_args(parser)
    parser.add_argument("--l2", metavar="X", type=nonnegative_float, default=0.0,
                        help="L2 penalty factor on the hidden kernels (default 0)")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                        help="learning rate: constant (default) or cosine decay to 0 over "
                             "--epochs, after --warmup-epochs of linear warmup")
    parser.add_argument("--warmup-epochs", metavar="E", type=nonnegative_float, default=0.0,
                        help="cosine schedule: epochs of linear warmup from 0 (default 0)")
    parser.add_argument("--label-smoothing", metavar="S", type=fraction, default=0.0,
                        help="targets (1-s)*onehot + s/10 instead of onehot (default 0)")
    parser.add_argument("--augment", action="store_true",
                        help="random rotation/shift/scale/stroke width on training batches "
                             "(keras_impl.augment)")
    parser.add_argument("--seed", metavar="S", type=seed_number, default=0,
                        help="weights, dropout, shuffling (default 0)")
    add_data_dir_arg(parser)
    parser.add_argument("--logdir", type=output_folder, default=None,
                        help="where events, checkpoints and models go "
                             "(default runs/<model>-<loop>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --logdir from its latest checkpoint")
    parser.add_argument("--json", metavar="FILE", type=output_file,
                        help="write per-epoch metrics and timings")
    parser.add_argument("--limit", metavar="N", type=positive_int, default=None,
                        help="use only the first N train and N validation images")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The checked arguments, --lr and --logdir filled in (argparse exits with one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_optimizer_args(parser, args)
    if args.warmup_epochs and (args.schedule != "cosine" or args.warmup_epochs >= args.epochs):
        parser.error("--warmup-epochs needs --schedule cosine and must be below --epochs")
    args.lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    if args.logdir is None:
        args.logdir = checked_output(parser, "--logdir", output_folder,
                                     Path("runs") / f"{args.model}-{args.loop}")
    for name in MODEL_FILES:  # written after the training: refused before it
        checked_output(parser, "--logdir", output_file, args.logdir / name)
    return args


def check_run_config(logdir: Path, config: dict, resume: bool) -> None:
    """Refuse to mix runs: a fresh run needs an empty logdir, --resume the same settings."""
    saved_path = logdir / "run.json"
    has_checkpoint = (logdir / "checkpoints" / "checkpoint").exists()
    if not resume:
        if has_checkpoint:
            raise TrainError(f"{logdir}: already holds a run; add --resume to continue it "
                             "or choose another --logdir")
        return
    if not has_checkpoint:
        raise TrainError(f"{logdir / 'checkpoints'}: no checkpoint to resume from")
    try:
        saved = json.loads(saved_path.read_text())
    except (OSError, ValueError) as err:
        raise TrainError(f"{saved_path}: cannot read the run's settings ({err})") from None
    for key in (*RESUME_KEYS, "epochs") if "epochs" in config else RESUME_KEYS:
        if saved.get(key) != config[key]:
            old, new = ("(not given)" if v is None else v for v in (saved.get(key), config[key]))
            raise TrainError(f"--resume: {logdir} was trained with --{key.replace('_', '-')} "
                             f"{old}, not {new}")


def save_final(model, logdir) -> dict:
    """Write model.keras and the graders' model.h5, each atomically; returns their paths."""
    logdir = Path(logdir)
    paths = dict(zip(("keras", "h5"), (logdir / name for name in MODEL_FILES)))
    with atomic_path(paths["keras"]) as tmp:
        model.save(tmp)
    export_h5(model, paths["h5"])  # writes to a temporary file and checks it itself
    return {kind: str(p) for kind, p in paths.items()}


def train(args: argparse.Namespace, console=None) -> dict:
    """Run one training as the command line describes; returns the summary dict."""
    console = console or plumbing.quiet.make_console()
    config = {key: getattr(args, key) for key in (
        "model", "loop", "optimizer", "lr", "momentum", "nesterov", "l2", "batch_size", "seed",
        "limit", "schedule", "warmup_epochs", "label_smoothing", "augment")}
    if args.schedule != "constant":  # the schedule's length is part of the run
        config["epochs"] = args.epochs
    check_run_config(args.logdir, config, args.resume)
    keras.utils.set_random_seed(args.seed)
    if args.loop == "custom":
        model = build_twinnet(args.model, l2=args.l2)
        fit = partial(run_custom, steps_per_call=args.steps_per_call)
    else:
        model, fit = build_sequential(args.model, l2=args.l2), fit_baseline
    data = dict(batch_size=args.batch_size, flat=len(batch_input_shape(model)) == 2,
                data_dir=args.data_dir, limit=args.limit)
    train_ds = make_dataset("train", seed=args.seed,
                            augment=Augmentation() if args.augment else None, **data)
    val_ds = make_dataset("val", **data)
    schedule = None
    if args.schedule == "cosine":
        schedule = CosineDecay.for_run(args.lr, args.epochs, epoch_length(train_ds),
                                       args.warmup_epochs)
    args.logdir.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        write_json(args.logdir / "run.json", config)
    optimizer = make_optimizer(args.optimizer, args.lr, args.momentum, args.nesterov, schedule)
    try:
        result = fit(model, train_ds, val_ds, epochs=args.epochs, optimizer=optimizer,
                     logdir=args.logdir, resume=args.resume, console=console,
                     loss_fn=make_loss_fn(args.label_smoothing))
    except tf.errors.OpError as err:  # a full disk under the event files, say
        failure = failed_write(err, args.logdir / "checkpoints")
        if failure is None:
            raise
        raise failure from None
    result.update(config=config, logdir=str(args.logdir))
    if result["status"] == "completed":
        try:
            with sigterm_as_interrupt():
                result["saved"] = save_final(model, args.logdir)
        except KeyboardInterrupt as stop:  # the training is checkpointed: --resume saves
            result.update(status="interrupted", signal=stop_signal_name(stop), saving=True)
        except WriteError as err:  # a full disk, say
            raise TrainError(f"{err}; the training is checkpointed: the same command plus "
                             "--resume writes the model files again") from None
    if args.json:
        write_json(args.json, result)
    return result


def report(result: dict, console) -> int:
    """Say where everything went (or why the run stopped); returns the exit code."""
    logdir = result["logdir"]
    if result["status"] == "diverged":
        print(f"error: loss became {result['bad_loss']} in epoch {result['epoch']} at step "
              f"{result['step']}: training stopped; the last good checkpoint is "
              f"{result['checkpoint']}. Try a lower --lr.",
              file=sys.stderr)
        return 1
    if result["status"] == "interrupted":
        where = ("while writing the model files, after the last epoch"
                 if result.get("saving") else f"in epoch {result['epoch']}")
        print(f"interrupted {where}: checkpoint {result['checkpoint']} holds "
              f"{len(result['epochs'])} epochs (step {result['step']}); continue with the "
              "same command plus --resume", file=sys.stderr)
        return 128 + signal.Signals[result["signal"]]  # the shell's: 130 Ctrl-C, 143 SIGTERM
    if result["resumed_from"] == len(result["epochs"]):
        done = len(result["epochs"])
        console.print(f"nothing to train ({done} of {done} epochs done): "
                      "wrote the model files again")
    elif result["epochs"]:
        console.print(f"{len(result['epochs'])} epochs, "
                      f"{result['seconds_per_epoch']:.1f} s per epoch")
    console.print(f"checkpoints  {result['checkpoint']}", soft_wrap=True)
    console.print(f"model        {result['saved']['keras']}", soft_wrap=True)
    console.print(f"grader .h5   {result['saved']['h5']}", soft_wrap=True)
    console.print(f"TensorBoard  {logdir}/train and {logdir}/validation; view with:",
                  soft_wrap=True)
    console.print(f"  tensorboard --logdir {logdir}", soft_wrap=True, highlight=False)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    console = plumbing.quiet.make_console()
    try:
        result = train(args, console)
    except (TrainError, ExportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return report(result, console)


if __name__ == "__main__":
    sys.exit(run_cli(main))
