"""Argument types every twinnet command line shares, checked while parsing, before any work.

    parser.add_argument("--epochs", type=epoch_count)      # "--epochs 0" ->
    # error: argument --epochs: must be a positive integer, got '0'
    parser.add_argument("--json", type=output_file)        # "--json runs/" ->
    # error: argument --json: 'runs/' is a folder, expected a file name

The number types refuse nan and inf (a learning rate of nan trains nothing and reports
nothing useful); the path types refuse an output that could not be written at the end
of a long run, by trying the write (docs/outputs.md). Plain Python, so bad arguments are
refused before TensorFlow loads.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

from plumbing.files import make_folders, remove_folders

MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 60_000  # MNIST's whole training set: a larger batch is that same batch
MAX_SEED = 2**32 - 1  # NumPy's and Keras's global seeds are 32-bit
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


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


# --- paths: what the command will read or write, checked before it starts ------------


def _writable_folder(folder: Path) -> None:
    """Refuse `folder` unless a file can be written in it: its missing folders are made
    and a file created in it, then all of that removed again. (Trying, rather than
    os.access, also catches what root may not write: a read-only or pseudo file system.)"""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"'{existing}' is a file, not a folder")
    try:
        made = make_folders(folder)
    except OSError as err:
        raise argparse.ArgumentTypeError(
            f"cannot make the folder '{err.filename or folder}' ({err.strerror})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".twinnet-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot write in '{folder}' ({err.strerror})") from None
    finally:
        remove_folders(made)


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


def checked_output(parser: argparse.ArgumentParser, option: str, kind, path) -> Path:
    """kind(path) for an output known only after parsing (a default made from other
    options, a file inside an output folder); refused as argparse refuses an argument:
    "error: argument --logdir: ...", exit 2."""
    try:
        return kind(str(path))
    except argparse.ArgumentTypeError as err:
        parser.error(f"argument {option}: {err}")


def input_file(text: str) -> Path:
    """A file the command will read."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, expected a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: no such file")
    return path
