"""comparison.experiments: every experiment end to end on a tiny setting, plus its pieces.

The end-to-end tests train on a few hundred real MNIST images for one or two epochs, so
they check the plumbing and the bookkeeping (histories, chosen epoch, mean and std,
resuming), not accuracy.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import needs_mnist
from keras_impl.digits import preprocess_file
from comparison.experiments import own_digits
from comparison.experiments.__main__ import main
from comparison.experiments.runs import ExperimentError
from scratch import zoo

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--limit", "300"]


def run(name, out: Path, *options) -> dict:
    assert main([name, "--out", str(out), *options]) == 0
    figure = out / f"{name}.png"
    with Image.open(figure) as image:
        assert image.format == "PNG" and min(image.size) > 200
    result = json.loads((out / f"{name}.json").read_text())
    assert result["experiment"] == name
    assert result["command"].startswith(f"python -m comparison.experiments {name} --out")
    return result


def accuracy_on_test_set(model_path, name: str) -> float:
    """Accuracy of a saved zoo model `name` on MNIST's test images, computed here without
    keras_impl.test."""
    import keras

    from keras_impl.data import load_mnist

    images, labels = load_mnist("test")
    model = keras.models.load_model(model_path)
    x = images.astype(np.float32) / 255
    x = x[..., None] if zoo.has_conv(name) else x.reshape(-1, 784)
    return float(np.mean(model.predict(x, verbose=0).argmax(axis=1) == labels))


# --- without MNIST ------------------------------------------------------------------


def test_help_names_every_experiment(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for name in ("epochs", "l2-sweep", "own-digits", "complexity"):
        assert name in text


@pytest.mark.parametrize("argv, message", [
    (["l2-sweep", "--factors", "1e-4", "-1"], "--factors: must be a positive number, got '-1'"),
    (["l2-sweep", "--factors", "nan"], "--factors: must be a positive number, got 'nan'"),
    (["epochs", "--models", "fc128", "nosuchnet"], "unknown model 'nosuchnet'"),
    (["complexity", "--epochs", "0"], "--epochs: must be a positive integer, got '0'"),
    (["epochs", "--momentum", "0.9"], "--momentum and --nesterov apply to --optimizer sgd only"),
])
def test_bad_options_get_one_clear_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_drawn_digits_are_labelled_pngs_the_mnist_preprocessing_accepts(tmp_path):
    fonts = own_digits.available_fonts(2)
    assert len(fonts) == 2
    paths = own_digits.draw_digits(tmp_path, fonts)
    assert len(paths) == 10 * 2 * len(own_digits.VARIANTS)
    for path in paths:
        digit, font, variant = path.stem.split("_")
        assert own_digits.label_of(path) == int(digit)
        assert font in fonts and variant in own_digits.VARIANTS
    font = next(iter(fonts))
    plain = preprocess_file(tmp_path / f"8_{font}_plain.png")
    rotated = preprocess_file(tmp_path / f"8_{font}_rotated+15.png")
    thick = preprocess_file(tmp_path / f"8_{font}_thick.png")
    assert plain.shape == (28, 28) and plain.max() == pytest.approx(1.0)
    assert np.abs(plain - rotated).max() > 0.5          # the variants really differ
    assert (thick > 0.5).sum() > (plain > 0.5).sum()    # thick strokes: more ink


def test_a_file_without_a_digit_label_is_refused(tmp_path):
    with pytest.raises(ExperimentError, match="name it <digit>_<anything>.png"):
        own_digits.label_of(tmp_path / "seven.png")


def test_complexity_replots_a_results_json(tmp_path):
    source = {"models": {"fc128": {"params": 101_770, "test_accuracy": 0.975, "epochs": 5},
                         "convnet": {"params": 34_826, "test_accuracy": 0.99, "epochs": 5}},
              "settings": {"epochs": 5}}
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(source))
    result = run("complexity", tmp_path / "out", "--from-json", str(path))
    assert result["models"] == source["models"]
    assert result["settings"] == source["settings"] and result["source"] == str(path)


def test_the_command_runs_as_a_package(tmp_path):
    """`python -m comparison.experiments` (the package's __main__.py), replotting a JSON."""
    source = {"models": {"tiny": {"params": 1_000, "test_accuracy": 0.9, "epochs": 1}},
              "settings": {"epochs": 1}}
    (tmp_path / "earlier.json").write_text(json.dumps(source))
    result = subprocess.run([sys.executable, "-m", "comparison.experiments", "complexity",
                             "--out", str(tmp_path / "out"), "--from-json",
                             str(tmp_path / "earlier.json")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "complexity.json").read_text())["models"] == \
        source["models"]


def test_complexity_refuses_a_json_of_another_shape(tmp_path, capsys):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"models": {"fc128": {"params": 1}}}))
    assert main(["complexity", "--out", str(tmp_path), "--from-json", str(path)]) == 2
    assert "expected a complexity.json" in capsys.readouterr().err


# --- end to end on real MNIST ---------------------------------------------------------


