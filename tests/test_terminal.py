"""A clean terminal: no TensorFlow start-up chatter, no .h5 notice, no Ctrl-C traceback
(plumbing.quiet), and every rich table of the command lines whole at 80 columns."""
import argparse
import ast
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from plumbing import quiet
from helpers import write_idx_folder

ROOT = Path(__file__).resolve().parents[1]
# Every command line module: each must import plumbing.quiet before anything else.
ENTRY_POINTS = ["compare.py", "keras_impl/train.py", "keras_impl/train_cli.py",
                "keras_impl/test.py", "keras_impl/export.py", "comparison/scratch_train.py",
                "keras_impl/data.py", "keras_impl/augment.py", "comparison/experiments/accuracy.py",
                "comparison/experiments/__main__.py"]
TF_STARTUP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796093696.808152   21642 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors",
    "I0000 00:00:1796093696.808436   21642 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1727000000.000000    4242 cuda_blas.cc:1418] Unable to register cuBLAS "
    "factory: Attempting to register factory for plugin cuBLAS when one has already been "
    "registered",
]


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    # The fixed validation split takes 500 per class, so the training set needs more.
    return write_idx_folder(tmp_path_factory.mktemp("fake-mnist"), n_train=5200, n_test=40)


def command_env(**extra) -> dict:
    """The environment of a user who set nothing: no TF_CPP_MIN_LOG_LEVEL, not verbose."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TWINNET_VERBOSE")}
    return {**env, **extra}


# --- TensorFlow's start-up lines and Keras's .h5 notice ------------------------------------

def test_a_training_run_prints_nothing_on_stderr(tmp_path, fake_mnist):
    """A real run, start-up and .h5 export included; TWINNET_VERBOSE=1 shows the noise."""
    train = [sys.executable, "-m", "keras_impl.train", "--model", "fc8", "--epochs", "1",
             "--limit", "64", "--batch-size", "16", "--data-dir", str(fake_mnist)]
    quiet_run = subprocess.run([*train, "--logdir", str(tmp_path / "quiet")], cwd=ROOT,
                               env=command_env(), capture_output=True, text=True, timeout=300)
    assert quiet_run.returncode == 0, quiet_run.stderr
    assert quiet_run.stderr == ""
    assert "epoch 1/1" in quiet_run.stdout and (tmp_path / "quiet" / "model.h5").is_file()

    verbose = subprocess.run([*train, "--logdir", str(tmp_path / "verbose")], cwd=ROOT,
                             env=command_env(TWINNET_VERBOSE="1"), capture_output=True,
                             text=True, timeout=300)
    assert verbose.returncode == 0, verbose.stderr
    assert quiet.H5_NOTICE in verbose.stderr


def test_startup_filter_drops_tensorflows_lines_and_keeps_the_rest(capfd):
    real = "UserWarning: something a user must see\n"
    with quiet.startup_noise_filtered():
        os.write(2, "\n".join([*TF_STARTUP_LINES[:2], real.strip(),
                               *TF_STARTUP_LINES[2:]]).encode() + b"\n")
    assert capfd.readouterr().err == real


@pytest.mark.parametrize("line", TF_STARTUP_LINES)
def test_each_startup_line_is_known_noise(line):
    assert quiet.STARTUP_NOISE.search(line)


def test_the_h5_notice_goes_and_other_warnings_stay(caplog):
    absl = logging.getLogger("absl")
    with caplog.at_level(logging.WARNING, logger="absl"):
        with quiet.h5_notice_silenced():
            absl.warning("You are saving your model as an HDF5 file via `model.save()`. This "
                         "file format is considered legacy.")
            absl.warning("a real warning")
        absl.warning("You are saving your model as an HDF5 file, outside the export")
    assert [r.getMessage() for r in caplog.records] == [
        "a real warning", "You are saving your model as an HDF5 file, outside the export"]


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_every_command_line_imports_quiet_first(path):
    # keras_impl/train.py, which students import too, quiets only when run as a command.
    statements = [node.body[0] if isinstance(node, ast.If)
                  and ast.unparse(node.test) == "__name__ == '__main__'" else node
                  for node in ast.parse((ROOT / path).read_text()).body]
    imports = [node for node in statements
               if isinstance(node, (ast.Import, ast.ImportFrom))
               and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
    first = imports[0]
    names = ([alias.name for alias in first.names] if isinstance(first, ast.Import)
             else [first.module])
    assert names == ["plumbing.quiet"], f"{path}: first import is {names}"


def test_importing_the_training_loop_installs_no_hook():
    """A student who imports keras_impl.train sees TensorFlow as it is; the command
    line (the same file run with -m) imports plumbing.quiet first."""
    proc = subprocess.run([sys.executable, "-c", "import sys, keras_impl.train; "
                           "print(sorted(m for m in sys.modules if m.startswith('plumbing')))"],
                          cwd=ROOT, env=command_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.stdout.strip() == "[]", proc.stderr


# --- Ctrl-C with nothing to catch it -------------------------------------------------------

def test_an_uncaught_ctrl_c_is_one_line_and_exits_as_ctrl_c():
    proc = subprocess.run([sys.executable, "-c", "import plumbing.quiet\n"
                           "raise KeyboardInterrupt"], cwd=ROOT, env=command_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.stderr == "interrupted\n"
    assert proc.returncode == -signal.SIGINT  # the shell reports 130


def test_ctrl_c_during_start_up_is_one_line(tmp_path, fake_mnist):
    """Ctrl-C half a second in: TensorFlow is still loading."""
    proc = subprocess.Popen([sys.executable, "-m", "keras_impl.train", "--model", "fc8",
                             "--data-dir", str(fake_mnist), "--logdir", str(tmp_path / "run")],
                            cwd=ROOT, env=command_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert err.count("\n") == 1 and err.startswith("interrupted") and "Traceback" not in err
    assert proc.returncode in (-signal.SIGINT, 128 + signal.SIGINT)


# --- tables at 80 columns ------------------------------------------------------------------

def console80() -> Console:
    return Console(width=80, file=io.StringIO(), color_system=None)


def assert_whole_at_80(text: str) -> None:
    assert text.strip(), "nothing was printed"
    assert "…" not in text, f"a cell is cut at 80 columns:\n{text}"
    assert max(len(line) for line in text.splitlines()) <= 80


def test_bench_tables(monkeypatch):
    from comparison import bench

    results = json.loads((ROOT / "results" / "bench.json").read_text())
    results.setdefault("rounds", 3)
    results["busy_processes"] = 2  # the slowdown table too, with wide figures
    for r in results["models"].values():
        for engine in ("numpy", "numpy_all_cpus", "numpy_1thread", "keras_fit"):
            # a file from a run on 2 idle CPUs: there the engine used both
            r.setdefault(f"{engine}_s_per_epoch", r["numpy_s_per_epoch"])
            r.update({f"{engine}_slowdown": 17.25, f"{engine}_fair_slowdown": 2.75})
    console = console80()
    tables = bench.bench_tables(results)
    for table in tables:
        console.print(table)
    assert len(tables) == 3
    assert_whole_at_80(console.file.getvalue())


def test_compare_summary_and_gradient_tables(fake_mnist):
    from comparison import run

    console = console80()
    training = {"seconds_per_epoch": 14.31, "images_per_second": 3843.2, "test_accuracy": 0.9807,
                "epochs": [{"val_accuracy": 0.9812}]}
    grads = {"max_error": 2.4e-7, "passed": True}
    run.print_summary({name: {"params": {"totals": {"numpy": 198_122}},
                              "gradients": {"float64": grads, "float32": grads},
                              "lockstep": {"max_abs_diff": 1.7e-4},
                              "training": {"numpy": training, "keras": training}}
                       for name in ("fc128", "convnet", "best")}, console)
    args = argparse.Namespace(batch_size=2, seed=0, data_dir=str(fake_mnist), limit=None)
    run.gradient_section("best", args, console)  # the longest variable names: BatchNorm's
    assert_whole_at_80(console.file.getvalue())


def test_parameter_tables():
    from comparison import params
    from scratch.model import build_model, print_param_table

    console = console80()
    params.main(argparse.Namespace(model=["best", "lenet"], all=False, hidden=None),
                          console)
    print_param_table(build_model("best"), console)
    assert_whole_at_80(console.file.getvalue())


def test_gradient_check_tables(monkeypatch, capsys):
    from comparison import gradtable
    from scratch import gradcheck

    monkeypatch.setattr(gradtable, "ENTRIES", 1)  # the same rows, checked on fewer entries
    console = console80()
    gradtable.main(argparse.Namespace(model=["best"], seed=0, batch_size=2), console)
    assert_whole_at_80(console.file.getvalue())
    monkeypatch.setenv("COLUMNS", "80")  # the command makes its own Console
    gradcheck.main(["best", "--batch", "1", "--entries", "1"])
    assert_whole_at_80(capsys.readouterr().out)


def test_test_report_and_robustness_tables():
    from keras_impl import test

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=10_000)
    logits = rng.normal(size=(10_000, 10))
    logits[np.arange(9_000), labels[:9_000]] += 10  # mostly right: four-digit diagonal
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    console = console80()
    test.print_report(test.evaluate(log_probs, labels), console)
    sets = {name: {"accuracy": 0.9931, "errors": 69, "loss": 0.0213}
            for name in ("original", "rotate -15", "rotate +15", "shift left 3", "scale 0.8",
                         "thick", "thin")}
    test.print_robustness({"count": 10_000, "sets": sets, "mean_transformed_accuracy": 0.99},
                          "test", console)
    assert_whole_at_80(console.file.getvalue())


def test_data_info_table(monkeypatch, capsys, fake_mnist):
    from keras_impl import data

    monkeypatch.setenv("COLUMNS", "80")  # print_info makes its own Console
    data.print_info(fake_mnist)
    out = capsys.readouterr().out
    table = out[:out.index("sha256")]  # the digests after it are long lines on purpose
    assert_whole_at_80(table)
