"""keras_impl.test and keras_impl.digits: metrics, figures, .keras/.h5 loading, --apply."""
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import needs_mnist, run_command, write_idx_folder
from keras_impl import digits
from keras_impl import test as keras_test
from keras_impl.data import export_pngs, load_mnist
from keras_impl.export import export_h5
from keras_impl.zoo_model import build_sequential, build_twinnet

ROOT = Path(__file__).resolve().parents[1]
cli = partial(run_command, keras_test.main)  # `python -m keras_impl.test ...` -> exit code


def drawn_seven(size=200, ink=0, paper=255) -> np.ndarray:
    """A "7" drawn like a person would: dark strokes on light paper, off centre."""
    image = Image.new("L", (size, size), paper)
    k = size / 200
    ImageDraw.Draw(image).line([(40 * k, 50 * k), (140 * k, 50 * k), (90 * k, 170 * k)],
                               fill=ink, width=round(18 * k))
    return np.asarray(image, np.float64)


def test_confusion_matrix_and_per_class_metrics():
    labels = np.array([0, 0, 1, 1, 1, 2, 3])
    predicted = np.array([0, 1, 1, 1, 0, 2, 2])
    log_probs = np.log(np.full((7, 10), 0.01))
    log_probs[np.arange(7), predicted] = np.log(0.91)
    result = keras_test.evaluate(log_probs, labels)
    cm = np.zeros((10, 10), int)
    for t, p in zip(labels, predicted):
        cm[t, p] += 1
    assert result["confusion_matrix"] == cm.tolist()
    assert result["accuracy"] == pytest.approx(4 / 7)
    assert result["loss"] == pytest.approx(-np.log(0.91) * 4 / 7 - np.log(0.01) * 3 / 7)
    by_digit = {c["digit"]: c for c in result["per_class"]}
    assert by_digit[0]["precision"] == pytest.approx(1 / 2)  # predicted 0 twice, right once
    assert by_digit[1]["recall"] == pytest.approx(2 / 3)
    assert by_digit[2]["precision"] == pytest.approx(1 / 2) and by_digit[2]["recall"] == 1
    assert by_digit[3]["recall"] == 0 and by_digit[3]["precision"] is None  # never predicted
    assert by_digit[9]["recall"] is None and by_digit[9]["support"] == 0


def functional_softmax_dense():
    inputs = keras.Input((784,))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(inputs))


@pytest.mark.parametrize("make, probabilities", [
    (lambda: build_sequential("fc8"), False),
    (lambda: build_sequential("fc8", softmax=True), True),
    (lambda: build_twinnet("fc8"), False),
    (functional_softmax_dense, True),
])
def test_outputs_probabilities_is_read_from_the_structure(make, probabilities):
    assert keras_test.outputs_probabilities(make()) is probabilities


