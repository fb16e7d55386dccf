"""The command-line arguments that name NumPy-engine things: zoo models and optimizers.

    parser.add_argument("--model", type=model_name)        # a zoo name, size-checked
    add_optimizer_args(parser)                             # --optimizer --lr --momentum --nesterov
    args = parser.parse_args(argv)
    check_optimizer_args(parser, args)                     # the rules between those flags

The generic argument types (numbers, paths) are plumbing.args; these add the model sizes
(scratch.zoo) and the learning-rate defaults (scratch.optim). TensorFlow-free, so both
sides use them and bad arguments are refused before TensorFlow loads.
"""
from __future__ import annotations

import argparse

from plumbing.args import fraction, positive_float
from scratch import zoo
from scratch.optim import DEFAULT_LR

MAX_PARAMS = 100_000_000  # 400 MB per float32 copy; the zoo's largest model has 545,810


def model_name(text: str) -> str:
    """A zoo model name (fc<n> included) with at most MAX_PARAMS parameters, counted from
    the registry's formulas: a model too big to build is refused without an array made."""
    name = zoo.name_argument(text)
    count = zoo.count_params(name)
    if count > MAX_PARAMS:
        raise argparse.ArgumentTypeError(f"{name} has {count:,} parameters, more than the "
                                         f"{MAX_PARAMS:,} twinnet builds")
    return name


# --- the optimizer flags of every command line that trains --------------------------


def add_optimizer_args(parser: argparse.ArgumentParser) -> None:
    """--optimizer, --lr, --momentum, --nesterov with the same defaults and help everywhere."""
    defaults = ", ".join(f"{lr:g} for {name}" for name, lr in DEFAULT_LR.items())
    parser.add_argument("--optimizer", choices=tuple(DEFAULT_LR), default="adam",
                        help="default adam")
    parser.add_argument("--lr", metavar="X", type=positive_float, default=None,
                        help=f"learning rate (default: Keras's, {defaults})")
    parser.add_argument("--momentum", metavar="X", type=fraction, default=0.0,
                        help="sgd momentum (default 0)")
    parser.add_argument("--nesterov", action="store_true", help="sgd with Nesterov momentum")


def check_optimizer_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The rules between the optimizer flags; parser.error (exit 2) when one is broken."""
    if args.optimizer != "sgd" and (args.momentum or args.nesterov):
        parser.error("--momentum and --nesterov apply to --optimizer sgd only")
    if args.nesterov and not args.momentum:
        parser.error("--nesterov needs --momentum > 0")
