"""The graders' check, exactly: load exported .h5 files with TensorFlow alone, score on MNIST.

Needs nothing but TensorFlow (and its numpy); it imports nothing from twinnet,
so it runs in a clean grader environment such as a TF 2.18 + Keras 3.6 venv:

    python keras_impl/grader_check.py MODEL.h5 [MODEL2.h5 ...] --mnist-dir DIR
    python keras_impl/grader_check.py MODEL.h5 --npz mnist.npz [--save-dir OUT]

Per model: `net = tensorflow.keras.models.load_model(file)`, CNN when
`len(net.input_shape) > 2` (input (N, 28, 28, 1)) else MLP (input (N, 784)),
`x_test.astype('float32') / 255`, argmax of `net.predict(...)`. Prints the
accuracy; --save-dir also writes <model>.npy (the predicted probabilities) and
results.json (versions, input shape, accuracy, largest |row sum - 1|).
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

TEST_FILES = {"t10k-images-idx3-ubyte": 2051, "t10k-labels-idx1-ubyte": 2049}  # name: magic
MNIST_INPUTS = ((None, 784), (None, 28, 28, 1))


class CheckError(ValueError):
    """A test set or model file this check cannot use; one line naming the file."""


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped or not) as a uint8 array, its magic number,
    header and length checked.

    twinnet's reader is keras_impl.data.read_idx; this script must run without
    twinnet, hence this short copy (tests compare the two).
    """
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as err:  # zlib: damaged deflate data
        raise CheckError(f"{path}: cannot read ({err})") from None
    found = int.from_bytes(data[:4], "big")
    if len(data) < 4 or found != magic:
        raise CheckError(f"{path}: magic number {found}, expected {magic}")
    header = 4 + 4 * data[3]
    dims = [int.from_bytes(data[i: i + 4], "big") for i in range(4, header, 4)]
    if len(data) != header + math.prod(dims):
        raise CheckError(f"{path}: {len(data)} bytes, header {dims} needs "
                         f"{header + math.prod(dims)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def check_test_set(x, y, images_source, labels_source) -> tuple[np.ndarray, np.ndarray]:
    """x (N, 28, 28) and y (N,) with labels 0..9, N > 0, else CheckError."""
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise CheckError(f"{images_source}: images of shape {x.shape}, expected (N, 28, 28)")
    if y.shape != (len(x),):
        raise CheckError(f"{labels_source}: labels of shape {y.shape} for {len(x)} images")
    if not len(y):
        raise CheckError(f"{images_source}: no test images")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 9:
        raise CheckError(f"{labels_source}: labels {y.min()}..{y.max()}, expected 0..9")
    return x, y


def read_test_set(mnist_dir=None, npz=None) -> tuple[np.ndarray, np.ndarray]:
    """x_test (N, 28, 28) uint8 and y_test (N,): t10k IDX files, or an .npz of x_test, y_test."""
    if npz is not None:
        try:
            if not zipfile.is_zipfile(npz):  # else NumPy speaks of "pickled data"
                raise ValueError("not a zip archive, as every .npz is")
            with np.load(npz) as saved:
                x, y = saved["x_test"], saved["y_test"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise CheckError(f"{npz}: not an .npz of x_test and y_test ({err})") from None
        return check_test_set(x, y, npz, npz)
    paths = []
    for stem in TEST_FILES:
        found = [p for p in (Path(mnist_dir) / (stem + ".gz"), Path(mnist_dir) / stem)
                 if p.is_file()]
        if not found:
            raise CheckError(f"{Path(mnist_dir) / stem}[.gz]: missing")
        paths.append(found[0])
    x, y = (read_idx(path, magic) for path, magic in zip(paths, TEST_FILES.values()))
    return check_test_set(x, y, *paths)


def grade(model_file, x_test: np.ndarray, y_test: np.ndarray) -> tuple[dict, np.ndarray]:
    """What the grader does with one file: (summary dict, probabilities (N, 10))."""
    import tensorflow

    try:
        net = tensorflow.keras.models.load_model(model_file)
    except Exception as err:  # text, truncated or foreign files fail in h5py, zip or Keras
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise CheckError(f"{model_file}: cannot load as a Keras model "
                         f"({type(err).__name__}: {first})") from None
    if net.input_shape not in MNIST_INPUTS or net.output_shape != (None, 10):
        raise CheckError(f"{model_file}: input {net.input_shape} and output {net.output_shape},"
                         f" expected {' or '.join(map(str, MNIST_INPUTS))} and (None, 10)")
    x = x_test.astype("float32") / 255
    x = x.reshape(-1, 28, 28, 1) if len(net.input_shape) > 2 else x.reshape(-1, 784)
    probs = net.predict(x, verbose=0)
    correct = int((probs.argmax(axis=1) == y_test).sum())
    return {"model": str(model_file), "tensorflow": tensorflow.__version__,
            "keras": tensorflow.keras.__version__, "input_shape": list(net.input_shape),
            "accuracy": correct / len(y_test), "correct": correct, "n": len(y_test),
            "max_row_sum_error": float(np.abs(probs.sum(axis=1) - 1).max())}, probs


def main(argv=None) -> int:
    """Grade every model; a model that cannot be graded gets one error line, and exit 2."""
    parser = argparse.ArgumentParser(prog="grader_check.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="exported .h5 files")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mnist-dir", help="folder with t10k-images/labels IDX files (.gz or not)")
    source.add_argument("--npz", help=".npz holding x_test (N, 28, 28) uint8 and y_test (N,)")
    parser.add_argument("--save-dir", help="write <model>.npy probabilities and results.json here")
    args = parser.parse_args(argv)
    for model_file in args.models:
        if not Path(model_file).is_file():
            parser.error(f"{model_file}: " + ("is a folder, expected a model file"
                                              if Path(model_file).is_dir() else "no such file"))
    if args.save_dir and not Path(args.save_dir).is_dir():
        parser.error(f"--save-dir {args.save_dir}: not a folder")
    try:
        x_test, y_test = read_test_set(args.mnist_dir, args.npz)
    except CheckError as err:
        parser.error(f"cannot read the test set: {err}")
    results, failed = [], 0
    for model_file in args.models:
        try:
            summary, probs = grade(model_file, x_test, y_test)
        except CheckError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"{model_file}: TF {summary['tensorflow']}, Keras {summary['keras']}, "
              f"input {tuple(summary['input_shape'])}, accuracy {summary['accuracy']:.4f} "
              f"({summary['correct']}/{summary['n']})")
        results.append(summary)
        if args.save_dir:
            np.save(Path(args.save_dir) / (Path(model_file).stem + ".npy"), probs)
    if args.save_dir:
        # twinnet's JSON layout (scratch.cli.write_json), written here without twinnet
        (Path(args.save_dir) / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