def test_logit_and_probability_models_give_the_same_log_probabilities():
    keras.utils.set_random_seed(4)
    logits_model = build_twinnet("tiny")
    probs_model = build_sequential("tiny", softmax=True)
    for source, target in zip(logits_model.arch_layers, probs_model.layers):
        target.set_weights(source.get_weights())
    images = np.random.default_rng(0).uniform(size=(16, 28, 28)).astype(np.float32)
    a = keras_test.log_probabilities(logits_model, images)
    b = keras_test.log_probabilities(probs_model, images)
    np.testing.assert_allclose(np.exp(a).sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    return write_idx_folder(tmp_path_factory.mktemp("fake-mnist"), n_train=20, n_test=60)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """An (untrained) convnet saved as .keras (TwinNet, logits) and exported as .h5 (softmax)."""
    folder = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(5)
    model = build_twinnet("convnet")
    model.save(folder / "convnet.keras")
    export_h5(model, folder / "convnet.h5")
    return folder / "convnet.keras", folder / "convnet.h5"


def test_keras_and_h5_files_give_the_same_report_and_figures(tmp_path, capsys, fake_mnist,
                                                             saved_models):
    reports = []
    for path in saved_models:
        plots, report = tmp_path / path.suffix[1:], tmp_path / f"{path.suffix[1:]}.json"
        assert cli("--model-path", path, "--data-dir", fake_mnist, "--json", report,
                   "--plots", plots) == 0
        out = capsys.readouterr().out
        assert "confusion matrix, 60 test images" in out and "test accuracy" in out
        reports.append(json.loads(report.read_text()))
        for name in ("confusion_matrix.png", "misclassified.png", "predictions.png"):
            with Image.open(plots / name) as image:
                assert image.format == "PNG" and min(image.size) > 200
        assert (plots / "misclassified.pdf").read_bytes().startswith(b"%PDF")
    keras_report, h5_report = reports
    assert (keras_report["output"], h5_report["output"]) == ("logits", "probabilities")
    assert keras_report["confusion_matrix"] == h5_report["confusion_matrix"]
    assert sum(map(sum, keras_report["confusion_matrix"])) == 60
    assert keras_report["loss"] == pytest.approx(h5_report["loss"], rel=1e-5)


def error_cases(tmp_path, saved_models):
    corrupt_keras = tmp_path / "corrupt.keras"
    corrupt_keras.write_bytes(b"PK\x03\x04 not really a zip")
    corrupt_h5 = tmp_path / "corrupt.h5"
    corrupt_h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    text = tmp_path / "model.txt"
    text.write_text("hello")
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    blank = tmp_path / "blank.png"
    Image.new("L", (40, 40), 255).save(blank)
    model = saved_models[0]
    cifar = tmp_path / "cifar.keras"
    keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                      keras.layers.Dense(10)]).save(cifar)
    return {
        "not an mnist model": (["--model-path", cifar],
                               "model input (None, 32, 32, 3), expected one of (None, 784) or"),
        "missing model": (["--model-path", tmp_path / "nope.keras"], "nope.keras: no such file"),
        "wrong suffix": (["--model-path", text], "expected a .keras or .h5 model file"),
        "corrupt keras": (["--model-path", corrupt_keras], "cannot load a Keras model"),
        "corrupt h5": (["--model-path", corrupt_h5], "cannot load a Keras model"),
        "missing data": (["--model-path", model, "--data-dir", tmp_path / "nodata"], "nodata"),
        "not an image": (["--model-path", model, "--apply", not_image], "notes.png: not an image"),
        "missing image": (["--model-path", model, "--apply", tmp_path / "gone.png"],
                          "gone.png: no such file or folder"),
        "blank image": (["--model-path", model, "--apply", blank], "blank.png: no digit found"),
    }


@pytest.mark.parametrize("case", ["missing model", "wrong suffix", "corrupt keras", "corrupt h5",
                                  "not an mnist model",
                                  "missing data", "not an image", "missing image",
                                  "blank image"])
def test_errors_are_one_line(tmp_path, capsys, saved_models, case):
    args, message = error_cases(tmp_path, saved_models)[case]
    assert cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_folder_without_images_is_an_error(tmp_path, capsys, saved_models):
    (tmp_path / "readme.txt").write_text("no digits here")
    assert cli("--model-path", saved_models[0], "--apply", tmp_path) == 2
    assert "folder holds no images" in capsys.readouterr().err


def test_process_reports_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "keras_impl.test", "--model-path",
                           tmp_path / "missing.h5"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing.h5'}: no such file"


# MNIST-style preprocessing (keras_impl.digits), checked on drawn digits.

def test_preprocessing_gives_an_mnist_style_digit():
    out = digits.to_mnist(drawn_seven())
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.min() == 0 and out.max() == 1
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == digits.BOX
    total = out.sum()
    centre = (out.sum(axis=1) @ np.arange(28) / total, out.sum(axis=0) @ np.arange(28) / total)
    np.testing.assert_allclose(centre, (14, 14), atol=0.5)  # shifted by whole pixels


