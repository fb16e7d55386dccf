"""Bad input on every command line: one error line naming the argument or the file, a
non-zero exit (2 for usage errors), no traceback, and nothing written.

Each case runs the command line a user types, in a subprocess, on small generated files
(IDX folders of a few images, files with the wrong contents, a PNG header claiming 200
million pixels). The argument, file and data checks all run before TensorFlow is
imported, so those cases take a fraction of a second each. The few that need a Keras
model loaded (an output of 5 classes, a broken .h5 for the graders' check), or whose
module imports TensorFlow first, run once per command line; more examples of the same
classes run in-process through the same main().
"""
import gzip
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import idx_bytes, run_command, write_idx_folder

ROOT = Path(__file__).resolve().parents[1]
GRADER_CHECK = ROOT / "keras_impl" / "grader_check.py"


def run(*argv) -> subprocess.CompletedProcess:
    """`python ARGV...` from the repository root, as a user runs it."""
    return subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


def assert_refused(result, *words, code=2, errors=1):
    """Exit `code`, `errors` error lines, the last naming every one of `words`, no traceback."""
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == code, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    lines = error_lines(result.stderr)
    assert len(lines) == errors, shown
    assert all(word in lines[-1] for word in words), shown


def png_claiming(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds none: all Pillow's
    decompression-bomb check reads."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def damaged_gzip(blob: bytes) -> bytes:
    """gzip of `blob` with its first deflate block header made invalid (zlib.error)."""
    packed = bytearray(gzip.compress(blob))
    packed[10] = 0xFF  # the byte after the 10-byte gzip header: "invalid block type"
    return bytes(packed)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> SimpleNamespace:
    """Small bad (and a few good) inputs, made once; no TensorFlow needed."""
    root = tmp_path_factory.mktemp("bad-input")
    test_images = idx_bytes(2051, (10, 28, 28), bytes(10 * 784))
    f = SimpleNamespace(root=root)
    f.tiny = write_idx_folder(root / "tiny")  # 20 training images: the validation split's
    f.no_test = write_idx_folder(root / "no-test", n_test=0)
    f.damaged = write_idx_folder(root / "damaged", compress=False,
                                 test_images=damaged_gzip(test_images))
    f.bad_magic = write_idx_folder(root / "bad-magic", test_images=idx_bytes(
        2049, (10, 28, 28), bytes(10 * 784)))
    f.count_mismatch = write_idx_folder(root / "count",
                                        test_labels=idx_bytes(2049, (9,), bytes(9)))
    f.bad_labels = write_idx_folder(root / "labels",
                                    test_labels=idx_bytes(2049, (10,), bytes([12] * 10)))
    f.folder = root / "a-folder.json"  # a folder named like a file
    f.folder.mkdir()
    f.text, f.text_keras, f.text_h5, f.text_npz = (
        root / name for name in ("notes.txt", "text.keras", "text.h5", "text.npz"))
    for path in (f.text, f.text_keras, f.text_h5, f.text_npz):
        path.write_text("not a model, not data\n")
    f.zip_keras = root / "zip.keras"  # a zip archive: passes the cheap checks, is no model
    with zipfile.ZipFile(f.zip_keras, "w") as archive:
        archive.writestr("config.json", "{}")
    f.bomb = root / "bomb.png"
    f.bomb.write_bytes(png_claiming(20_000, 10_000))
    f.corrupt_results = root / "accuracy-corrupt"
    f.corrupt_results.mkdir()
    (f.corrupt_results / "keras-best-seed0-test.json").write_text('{"sets": {')
    f.incomplete_results = root / "accuracy-incomplete"
    f.incomplete_results.mkdir()
    (f.incomplete_results / "keras-best-seed0-test.json").write_text(
        json.dumps({"count": 10, "sets": {"thick": {"accuracy": 0.5}},
                    "mean_transformed_accuracy": 0.5}))
    (f.incomplete_results / "keras-best-seed0.json").write_text(
        json.dumps({"status": "completed", "epochs": [{"seconds": 60.0}]}))
    return f


def fast_cases():
    """{name: (argv of the files, words the error line holds, exit code)}: each refused
    before TensorFlow is imported."""
    compare, data, test = "compare.py", ["-m", "keras_impl.data"], ["-m", "keras_impl.test"]
    scratch_train = ["-m", "comparison.scratch_train", "--model", "fc16", "--epochs", "1"]
    experiments = ["-m", "comparison.experiments"]
    return {
        # damaged files
        "gzip with damaged deflate data": (
            lambda f: [*data, "--info", "--data-dir", f.damaged],
            ["t10k-images-idx3-ubyte", "cannot read", "invalid block type"], 2),
        "grader: test images with a wrong magic number": (
            lambda f: [GRADER_CHECK, f.text_h5, "--mnist-dir", f.bad_magic],
            ["t10k-images-idx3-ubyte.gz: magic number 2049, expected 2051"], 2),
        "grader: 9 labels for 10 images": (
            lambda f: [GRADER_CHECK, f.text_h5, "--mnist-dir", f.count_mismatch],
            ["t10k-labels-idx1-ubyte.gz: labels of shape (9,) for 10 images"], 2),
        "grader: labels out of range": (
            lambda f: [GRADER_CHECK, f.text_h5, "--mnist-dir", f.bad_labels],
            ["t10k-labels-idx1-ubyte.gz: labels 12..12, expected 0..9"], 2),
        "grader: damaged gzip": (
            lambda f: [GRADER_CHECK, f.text_h5, "--mnist-dir", f.damaged],
            ["t10k-images-idx3-ubyte", "cannot read"], 2),
        "grader: a text .npz": (
            lambda f: [GRADER_CHECK, f.text_h5, "--npz", f.text_npz],
            ["text.npz: not an .npz"], 2),
        # numbers that pass the parser but not the math
        "nan L2 factor": (lambda f: ["-m", "scratch.gradcheck", "fc16", "--l2", "nan"],
                          ["argument --l2", "'nan'"], 2),
        "inf momentum": (lambda f: [*scratch_train, "--optimizer", "sgd", "--momentum", "inf"],
                         ["argument --momentum", "'inf'"], 2),
        "nan label smoothing": (lambda f: [*scratch_train, "--label-smoothing", "nan"],
                                ["argument --label-smoothing", "'nan'"], 2),
        "zero hidden units": (lambda f: [compare, "params", "--hidden", "0"],
                              ["argument --hidden", "positive integer"], 2),
        "negative hidden units": (lambda f: [compare, "params", "--hidden", "-5"],
                                  ["argument --hidden", "'-5'"], 2),
        "hidden units too many to build": (
            lambda f: [compare, "params", "--hidden", "100000000000"],
            ["argument --hidden", "fc100000000000 has 79,500,000,000,010 parameters"], 2),
        "a model too big to build": (lambda f: ["-m", "scratch.model", "fc100000000000"],
                                     ["argument NAME", "parameters"], 2),
        "gradcheck batch of 0": (lambda f: [compare, "gradcheck", "--batch-size", "0"],
                                 ["argument --batch-size", "'0'"], 2),
        "1e20 epochs of a cosine schedule": (
            lambda f: [*scratch_train[:-1], "100000000000000000000", "--schedule", "cosine"],
            ["argument --epochs", "at most 10,000"], 2),
        "a batch TensorFlow cannot count": (
            lambda f: [*scratch_train, "--batch-size", "100000000000000000000"],
            ["argument --batch-size", "at most 60,000"], 2),
        "a seed numpy cannot take": (lambda f: [compare, "gradcheck", "--seed", "99999999999"],
                                     ["argument --seed", "at most 4,294,967,295"], 2),
        # outputs, refused before the work starts
        "--json names a folder": (lambda f: [compare, "--json", f.folder],
                                  ["argument --json", "is a folder, expected a file name"], 2),
        "--json inside a file": (lambda f: [*scratch_train, "--json", f.text / "run.json"],
                                 ["argument --json", "notes.txt' is a file, not a folder"], 2),
        "--save names a folder": (lambda f: [*scratch_train, "--save", f.folder],
                                  ["argument --save", "is a folder"], 2),
        "--logdir is a file": (lambda f: [compare, "--logdir", f.text],
                               ["argument --logdir", "is a file, expected a folder"], 2),
        "--figure names a folder": (lambda f: [compare, "--figure", f.folder],
                                    ["argument --figure", "is a folder"], 2),
        "--figure as text": (lambda f: [compare, "--figure", f.root / "compare.txt"],
                             ["argument --figure", "expected a name ending in .png"], 2),
        "--plots is a file": (lambda f: [*test, "--model-path", f.zip_keras, "--plots", f.text],
                              ["argument --plots", "is a file"], 2),
        "--out is a file": (lambda f: [*experiments, "epochs", "--out", f.text],
                            ["argument --out", "is a file"], 2),
        "accuracy --out is a file": (lambda f: ["-m", "comparison.experiments.accuracy", "table", "--out",
                                                f.text], ["argument --out"], 2),
        "--export-png is a file": (lambda f: [*data, "--export-png", f.text],
                                   ["argument --export-png"], 2),
        "grader --save-dir is a file": (
            lambda f: [GRADER_CHECK, f.text_h5, "--mnist-dir", f.tiny, "--save-dir", f.text],
            ["--save-dir", "not a folder"], 2),
        # data that is valid but unusable
        "a training set smaller than the validation split (NumPy)": (
            lambda f: [*scratch_train, "--data-dir", f.tiny],
            ["tiny: the train split is empty"], 2),
        "a training set smaller than the validation split (compare)": (
            lambda f: [compare, "--model", "fc16", "--data-dir", f.tiny],
            ["tiny: the train split is empty"], 2),
        "a training set smaller than the validation split (experiments)": (
            lambda f: [*experiments, "epochs", "--fast", "--data-dir", f.tiny,
                       "--out", f.root / "never"], ["tiny: the train split is empty"], 2),
        "an empty test set": (lambda f: [*test, "--model-path", f.zip_keras, "--data-dir",
                                         f.no_test], ["no-test: the test split is empty"], 2),
        "an empty test set, transformed": (
            lambda f: [*test, "--model-path", f.zip_keras, "--shifted", "--data-dir", f.no_test],
            ["the test split is empty"], 2),
        "grader: an empty test set": (
            lambda f: [GRADER_CHECK, f.text_h5, "--mnist-dir", f.no_test], ["no test images"], 2),
        "accuracy table of a corrupt JSON": (
            lambda f: ["-m", "comparison.experiments.accuracy", "table", "--out", f.corrupt_results],
            ["keras-best-seed0-test.json: not a readable JSON file"], 2),
        "accuracy table of an incomplete JSON": (
            lambda f: ["-m", "comparison.experiments.accuracy", "table", "--out", f.incomplete_results],
            ["keras-best-seed0-test.json", "KeyError: 'original'"], 2),
        "bench --quick has no bench table": (
            lambda f: [compare, "bench", "--quick", "--readme", "docs/performance.md"],
            ["--readme: not allowed with argument --quick"], 2),
        "bench --busy of a negative count": (
            lambda f: [compare, "bench", "--busy", "-1"],
            ["--busy: must be an integer >= 0, got '-1'"], 2),
        # options that were ignored
        "bench reads --data-dir": (lambda f: [compare, "bench", "--data-dir", f.tiny],
                                   ["tiny: the train split is empty"], 2),
        "gradcheck takes no --data-dir": (
            lambda f: [compare, "gradcheck", "--data-dir", f.tiny],
            ["unrecognized arguments: --data-dir"], 2),
        "params takes no --data-dir": (lambda f: [compare, "params", "--data-dir", f.tiny],
                                       ["unrecognized arguments: --data-dir"], 2),
        # messages
        "a folder as the model": (lambda f: [*test, "--model-path", f.folder],
                                  ["a-folder.json: is a folder"], 2),
        "a text file named .keras": (lambda f: [*test, "--model-path", f.text_keras],
                                     ["text.keras", "not a zip archive"], 2),
        "a text file as the --file": (lambda f: ["-m", "scratch.model", "--file", f.text_npz],
                                      ["text.npz: not a valid .npz file (not a zip archive"], 2),
        "a folder as the --file": (lambda f: ["-m", "scratch.model", "--file", f.folder],
                                   ["argument --file", "is a folder, expected a file"], 2),
        "a folder as --from-json": (
            lambda f: [*experiments, "complexity", "--from-json", f.folder],
            ["a-folder.json: cannot read (Is a directory)"], 2),
        "grader: a folder as the model": (
            lambda f: [GRADER_CHECK, f.folder, "--mnist-dir", f.tiny],
            ["a-folder.json: is a folder"], 2),
    }


FAST_CASES = fast_cases()


@pytest.mark.parametrize("case", FAST_CASES)
def test_refused_in_one_line_before_any_work(files, case):
    argv, words, code = FAST_CASES[case]
    before = sorted(files.root.rglob("*"))
    assert_refused(run(*argv(files)), *words, code=code)
    assert sorted(files.root.rglob("*")) == before  # nothing written, no .tmp left behind


# --- command lines that load a model or import TensorFlow first: one subprocess each ----


@pytest.fixture(scope="module")
def models(files) -> SimpleNamespace:
    """A Keras model of 5 outputs (.keras, and .h5 cut short) and a valid fc16."""
    import keras

    from keras_impl.zoo_model import build_sequential

    m = SimpleNamespace(five=files.root / "five.keras", fc16=files.root / "fc16.keras",
                        truncated=files.root / "truncated.h5")
    five = keras.Sequential([keras.Input((784,)), keras.layers.Dense(5)], name="five")
    five.save(m.five)
    five.save(files.root / "five.h5")
    m.truncated.write_bytes((files.root / "five.h5").read_bytes()[:3000])
    build_sequential("fc16").save(m.fc16)
    return m


def test_a_model_without_10_outputs(files, models):
    assert_refused(run("-m", "keras_impl.test", "--model-path", models.five, "--data-dir",
                       files.tiny), "five.keras: model output (None, 5), expected (None, 10)")


def test_grader_check_names_every_model_it_cannot_grade(files, models):
    result = run(GRADER_CHECK, files.text_h5, models.truncated, models.five,
                 "--mnist-dir", files.tiny)
    assert_refused(result, "five.keras", "output (None, 5)", errors=3)
    text, truncated, _ = error_lines(result.stderr)
    assert "text.h5: cannot load as a Keras model" in text
    assert "truncated.h5: cannot load as a Keras model" in truncated
    assert "accuracy" not in result.stdout  # no wrong accuracy printed


def test_keras_training_set_smaller_than_the_validation_split(files):
    logdir = files.root / "keras-run"
    assert_refused(run("-m", "keras_impl.train", "--model", "fc16", "--epochs", "1",
                       "--data-dir", files.tiny, "--logdir", logdir),
                   "tiny: the train split is empty")
    assert not logdir.exists()


def test_export_refuses_a_folder_as_its_h5(files):
    assert_refused(run("-m", "keras_impl.export", "--model-path", files.zip_keras,
                       "--h5", files.folder), "argument --h5", "is a folder")


def test_augment_refuses_a_text_figure(files):
    assert_refused(run("-m", "keras_impl.augment", "--figure", files.root / "augment.txt"),
                   "argument --figure", "expected a name ending in .png")


# --- more examples through the same main(), in-process: TensorFlow is loaded already ----


def last_error(capsys) -> str:
    return error_lines(capsys.readouterr().err)[-1]


@pytest.mark.parametrize("argv, words", [
    (["--count", "1000"], ["argument --count", "at most 20"]),
    (["--figure", "FOLDER"], ["argument --figure", "is a folder"]),
    (["--elastic", "inf"], ["argument --elastic", "'inf'"]),
])
def test_augment_arguments(files, capsys, argv, words):
    from keras_impl import augment

    argv = [str(files.folder) if a == "FOLDER" else a for a in argv]
    assert run_command(augment.main, "--figure", files.root / "a.png", *argv) == 2
    line = last_error(capsys)
    assert all(word in line for word in words), line


def test_keras_training_refuses_its_json_before_training(files, capsys):
    from keras_impl import train_cli

    logdir = files.root / "not-made"
    assert run_command(train_cli.main, "--model", "fc16", "--data-dir", files.tiny,
                       "--logdir", logdir, "--json", files.folder) == 2
    assert "argument --json" in last_error(capsys) and not logdir.exists()


def test_apply_refuses_a_decompression_bomb(files, models, capsys):
    from keras_impl import test

    assert run_command(test.main, "--model-path", models.fc16, "--apply", files.bomb) == 2
    assert "bomb.png: too large to read" in last_error(capsys)


def test_export_refuses_a_folder_as_the_model(files, capsys):
    from keras_impl import export

    assert run_command(export.main, "--model-path", files.folder, "--h5", files.root / "x.h5") == 2
    assert "--model-path" in (line := last_error(capsys)) and "is a folder" in line
