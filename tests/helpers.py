"""Helpers shared by several test files (fixtures built on them live in conftest.py)."""
import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from keras_impl.data import FILES, run_cli
from scratch import zoo

MNIST_DIR = os.environ.get("MNIST_DIR")
needs_mnist = pytest.mark.skipif(not MNIST_DIR, reason="MNIST_DIR is not set (real MNIST needed)")


def random_batch(n, seed=0, model=None):
    """n random images in [0, 1) (float64) and int32 labels in 0..9 from one seeded stream;
    flat (n, 784) when `model` names an MLP, else (n, 28, 28, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *zoo.INPUT_SHAPE))
    if model is not None and not zoo.has_conv(model):
        x = x.reshape(n, -1)
    return x, rng.integers(0, zoo.NUM_CLASSES, size=n).astype(np.int32)


def idx_bytes(magic: int, dims: tuple, payload: bytes) -> bytes:
    """An IDX file: big-endian magic number, one big-endian size per dimension, the data."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + payload


def write_idx_folder(folder: Path, n_train=20, n_test=10, compress=True, **override) -> Path:
    """Four small valid MNIST IDX files of random pixels and labels 0, 1, ..., 9, 0, ...;
    `override` replaces one file's bytes by key (train_images, ..., test_labels)."""
    rng = np.random.default_rng(0)
    contents = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        contents[f"{split}_images"] = idx_bytes(2051, (n, 28, 28), images.tobytes())
        contents[f"{split}_labels"] = idx_bytes(2049, (n,), labels.tobytes())
    contents.update(override)
    folder.mkdir(parents=True, exist_ok=True)
    for key, blob in contents.items():
        name = FILES[key]
        if compress:
            (folder / (name + ".gz")).write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)
    return folder


def with_first_array(check, **fields):
    """`check` (scratch.gradcheck.model_gradient_errors) with `fields` replaced in the
    ArrayCheck of the first array, e.g. checked=0: what a caller does with a failure."""
    def patched(*args, **kwargs):
        rows = check(*args, **kwargs)
        return [rows[0]._replace(**fields), *rows[1:]]

    return patched


def run_command(main, *args):
    """main([str(arg), ...]) in-process as its `python -m` command line runs it (bad data
    and missing files: one line, exit 2); returns the exit code, argparse's included."""
    try:
        return run_cli(lambda: main([str(arg) for arg in args]))
    except SystemExit as exit_:
        return exit_.code
