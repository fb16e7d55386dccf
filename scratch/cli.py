"""What every twinnet command line shares: argument types, the optimizer flags, safe writes.

    parser.add_argument("--epochs", type=positive_int)     # "--epochs 0" ->
    # error: argument --epochs: must be a positive integer, got '0'
    add_optimizer_args(parser)                             # --optimizer --lr --momentum --nesterov
    args = parser.parse_args(argv)
    check_optimizer_args(parser, args)                     # the rules between those flags
    write_json(path, report)                               # the whole file or the old one

The argument types refuse nan and inf: a learning rate of nan trains nothing and
reports nothing useful. Plain Python apart from the learning-rate defaults, which
live beside the optimizers in scratch.optim; TensorFlow-free, so both sides use it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from scratch.optim import DEFAULT_LR


def atomic_write(path, write) -> None:
    """Call write(binary file) on a temporary file next to `path`, then os.replace it
    onto `path`: a crash mid-write leaves the previous file intact, never half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, data) -> None:
    """`data` as JSON (indent 2, a final newline), written atomically; creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


# --- argparse types: argparse prints "argument --lr: must be ..., got 'nan'" and exits 2 ---


def _parse(text: str, kind, accept, wanted: str):
    """`text` as `kind` (int or float) when finite and accept(value), else the one error."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not accept(value):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _parse(text, int, lambda v: v > 0, "a positive integer")


def nonnegative_int(text: str) -> int:
    return _parse(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    return _parse(text, float, lambda v: v > 0, "a positive number")


def nonnegative_float(text: str) -> float:
    return _parse(text, float, lambda v: v >= 0, "a number >= 0")


def fraction(text: str) -> float:
    return _parse(text, float, lambda v: 0 <= v < 1, "a number in [0, 1)")


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
