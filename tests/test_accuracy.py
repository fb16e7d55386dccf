"""comparison.experiments.accuracy (`python -m comparison.experiments.accuracy`): recipes run per seed,
resumed or reused, and summarised."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import needs_mnist
from comparison.experiments import accuracy

ROOT = Path(__file__).resolve().parents[1]
pytestmark = needs_mnist

QUICK = ("--limit", "1024", "--batch-size", "32", "--lr", "0.01")
TINY = {"keras-tiny": accuracy.Recipe("fc8", "keras", QUICK, 1),
        "numpy-tiny": accuracy.Recipe("fc8", "numpy", (*QUICK, "--augment"), 1)}


@pytest.fixture
def tiny_recipes(monkeypatch):
    monkeypatch.setattr(accuracy, "RECIPES", TINY)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Both tiny recipes run for seeds 0 and 1 (four trainings of a few seconds)."""
    out = tmp_path_factory.mktemp("accuracy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(accuracy, "RECIPES", TINY)
        for name in TINY:
            assert accuracy.main(["run", name, "--seeds", "0", "1", "--out", str(out)]) == 0
    return out


@pytest.mark.slow  # four trainings (tiny_runs): a minute of CI's budget
def test_run_table_and_rerun(tiny_runs, tiny_recipes, monkeypatch):
    tmp_path = tiny_runs
    rows = json.loads((tmp_path / "accuracy.json").read_text())["rows"]
    assert [row["recipe"] for row in rows] == list(TINY)
    for row in rows:
        tests = [json.loads((tmp_path / f"{row['recipe']}-seed{s}-test.json").read_text())
                 for s in (0, 1)]
        values = [t["sets"]["original"]["accuracy"] for t in tests]
        assert row["seeds"] == [0, 1] and row["test_accuracy"]["values"] == values
        assert row["test_accuracy"]["mean"] == pytest.approx(np.mean(values))
        assert row["test_accuracy"]["std"] == pytest.approx(np.std(values, ddof=1))
        assert 0.25 < row["test_accuracy"]["mean"] < 1  # 32 steps of fc8 on 1,024 images
        assert row["params"] == 795 * 8 + 10
        assert row["command"].startswith("python -m ")
    assert (tmp_path / "runs" / "keras-tiny-seed0" / "model.keras").exists()
    assert (tmp_path / "runs" / "numpy-tiny-seed1.npz").exists()
    assert "| fc8 | 6,370 | numpy |" in (tmp_path / "accuracy.md").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("finished seeds must not be trained again")

    monkeypatch.setattr(accuracy.subprocess, "call", no_training)
    assert accuracy.main(["run", "numpy-tiny", "--seeds", "0", "1", "--out", str(tmp_path)]) == 0


@pytest.mark.slow  # four trainings (tiny_runs): a minute of CI's budget
def test_numpy_model_is_measured_through_its_keras_twin(tiny_runs):
    """The twin's test accuracy equals the NumPy model's own forward pass."""
    from keras_impl.data import load_mnist
    from scratch.model import load_npz

    images, labels = load_mnist("test")
    numpy_model = load_npz(tiny_runs / "runs" / "numpy-tiny-seed1.npz")
    ours = np.mean(numpy_model.forward(images.reshape(-1, 784) / np.float32(255)).argmax(1)
                   == labels)
    result = json.loads((tiny_runs / "numpy-tiny-seed1-test.json").read_text())
    assert result["sets"]["original"]["accuracy"] == pytest.approx(ours, abs=1e-4)


def test_failed_training_is_one_line(tiny_recipes, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(accuracy.subprocess, "call", lambda *a, **k: 1)
    assert accuracy.main(["run", "keras-tiny", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == \
        "error: keras-tiny seed 0: training exited with code 1"


def test_the_command_keeps_its_name(tmp_path):
    """`python -m comparison.experiments.accuracy` runs comparison.experiments.accuracy's main."""
    result = subprocess.run([sys.executable, "-m", "comparison.experiments.accuracy", "table", "--out",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "accuracy.json").read_text()) == {"rows": []}