def test_preprocessing_ignores_polarity_size_and_colour(tmp_path):
    reference = digits.to_mnist(drawn_seven())
    np.testing.assert_array_equal(digits.to_mnist(255 - drawn_seven()), reference)
    for size in (60, 1000):  # the same up to a one-pixel rounding of the centre of mass
        scaled = digits.to_mnist(drawn_seven(size=size))
        assert min(np.abs(np.roll(scaled, (dy, dx), axis=(0, 1)) - reference).mean()
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1)) < 0.025
    rgb = np.stack([drawn_seven(ink=30, paper=230)] * 3, axis=-1).astype(np.uint8)
    rgb[..., 0] = np.maximum(rgb[..., 0], 60)  # a reddish pen on cream paper
    Image.fromarray(rgb).save(tmp_path / "seven.jpg", quality=90)
    np.testing.assert_allclose(digits.preprocess_file(tmp_path / "seven.jpg"), reference,
                               atol=0.2)
    transparent = np.zeros((200, 200, 4), np.uint8)
    transparent[..., 3] = 255 - drawn_seven().astype(np.uint8)  # black ink, clear paper
    Image.fromarray(transparent, "RGBA").save(tmp_path / "seven.png")
    np.testing.assert_array_equal(digits.preprocess_file(tmp_path / "seven.png"), reference)


def test_collect_images_expands_folders(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    assert digits.collect_images([tmp_path, tmp_path / "notes.txt"]) == [
        tmp_path / "a.JPG", tmp_path / "b.png", tmp_path / "notes.txt"]


# The real model (conftest.keras_fc128_run: fc128, 1 epoch, custom loop).

@needs_mnist
def test_trained_keras_and_h5_agree_on_the_test_set(keras_fc128_run, tmp_path):
    reports = []
    for name in ("model.keras", "model.h5"):
        report = tmp_path / f"{name}.json"
        assert keras_test.main(["--model-path", str(keras_fc128_run["logdir"] / name),
                                "--json", str(report)]) == 0
        reports.append(json.loads(report.read_text()))
    assert reports[0]["accuracy"] == reports[1]["accuracy"] > 0.90
    assert reports[0]["confusion_matrix"] == reports[1]["confusion_matrix"]


def render_large(path: Path, size=100):
    with Image.open(path) as image:
        image.resize((size, size), Image.Resampling.BICUBIC).save(path)


@needs_mnist
def test_apply_recognises_mnist_digits_written_as_pngs(keras_fc128_run, tmp_path, capsys):
    """The first 20 test digits as white-on-black, black-on-white and 100x100 PNGs.

    Preprocessing an original 28x28 digit must give back the MNIST input (up to faint
    fringe pixels), so its prediction equals the model's on the raw array, right or
    wrong; and every digit the model gets right from the raw array must be
    recognised in all three renderings.
    """
    count = 20
    model_path = keras_fc128_run["logdir"] / "model.keras"
    folders = {kind: tmp_path / kind for kind in ("plain", "inverted", "large")}
    export_pngs(folders["plain"], count)
    export_pngs(folders["inverted"], count, invert=True)
    for path in export_pngs(folders["large"], count, invert=True):
        render_large(path)

    report = tmp_path / "apply.json"
    assert cli("--model-path", model_path, "--apply", *folders.values(), "--json", report,
               "--plots", tmp_path / "plots") == 0
    out = capsys.readouterr().out
    predictions = json.loads(report.read_text())["predictions"]
    assert len(predictions) == 3 * count and (tmp_path / "plots" / "apply.png").is_file()

    images, labels = load_mnist("test")
    raw = keras_test.log_probabilities(keras_test.load_model(model_path),
                                       images[:count] / 255.0).argmax(axis=1)
    right = set(np.flatnonzero(raw == labels[:count]))
    assert len(right) >= 17
    for p in predictions:
        path = Path(p["file"])
        index, label = map(int, path.stem.split("_")[-2:])
        assert f"{path}  {p['digit']}  " in out
        if path.parent.name == "plain":
            assert p["digit"] == raw[index]
            # the same input, but for faint fringe pixels that the crop to the ink drops
            np.testing.assert_allclose(digits.preprocess_file(path), images[index] / 255.0,
                                       atol=digits.INK_LEVEL)
        if index in right:
            assert p["digit"] == label, path
