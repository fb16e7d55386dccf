"""MNIST: the IDX reader, the fixed train/validation split and the tf.data pipelines.

Both implementations are fed from `make_dataset`: the Keras model takes the
tensors, the NumPy model takes `xb.numpy()` of the very same batches.

Where the data comes from, in this order:
  1. the `data_dir` argument (`--data-dir` on every command line),
  2. the `MNIST_DIR` environment variable,
  3. Keras's own cache/download (`keras.datasets.mnist.load_data`).
Options 1 and 2 name a folder with the four original IDX files, gzipped or not.

    python -m keras_impl.data --info [--data-dir D]
    python -m keras_impl.data --export-png DIR --count N [--invert]
"""
from __future__ import annotations

import plumbing.quiet  # noqa: F401  first: quiets TensorFlow's start-up (see there)
import argparse
import functools
import gzip
import hashlib
import os
import sys
import zlib
from pathlib import Path

import numpy as np

from plumbing.args import output_folder, positive_int
from plumbing.files import atomic_write, tensorflow_write_failure

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
IMAGE_SIZE = 28
SPLITS = ("train", "val", "test")
VAL_SIZE = 5_000
SPLIT_SEED = 20_120  # fixed: the validation split is part of the experiment
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
HOW_TO_POINT = ("point --data-dir or MNIST_DIR at a folder holding the four MNIST IDX files "
                f"({', '.join(FILES.values())}, optionally .gz)")


class MnistError(Exception):
    """Bad or missing MNIST data; the message is one line naming the file and the problem."""


def open_maybe_gzip(path: Path) -> bytes:
    """The bytes of `path`, gunzipped when the file starts with the gzip magic."""
    try:
        raw = Path(path).read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as err:  # zlib: damaged deflate data in a .gz
        raise MnistError(f"{path}: cannot read ({err})") from None


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes.

    Header: 4-byte big-endian magic (0x0000 08 NDIM, i.e. 2051 images / 2049 labels),
    then NDIM big-endian uint32 dimensions, then the data row-major.
    Returns a uint8 array of shape (N,) for labels or (N, 28, 28) for images.
    """
    data = open_maybe_gzip(path)
    if len(data) < 8:
        raise MnistError(f"{path}: truncated header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise MnistError(f"{path}: magic number {magic}, expected {expected_magic}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MnistError(f"{path}: truncated header ({len(data)} bytes, need {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise MnistError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    expected_len = header + int(np.prod(dims))
    if len(data) != expected_len:
        raise MnistError(f"{path}: {len(data)} bytes, header {dims} needs {expected_len}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8, checked against each other."""
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC)
    if len(images) != len(labels):
        raise MnistError(f"{labels_path}: {len(labels)} labels for {len(images)} images "
                         f"in {images_path}")
    if labels.size and labels.max() > 9:
        raise MnistError(f"{labels_path}: label {int(labels.max())} out of range 0..9")
    return images, labels


def idx_paths(data_dir: Path) -> dict[str, Path]:
    """The four IDX files in `data_dir` (each may be stored with or without .gz)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MnistError(f"{data_dir}: not a folder; {HOW_TO_POINT}")
    paths = {}
    for key, stem in FILES.items():
        candidates = [data_dir / (stem + ".gz"), data_dir / stem]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise MnistError(f"{data_dir / stem}[.gz]: missing; {HOW_TO_POINT}")
        paths[key] = found[0]
    return paths


def resolve_data_dir(data_dir=None) -> Path | None:
    """The IDX folder chosen by argument or MNIST_DIR, or None for Keras's cache."""
    chosen = data_dir or os.environ.get("MNIST_DIR")
    return Path(chosen).expanduser() if chosen else None


def keras_cache_path() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"


