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
import sys
from pathlib import Path

import numpy as np

TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped or not) as a uint8 array.

    twinnet's checked reader is keras_impl.data.read_idx; this script must run
    without twinnet, hence this short copy (tests compare the two).
    """
    raw = path.read_bytes()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_test_set(mnist_dir=None, npz=None) -> tuple[np.ndarray, np.ndarray]:
    """x_test (N, 28, 28) uint8 and y_test (N,): t10k IDX files, or an .npz of x_test, y_test."""
    if npz is not None:
        with np.load(npz) as saved:
            return saved["x_test"], saved["y_test"]
    paths = []
    for stem in TEST_FILES:
        found = [p for p in (Path(mnist_dir) / (stem + ".gz"), Path(mnist_dir) / stem)
                 if p.is_file()]
        if not found:
            raise FileNotFoundError(f"{Path(mnist_dir) / stem}[.gz]: missing")
        paths.append(found[0])
    return read_idx(paths[0]), read_idx(paths[1])


def grade(model_file, x_test: np.ndarray, y_test: np.ndarray) -> tuple[dict, np.ndarray]:
    """What the grader does with one file: (summary dict, probabilities (N, 10))."""
    import tensorflow

    net = tensorflow.keras.models.load_model(model_file)
    x = x_test.astype("float32") / 255
    x = x.reshape(-1, 28, 28, 1) if len(net.input_shape) > 2 else x.reshape(-1, 784)
    probs = net.predict(x, verbose=0)
    correct = int((probs.argmax(axis=1) == y_test).sum())
    return {"model": str(model_file), "tensorflow": tensorflow.__version__,
            "keras": tensorflow.keras.__version__, "input_shape": list(net.input_shape),
            "accuracy": correct / len(y_test), "correct": correct, "n": len(y_test),
            "max_row_sum_error": float(np.abs(probs.sum(axis=1) - 1).max())}, probs


def main(argv=None) -> None:
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
            parser.error(f"{model_file}: no such file")
    if args.save_dir and not Path(args.save_dir).is_dir():
        parser.error(f"--save-dir {args.save_dir}: no such folder")
    try:
        x_test, y_test = read_test_set(args.mnist_dir, args.npz)
    except (OSError, KeyError, ValueError) as err:
        parser.error(f"cannot read the test set: {err}")
    results = []
    for model_file in args.models:
        summary, probs = grade(model_file, x_test, y_test)
        print(f"{model_file}: TF {summary['tensorflow']}, Keras {summary['keras']}, "
              f"input {tuple(summary['input_shape'])}, accuracy {summary['accuracy']:.4f} "
              f"({summary['correct']}/{summary['n']})")
        results.append(summary)
        if args.save_dir:
            np.save(Path(args.save_dir) / (Path(model_file).stem + ".npy"), probs)
    if args.save_dir:
        # twinnet's JSON layout (scratch.cli.write_json), written here without twinnet
        (Path(args.save_dir) / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
