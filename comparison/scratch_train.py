"""Train a zoo model in pure NumPy on the same tf.data batches the Keras side sees.

    python -m comparison.scratch_train --model fc128 --epochs 10 --optimizer sgd --lr 0.1 \
        --momentum 0.9
    python -m comparison.scratch_train --model convnet --epochs 10 --json runs/convnet.json \
        --save convnet.npz
    python -m comparison.scratch_train --model convnet --epochs 10 --resume convnet.npz
    python -m comparison.scratch_train --model best --epochs 8 --augment --schedule cosine \
        --warmup-epochs 1 --label-smoothing 0.1 --lr 0.002 --save best.npz  # accuracy recipe

The model, its backprop and the loops are scratch/'s (NumPy only), the epoch driver
is comparison.scratch_loop; this command line lives on the TensorFlow side
because its batches come from keras_impl.data's tf.data pipeline. Each epoch: one pass
over the 55,000 training images (shuffled by --seed, as in
`keras_impl.data.make_dataset`), then the validation split; at the end the test split.
Reported losses include the L2 penalty, as Keras reports them. --save rewrites its .npz
atomically after every epoch (weights, optimizer state, history), so a crash loses at
most the epoch in progress and --resume with the same arguments continues exactly where
the run stopped. Runs with the same arguments are bit-for-bit reproducible. --json
records, per epoch, the running training loss and accuracy, the validation numbers and
the seconds of the training pass (validation not included).
"""
from __future__ import annotations

import plumbing.quiet  # noqa: F401  first: quiets TensorFlow's start-up (see there)
import argparse
import sys
from pathlib import Path

from threadpoolctl import threadpool_limits

# Neither import loads TensorFlow (keras_impl.data does when a pipeline is built), so
# bad arguments are reported without it.
from comparison import scratch_loop
from keras_impl.data import SPLITS, add_data_dir_arg, load_split, run_cli, seed_tensorflow
from scratch import zoo
from plumbing.args import (at_most, batch_size, epoch_count, fraction, nonnegative_float,
                           nonnegative_int, output_file, positive_int, seed_number)
from scratch.cli import add_optimizer_args, check_optimizer_args, model_name
from scratch.model import CheckpointError
from scratch.train import RUN_SETTINGS, restore_checkpoint

MAX_THREADS = 256  # BLAS takes a C int; no machine here has more cores


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comparison.scratch_train",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="NAME", type=model_name,
                        help=f"{', '.join(zoo.model_names())} or fc<n>")
    parser.add_argument("--epochs", required=True, metavar="N", type=epoch_count,
                        help="epochs in total")
    parser.add_argument("--batch-size", metavar="B", type=batch_size, default=128,
                        help="default 128")
    add_optimizer_args(parser)
    parser.add_argument("--l2", metavar="X", type=nonnegative_float, default=0.0,
                        help="L2 factor on the hidden kernels, as keras.regularizers.L2 "
                             "(default 0)")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                        help="learning rate: constant (default) or cosine decay to 0 over "
                             "--epochs, after --warmup-epochs of linear warmup")
    parser.add_argument("--warmup-epochs", metavar="E", type=nonnegative_float, default=0.0,
                        help="cosine schedule: epochs of linear warmup from 0 (default 0)")
    parser.add_argument("--label-smoothing", metavar="S", type=fraction,
                        default=0.0, help="targets (1-s)*onehot + s/10 instead of onehot "
                                          "(default 0)")
    parser.add_argument("--augment", action="store_true",
                        help="random rotation/shift/scale/stroke width on training batches "
                             "(keras_impl.augment, the same batches as the Keras side)")
    parser.add_argument("--init", choices=("glorot_uniform", "he_uniform", "he_normal"),
                        default="glorot_uniform",
                        help="kernel initializer (default glorot_uniform)")
    parser.add_argument("--seed", metavar="S", type=seed_number, default=0,
                        help="weights, dropout masks and batch order (default 0)")
    add_data_dir_arg(parser)
    parser.add_argument("--limit", metavar="N", type=positive_int, default=None,
                        help="use only the first N examples of each split (quick runs)")
    parser.add_argument("--json", metavar="FILE", type=output_file, default=None,
                        help="write per-epoch metrics and seconds per epoch here")
    parser.add_argument("--save", metavar="FILE", type=output_file, default=None,
                        help="checkpoint .npz, rewritten after every epoch")
    parser.add_argument("--threads", metavar="N", type=at_most(nonnegative_int, MAX_THREADS),
                        default=None,
                        help="threads for NumPy's matrix products (default: one per CPU left "
                             "free by other programs, re-decided every second, since BLAS "
                             "threads on busy cores wait for each other; 0: the BLAS default)")
    parser.add_argument("--readable-layers", action="store_true",
                        help="train with scratch/layers.py's readable layers instead of "
                             "scratch/fast_layers.py (same numbers up to rounding, slower)")
    parser.add_argument("--resume", metavar="FILE", type=Path, default=None,
                        help="continue the run saved in this checkpoint (same arguments; "
                             "--save defaults to it)")
    return parser


def parse_args(argv) -> argparse.Namespace:
    """The checked arguments (argparse exits with a one-line error otherwise)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_optimizer_args(parser, args)
    if args.warmup_epochs and (args.schedule != "cosine" or args.warmup_epochs >= args.epochs):
        parser.error("--warmup-epochs needs --schedule cosine and must be below --epochs")
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


def main(argv=None) -> dict:
    """Run the CLI; returns the report that --json writes."""
    args = parse_args(argv)
    for split in SPLITS:  # missing or unusable data: said before TensorFlow loads
        load_split(split, args.data_dir, args.limit)
    from keras_impl.augment import Augmentation  # imports TensorFlow: after the checks

    seed_tensorflow(args.seed)  # the batch order and augmentations of keras_impl.train
    # Restored on exit: tests call main in-process. Without --threads, scratch_loop
    # chooses the count while it trains (plumbing.cpus).
    with threadpool_limits(limits=args.threads or None, user_api="blas"):
        return scratch_loop.run(args, run_settings(args),
                                Augmentation() if args.augment else None)


if __name__ == "__main__":
    try:
        run_cli(main)
    except KeyboardInterrupt:
        print("interrupted: the last finished epoch is in the --save checkpoint, if any",
              file=sys.stderr)
        sys.exit(130)
