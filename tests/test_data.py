"""The MNIST layer: IDX reader on generated files, real MNIST, the tf.data pipelines, the CLI."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import MNIST_DIR, idx_bytes, needs_mnist, write_idx_folder
from keras_impl import data

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("compress", [True, False])
def test_reader_reads_generated_files(tmp_path, compress):
    folder = write_idx_folder(tmp_path, compress=compress)
    paths = data.idx_paths(folder)
    images, labels = data.read_idx_pair(paths["train_images"], paths["train_labels"])
    assert images.shape == (20, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [i % 10 for i in range(20)]


def bad_files():
    images = idx_bytes(2051, (3, 28, 28), bytes(3 * 784))
    return {
        "truncated": ("train_images", images[:-5], "bytes"),
        "wrong magic": ("train_images", idx_bytes(2049, (3, 28, 28), bytes(3 * 784)), "magic"),
        "count mismatch": ("train_labels", idx_bytes(2049, (19,), bytes(19)), "labels for"),
        "label out of range": ("train_labels", idx_bytes(2049, (20,), bytes([12] * 20)),
                               "out of range"),
        "wrong image size": ("train_images", idx_bytes(2051, (3, 28, 27), bytes(3 * 756)),
                             "28x28"),
        "short header": ("test_labels", b"\x00\x00", "truncated"),
    }


@pytest.mark.parametrize("case", list(bad_files()))
def test_reader_rejects_bad_files_naming_them(tmp_path, case):
    key, blob, words = bad_files()[case]
    folder = write_idx_folder(tmp_path, **{key: blob})
    data._load_official.cache_clear()
    with pytest.raises(data.MnistError) as err:
        data.load_mnist("train" if key.startswith("train") else "test", folder)
    message = str(err.value)
    assert data.FILES[key] in message and words in message and "\n" not in message


@pytest.mark.parametrize("largest", [9, 10, 255])
def test_labels_0_to_9_are_read_and_one_beyond_is_refused(tmp_path, largest):
    labels = bytes([0, 5, largest])
    folder = write_idx_folder(tmp_path, n_train=3,
                              train_labels=idx_bytes(2049, (3,), labels))
    paths = data.idx_paths(folder)
    if largest <= 9:
        assert data.read_idx_pair(paths["train_images"], paths["train_labels"])[1].tolist() \
            == list(labels)
        return
    with pytest.raises(data.MnistError) as err:
        data.read_idx_pair(paths["train_images"], paths["train_labels"])
    assert str(err.value).endswith(f"train-labels-idx1-ubyte.gz: label {largest} out of "
                                   "range 0..9")


def test_missing_folder_says_how_to_point_at_data(tmp_path):
    with pytest.raises(data.MnistError, match="MNIST_DIR"):
        data.load_mnist("test", tmp_path / "nowhere")


def test_unknown_split_is_rejected():
    with pytest.raises(data.MnistError, match="split"):
        data.load_mnist("training", "/nonexistent")


def test_split_is_disjoint_stratified_and_fixed():
    labels = np.random.default_rng(1).integers(0, 10, size=60_000).astype(np.uint8)
    train, val = data.split_indices(labels)
    assert len(val) == data.VAL_SIZE and len(train) == 60_000 - data.VAL_SIZE
    assert not np.intersect1d(train, val).size
    assert np.bincount(labels[val], minlength=10).tolist() == [500] * 10
    again_train, again_val = data.split_indices(labels)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)


@needs_mnist
def test_real_mnist_counts_and_labels():
    (train_x, train_y), (test_x, test_y) = data._load_official(data.resolve_data_dir())
    assert train_x.shape == (60_000, 28, 28) and test_x.shape == (10_000, 28, 28)
    assert np.bincount(train_y).tolist() == [5923, 6742, 5958, 6131, 5842,
                                             5421, 5918, 6265, 5851, 5949]
    assert test_y[:5].tolist() == [7, 2, 1, 0, 4]
    x_train, _ = data.load_mnist("train")
    x_val, _ = data.load_mnist("val")
    assert len(x_train) == 55_000 and len(x_val) == 5_000


@needs_mnist
def test_validation_images_are_not_in_train():
    x_train, _ = data.load_mnist("train")
    x_val, _ = data.load_mnist("val")
    train_rows = {row.tobytes() for row in x_train.reshape(len(x_train), -1)}
    shared = sum(row.tobytes() in train_rows for row in x_val.reshape(len(x_val), -1))
    # MNIST has a handful of pixel-identical duplicate digits; a leaky split would share ~all.
    assert shared < 10


def first_batches(ds, n=3):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


@needs_mnist
@pytest.mark.parametrize("flat", [False, True])
def test_pipeline_shapes_dtypes_and_range(flat):
    import tensorflow as tf

    ds = data.make_dataset("val", batch_size=32, flat=flat, limit=100)
    x, y = next(iter(ds))
    assert x.dtype == tf.float32 and y.dtype == tf.int32
    assert tuple(x.shape) == ((32, 784) if flat else (32, 28, 28, 1))
    values = x.numpy()
    assert values.min() >= 0.0 and values.max() <= 1.0 and values.max() > 0.5
    raw, labels = data.load_mnist("val")
    assert np.array_equal(y.numpy(), labels[:32])  # no shuffle outside training
    assert np.allclose(values.reshape(32, 28, 28), raw[:32] / 255.0)
    assert sum(int(b[1].shape[0]) for b in ds) == 100


@needs_mnist
def test_seeded_shuffle_is_reproducible_and_reshuffles_each_epoch():
    def epochs(seed):
        ds = data.make_dataset("train", batch_size=64, seed=seed, limit=512)
        return [np.concatenate([y.numpy() for _, y in ds]) for _ in range(2)]

    first, second = epochs(3), epochs(3)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], epochs(4)[0])


def run_data_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "keras_impl.data", *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=300)


@needs_mnist
def test_cli_info_prints_counts_and_digests():
    result = run_data_cli("--info", "--data-dir", MNIST_DIR)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for number in ("55,000", "5,000", "10,000", "5,923", "1,135"):
        assert number in out
    # SHA-256 of the uncompressed official training images.
    assert "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db" in out


def test_cli_one_line_error_on_corrupt_file(tmp_path):
    folder = write_idx_folder(tmp_path, train_images=b"\x00\x00\x08\x03garbage")
    result = run_data_cli("--info", "--data-dir", str(folder))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train-images-idx3-ubyte" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_cli_export_png_writes_labelled_digits(tmp_path):
    from PIL import Image

    folder = write_idx_folder(tmp_path / "mnist")
    out = tmp_path / "pngs"
    result = run_data_cli("--export-png", str(out), "--count", "3", "--invert",
                          "--data-dir", str(folder))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["example_input_0_0.png", "example_input_1_1.png", "example_input_2_2.png"]
    raw, _ = data.load_mnist("test", folder)
    pixels = np.asarray(Image.open(out / "example_input_1_1.png"))
    assert np.array_equal(pixels, 255 - raw[1])