@needs_mnist
def test_epochs_records_every_epoch_marks_the_best_and_resumes(tmp_path, capsys):
    first = run("epochs", tmp_path, "--models", "fc128", "--epochs", "2", *TINY)
    fc = first["models"]["fc128"]
    assert [h["epoch"] for h in fc["history"]] == [1, 2]
    # The history read back from TensorBoard's events is what the training reported.
    trained = json.loads((Path(fc["logdir"]) / "result.json").read_text())["epochs"]
    for record, reported in zip(fc["history"], trained, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert record[key] == pytest.approx(reported[key], rel=1e-6), key
    val = [h["val_accuracy"] for h in fc["history"]]
    assert fc["chosen_epoch"] == int(np.argmax(val)) + 1
    assert fc["chosen_val_accuracy"] == max(val) and fc["params"] == 101_770
    assert first["settings"]["split"].startswith("first 300 training")

    # More epochs in the same --out continue the run from its checkpoint...
    more = run("epochs", tmp_path, "--models", "fc128", "--epochs", "3", *TINY)
    history = more["models"]["fc128"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and history[:2] == fc["history"]
    # ... the same command again reuses the finished run ...
    result_file = Path(more["models"]["fc128"]["logdir"]) / "result.json"
    stamp = result_file.stat().st_mtime_ns
    assert run("epochs", tmp_path, "--models", "fc128", "--epochs", "3", *TINY)["models"] == \
        more["models"]
    assert result_file.stat().st_mtime_ns == stamp
    # ... and other settings in the same folder are refused with one line.
    capsys.readouterr()
    assert main(["epochs", "--out", str(tmp_path), "--models", "fc128",
                             "--epochs", "3", "--limit", "200"]) == 2
    assert "holds a run with other settings" in capsys.readouterr().err


@needs_mnist
def test_l2_sweep_summarises_seeds_and_tests_the_best_run(tmp_path):
    result = run("l2-sweep", tmp_path, "--factors", "1e-5", "1e-3", "--replicates", "2",
                 "--epochs", "1", *TINY)
    assert [f["factor"] for f in result["factors"]] == [1e-5, 1e-3]
    runs = [r for f in result["factors"] for r in f["runs"]]
    assert len(runs) == 4 and len({r["logdir"] for r in runs}) == 4
    for f in result["factors"]:
        finals = [r["final_val_accuracy"] for r in f["runs"]]
        assert [r["seed"] for r in f["runs"]] == [0, 1]
        assert f["mean_val_accuracy"] == pytest.approx(np.mean(finals))
        assert f["std_val_accuracy"] == pytest.approx(np.std(finals, ddof=1))
    best = result["best_run"]
    assert best["final_val_accuracy"] == max(r["final_val_accuracy"] for r in runs)
    assert best["test_accuracy"] == pytest.approx(
        accuracy_on_test_set(Path(best["logdir"]) / "model.keras", "mlp500"), abs=1e-4)
    assert result["reference"]["accuracy"] == 0.9847
    for key in ("optimizer", "learning_rate", "schedule", "init", "epochs", "split"):
        assert key in result["settings"]


@needs_mnist
def test_own_digits_classifies_drawn_digits_and_your_own_files(tmp_path):
    result = run("own-digits", tmp_path / "drawn", "--model", "fc128", "--epochs", "1",
                 "--fonts", "1", "--limit", "500")
    assert result["count"] == 10 * len(own_digits.VARIANTS)
    assert round(result["accuracy"] * result["count"]) == result["count"] - len(result["mistakes"])
    assert set(result["by_variant"]) == set(own_digits.VARIANTS)
    assert set(result["by_digit"]) == {str(d) for d in range(10)}
    assert result["mnist_test_accuracy"] == pytest.approx(
        accuracy_on_test_set(result["model_path"], "fc128"), abs=1e-4)
    assert Path(result["network_input"]).is_file()

    mine = tmp_path / "mine"
    mine.mkdir()
    drawn = Path(result["images"])
    for name in ("3_a.png", "7_b.png"):
        (mine / name).write_bytes((drawn / f"{name[0]}_{next(iter(result['by_font']))}_plain.png")
                                  .read_bytes())
    own = run("own-digits", tmp_path / "own", "--model-path", result["model_path"],
              "--images", str(mine))
    assert own["count"] == 2 and set(own["by_font"]) == {"own"}


@needs_mnist
def test_complexity_trains_each_model_and_counts_its_parameters(tmp_path):
    result = run("complexity", tmp_path, "--models", "fc128", "tiny", "--epochs", "1", *TINY)
    assert list(result["models"]) == ["fc128", "tiny"]
    published = {"fc128": 795 * 128 + 10, "tiny": 1_765}  # the zoo's parameter table (docs/zoo.md)
    for name, model in result["models"].items():
        assert model["params"] == published[name]
        assert model["test_accuracy"] == pytest.approx(
            accuracy_on_test_set(Path(model["logdir"]) / "model.keras", name), abs=1e-4)
