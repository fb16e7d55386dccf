"""compare.py parallel: the NumPy replicas against tf.distribute, on K logical CPUs and on
two worker processes. Each run is a fresh process: TensorFlow splits its CPU into
logical devices only before it first uses one, which this test process has long done."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import compare
from helpers import MNIST_DIR, needs_mnist

ROOT = Path(__file__).resolve().parents[1]


def run_parallel(tmp_path, *options, timeout=600):
    """`python compare.py parallel OPTIONS --json F` in a fresh process; (exit code, F's
    numbers, the printed output)."""
    out = tmp_path / "parallel.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    done = subprocess.run([sys.executable, str(ROOT / "compare.py"), "parallel", *options,
                           "--data-dir", MNIST_DIR, "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    return done.returncode, json.loads(out.read_text()), done.stdout


@needs_mnist
def test_two_replicas_of_an_mlp_agree_with_one_device_and_with_keras(tmp_path):
    code, result, printed = run_parallel(tmp_path, "--model", "fc16", "--replicas", "2",
                                         "--lockstep-steps", "5", "--sweep", "1", "2",
                                         "--limit", "256")
    assert code == 0 and result["passed"]
    grads = result["gradients"]
    assert grads["must_agree"] and grads["k_vs_one_device_max"] <= 1e-7
    assert len(grads["numpy_vs_keras"]["float64"]) == 4
    assert max(grads["numpy_vs_keras"]["float64"].values()) <= 1e-7
    assert max(grads["numpy_vs_keras"]["float32"].values()) <= 1e-4
    lockstep = result["lockstep"]
    assert len(lockstep["numpy"]) == 5 and lockstep["max_abs_diff"] <= 1e-4
    assert lockstep["numpy_replicas_identical"]
    rows = result["sweep"]["rows"]
    assert [r["global_batch"] for r in rows] == [32, 64] and [r["steps"] for r in rows] == [8, 4]
    assert rows[1]["lr"] == pytest.approx(rows[0]["lr"] * 2 ** 0.5)  # Adam: square root
    assert all(0 <= r["custom_val_accuracy"] <= 1 and r["fit_seconds"] > 0 for r in rows)
    assert max(len(line) for line in printed.splitlines()) <= 80


# Both kinds of BatchNorm in one fresh process: the four gradients of one batch of 8
# (float64) for 2 replicas of `best`, as `compare.py parallel` computes them.
BATCHNORM_RUN = """
import json
import sys
import argparse

import numpy as np

from keras_impl import distribute

distribute.use_logical_cpus(2)
from comparison import parallel
from helpers import random_batch

x, y = random_batch(8, seed=3, model="best")
errors = {}
for sync in (False, True):
    args = argparse.Namespace(model="best", replicas=2, seed=1, sync_bn=sync)
    grads = parallel.gradients_of(args, "float64", x, y)
    errors[sync] = {pair: max(parallel.errors_between(grads, *pair.split(), "elementwise").values())
                    for pair in ("numpy_k keras_k", "numpy_k numpy_1", "keras_k keras_1")}
json.dump({str(k): v for k, v in errors.items()}, sys.stdout)
"""


def test_batchnorm_replicas_match_keras_and_only_synchronized_match_one_device():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "tests")))}
    done = subprocess.run([sys.executable, "-c", BATCHNORM_RUN], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    for mode in ("False", "True"):  # each kind of BatchNorm: the twins compute the same
        assert errors[mode]["numpy_k keras_k"] <= 1e-7, errors
    # per-replica statistics (shards of 4): another function than one device's
    assert min(errors["False"]["numpy_k numpy_1"], errors["False"]["keras_k keras_1"]) > 1e-3
    assert max(errors["True"]["numpy_k numpy_1"], errors["True"]["keras_k keras_1"]) <= 1e-7


@needs_mnist
def test_two_worker_processes_train_as_one_process_with_two_replicas(tmp_path):
    code, result, printed = run_parallel(tmp_path, "--model", "fc16", "--workers", "2",
                                         "--lockstep-steps", "5", "--sweep")
    print(printed)
    assert code == 0 and result["passed"]
    assert len(result["losses"]["workers"]) == 2 and len(result["losses"]["one_process"]) == 5
    differences = result["differences"]
    assert differences["workers vs each other"] == {"losses": 0.0, "weights": 0.0}
    assert max(differences["workers vs 1 process, 2 replicas"].values()) <= 1e-12
    assert max(differences["workers vs NumPy, 2 replicas"].values()) <= 1e-9


def test_a_global_batch_the_replicas_cannot_share_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        compare.parse_args(["parallel", "--replicas", "3", "--batch-size", "64"])
    assert exit_.value.code == 2
    assert "not divisible by 3 replicas" in capsys.readouterr().err
