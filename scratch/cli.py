"""What every twinnet command line shares: argument types, the optimizer flags, safe writes.

    parser.add_argument("--epochs", type=epoch_count)      # "--epochs 0" ->
    # error: argument --epochs: must be a positive integer, got '0'
    parser.add_argument("--json", type=output_file)        # "--json runs/" ->
    # error: argument --json: 'runs/' is a folder, expected a file name
    add_optimizer_args(parser)                             # --optimizer --lr --momentum --nesterov
    args = parser.parse_args(argv)
    check_optimizer_args(parser, args)                     # the rules between those flags
    write_json(path, report)                               # the whole file or the old one

Bad input is refused while the arguments are parsed, before any work: the number
types refuse nan and inf (a learning rate of nan trains nothing and reports nothing
useful), the path types refuse an output that could not be written at the end of a
long run, the model type a network too big to build. Plain Python apart from the
learning-rate defaults (scratch.optim) and the model sizes (scratch.zoo);
TensorFlow-free, so both sides use it and bad arguments are refused before TensorFlow loads.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from scratch import zoo
from scratch.optim import DEFAULT_LR

MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 60_000  # MNIST's whole training set: a larger batch is that same batch
MAX_SEED = 2**32 - 1  # NumPy's and Keras's global seeds are 32-bit
MAX_PARAMS = 100_000_000  # 400 MB per float32 copy; the zoo's largest model has 545,810
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def atomic_write(path, write) -> None:
    """Call write(binary file) on a temporary file next to `path`, then os.replace it
    onto `path`: a crash mid-write leaves the previous file intact, never half a file.
    Creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def at_most(kind, maximum: int):
    """The argparse type `kind` (positive_int, ...) refusing values above `maximum`."""
    def parse(text: str) -> int:
        value = kind(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,}, got {text!r}")
        return value
    return parse


epoch_count = at_most(positive_int, MAX_EPOCHS)
batch_size = at_most(positive_int, MAX_BATCH_SIZE)
seed_number = at_most(nonnegative_int, MAX_SEED)


def model_name(text: str) -> str:
    """A zoo model name (fc<n> included) with at most MAX_PARAMS parameters, counted from
    the registry's formulas: a model too big to build is refused without an array made."""
    name = zoo.name_argument(text)
    count = zoo.count_params(name)
    if count > MAX_PARAMS:
        raise argparse.ArgumentTypeError(f"{name} has {count:,} parameters, more than the "
                                         f"{MAX_PARAMS:,} twinnet builds")
    return name


# --- paths: what the command will read or write, checked before it starts ------------


def _writable_folder(folder: Path) -> None:
    """Refuse `folder` unless it is, or can be made inside, a folder we may write in."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"'{existing}' is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in '{existing}'")


def output_file(text: str) -> Path:
    """A file the command will write; its missing folders are made when it is written."""
    path = Path(text)
    if path.is_dir():  # "" and "." too
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, expected a file name")
    _writable_folder(path.parent)
    return path


def figure_file(text: str) -> Path:
    """A figure the command will write, named for a format matplotlib writes."""
    path = output_file(text)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a name ending in "
                                         f"{', '.join(FIGURE_SUFFIXES[:-1])} or "
                                         f"{FIGURE_SUFFIXES[-1]}")
    return path


def output_folder(text: str) -> Path:
    """A folder the command will write into (made when missing)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, expected a folder")
    _writable_folder(path)
    return path


def input_file(text: str) -> Path:
    """A file the command will read."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, expected a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: no such file")
    return path


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