@functools.lru_cache(maxsize=4)
def _load_official(data_dir: Path | None):
    """((train_x, train_y), (test_x, test_y)) as uint8 arrays: the official 60k/10k."""
    if data_dir is not None:
        paths = idx_paths(data_dir)
        return (read_idx_pair(paths["train_images"], paths["train_labels"]),
                read_idx_pair(paths["test_images"], paths["test_labels"]))
    import keras  # only here: the fallback costs a TensorFlow import
    try:
        return keras.datasets.mnist.load_data()
    except Exception as err:  # offline download failures come in many types
        raise MnistError(f"MNIST not found and Keras could not download it "
                         f"({type(err).__name__}); {HOW_TO_POINT}") from None


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): a fixed, seeded, disjoint split of the official training set.

    labels: (N,) uint8. The validation part is stratified (VAL_SIZE / 10 per class)
    so every class is present; both index arrays are sorted.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    per_class = VAL_SIZE // 10
    val = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                                  for c in range(10)]))
    return np.setdiff1d(np.arange(len(labels)), val), val


def load_mnist(split: str, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one split.

    split: "train" (55,000), "val" (5,000, taken from the official training set
    with a fixed seed) or "test" (the official 10,000, untouched).
    """
    if split not in SPLITS:
        raise MnistError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    (train_x, train_y), (test_x, test_y) = _load_official(resolve_data_dir(data_dir))
    if split == "test":
        return test_x, test_y
    train_idx, val_idx = split_indices(train_y)
    idx = train_idx if split == "train" else val_idx
    return train_x[idx], train_y[idx]


def load_split(split: str, data_dir=None, limit: int | None = None):
    """The first `limit` (default all) images and labels of load_mnist(split, data_dir);
    MnistError when there are none: nothing to train, validate or test on."""
    images, labels = load_mnist(split, data_dir)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if not len(labels):
        source = resolve_data_dir(data_dir) or keras_cache_path()
        why = {"train": f"the validation split takes {VAL_SIZE // 10} of each digit from the "
                        "official training set and leaves no training image",
               "val": f"{FILES['train_images']} holds no images",
               "test": f"{FILES['test_images']} holds no images"}[split]
        raise MnistError(f"{source}: the {split} split is empty ({why})")
    return images, labels


def make_dataset(split: str, batch_size: int = 128, *, flat: bool = False, shuffle=None,
                 seed: int = 0, data_dir=None, limit: int | None = None, augment=None,
                 drop_remainder: bool = False):
    """A tf.data pipeline over one split.

    Yields (x, y): x float32 in [0, 1] of shape (B, 28, 28, 1), or (B, 784) when
    `flat`; y int32 of shape (B,). Training shuffles by default with a seeded,
    per-epoch reshuffle (the same seed gives the same batches in every run and in
    both implementations). `limit` keeps the first N examples (quick runs, tests).
    `augment` (training only): a function (images (B, 28, 28, 1), seed (2,) int64) ->
    images, such as a `keras_impl.augment.Augmentation`, that randomly transforms
    every training image, before any flattening. Each batch gets its own seed from a
    seeded random stream that is redrawn each epoch: the same `seed` (and global seed,
    see `seed_tensorflow`) gives the same augmented batches in every run and in both
    implementations, and every epoch gets new ones.

    The images are kept as one uint8 tensor; what flows through shuffle and batch
    are example indices, and each batch is one gather, then converted to float32.
    (Shuffling 55,000 whole images element by element cost ~20% of an fc128 epoch;
    converting all of them up front held 0.5 GB more at the peak, and gave the same
    numbers: x / 255.0 in float32 either way.)
    """
    if augment is not None and split != "train":
        raise ValueError(f"augment is for the training split only, got split {split!r}")
    images, labels = load_split(split, data_dir, limit)
    import tensorflow as tf  # after the data's checks: bad files are reported without it

    if shuffle is None:
        shuffle = split == "train"
    # Flattened up front unless augmentation needs the images, so a batch costs one map
    # call (tens of microseconds each, a few percent of an fc128 step).
    images_shape, flat_shape = (-1, IMAGE_SIZE, IMAGE_SIZE, 1), (-1, IMAGE_SIZE ** 2)
    shape = flat_shape if flat and augment is None else images_shape
    pixels = tf.reshape(tf.constant(images), shape)
    targets = tf.constant(labels, dtype=tf.int32)
    ds = tf.data.Dataset.range(len(labels))
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda idx: (tf.cast(tf.gather(pixels, idx), tf.float32) / 255.0,
                             tf.gather(targets, idx)))
    if augment is not None:
        out_shape = flat_shape if flat else images_shape
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(lambda batch, pair: (
            tf.reshape(augment(batch[0], pair), out_shape), batch[1]))
    # No autotuning: deleting an autotuned iterator at the end of an epoch can wait for
    # the tuner's next wake-up (its period doubles: 20 s, 41 s, ... after the epoch
    # began), which added up to 17 s to 24 s epochs here.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)


def seed_tensorflow(seed: int) -> None:
    """Set TensorFlow's global seed to `seed`.

    tf.data's seeded shuffle and random streams combine their own seed with the
    global one, so the same `make_dataset(seed=s)` yields other batches under
    another global seed. Both training CLIs therefore set it to --seed (the Keras
    one through keras.utils.set_random_seed) and see the same batches.
    """
    import tensorflow as tf

    tf.random.set_seed(seed)


def add_data_dir_arg(parser: argparse.ArgumentParser) -> None:
    """The shared --data-dir option of every command line."""
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four MNIST IDX files (default: $MNIST_DIR, "
                             "else Keras's download cache)")


def file_digests(data_dir=None) -> dict[str, str]:
    """SHA-256 of each source file's (uncompressed) content."""
    resolved = resolve_data_dir(data_dir)
    paths = list(idx_paths(resolved).values()) if resolved else [keras_cache_path()]
    return {str(p): hashlib.sha256(open_maybe_gzip(p)).hexdigest() for p in paths}


def class_counts(data_dir=None) -> dict[str, np.ndarray]:
    """Per-class image counts (10,) of the official training set and of each split."""
    (_, train_y), _ = _load_official(resolve_data_dir(data_dir))
    counts = {"official train": np.bincount(train_y, minlength=10)}
    for split in SPLITS:
        counts[split] = np.bincount(load_mnist(split, data_dir)[1], minlength=10)
    return counts


def print_info(data_dir=None) -> None:
    from rich.table import Table

    counts = class_counts(data_dir)
    table = Table(title="MNIST images per class")
    table.add_column("digit", justify="right")
    for name in counts:
        table.add_column(name, justify="right")
    for digit in range(10):
        table.add_row(str(digit), *(f"{c[digit]:,}" for c in counts.values()))
    table.add_row("total", *(f"{c.sum():,}" for c in counts.values()), style="bold")
    console = plumbing.quiet.make_console()
    console.print(table)
    for path, digest in file_digests(data_dir).items():
        console.print(f"sha256 {digest}  {path}", soft_wrap=True)


def export_pngs(out_dir, count: int, invert: bool = False, data_dir=None) -> list[Path]:
    """Write the first `count` test digits as example_input_<i>_<label>.png."""
    from PIL import Image

    images, labels = load_mnist("test", data_dir)
    out_dir = Path(out_dir)
    written = []
    for i in range(min(count, len(labels))):
        pixels = 255 - images[i] if invert else images[i]
        path = out_dir / f"example_input_{i}_{labels[i]}.png"
        atomic_write(path, lambda f: Image.fromarray(pixels).save(f, format="PNG"))
        written.append(path)
    return written


def run_cli(main):
    """Run a CLI entry point: bad data, a missing file or a file that cannot be written
    (TensorFlow's event files included) ends it with one line, exit 2."""
    try:
        return main()
    except (MnistError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        failure = tensorflow_write_failure(err)
        if failure is None:
            raise
        print(f"error: {failure}", file=sys.stderr)
        sys.exit(2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m keras_impl.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--info", action="store_true",
                        help="per-split and per-class counts and a SHA-256 per file")
    parser.add_argument("--export-png", metavar="DIR", type=output_folder,
                        help="write test digits as PNGs")
    parser.add_argument("--count", type=positive_int, default=10,
                        help="how many PNGs (default 10)")
    parser.add_argument("--invert", action="store_true",
                        help="black digits on white, as people draw them")
    add_data_dir_arg(parser)
    args = parser.parse_args(argv)
    if not (args.info or args.export_png):
        parser.error("nothing to do: give --info or --export-png DIR")
    if args.info:
        print_info(args.data_dir)
    if args.export_png:
        written = export_pngs(args.export_png, args.count, args.invert, args.data_dir)
        print(f"wrote {len(written)} PNGs to {args.export_png}")


if __name__ == "__main__":
    run_cli(main)
