"""Every output of every command line: checked before any work, written whole or not at all.

An output folder that cannot be made (one inside /proc, where nobody, root included, may
make folders) is refused while the arguments are parsed: one line naming the option,
exit 2, no traceback, nothing written. A full disk is a real one: a small tmpfs mounted
for the test (we run as root here and in CI), filled up; where mounting is not allowed
those tests skip and say why. On it every write ends in one line naming the file, leaves
no partial or temporary file, and a training keeps its last checkpoint for --resume.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_command, write_idx_folder
from test_bad_input import assert_refused, run

UNMAKEABLE = Path("/proc/twinnet-no-such-folder")  # mkdir fails here, for root too


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A small IDX folder and a student's file for `compare.py check`."""
    root = tmp_path_factory.mktemp("outputs")
    student = root / "relu.py"
    student.write_text("import numpy as np\n\n\ndef relu_forward(x):\n    return np.maximum(x, 0), x"
                       "\n\n\ndef relu_backward(dout, cache):\n    return {'x': dout * (cache > 0)}\n")
    return {"root": root, "idx": write_idx_folder(root / "idx"), "student": student}


def refusal_cases():
    """{name: (argv with OUT for the unmakeable path, the option the error names)}: every
    output option of every command line, each refused before TensorFlow is imported."""
    compare, scratch_train = "compare.py", ["-m", "comparison.scratch_train", "--model", "fc16"]
    return {
        "compare --json": ([compare, "--model", "fc16", "--json", "OUT/run.json"], "--json"),
        "compare --figure": ([compare, "--model", "fc16", "--figure", "OUT/c.png"], "--figure"),
        "compare --logdir": ([compare, "--model", "fc16", "--logdir", "OUT"], "--logdir"),
        "compare params --json": ([compare, "params", "--json", "OUT/p.json"], "--json"),
        "compare gradcheck --json": ([compare, "gradcheck", "--json", "OUT/g.json"], "--json"),
        "compare bench --json": ([compare, "bench", "--json", "OUT/b.json"], "--json"),
        "compare profile --figure": ([compare, "profile", "--figure", "OUT/p.png"], "--figure"),
        "compare profile --json": ([compare, "profile", "--json", "OUT/p.json"], "--json"),
        "compare exercise --out": ([compare, "exercise", "relu", "--out", "OUT/relu.py"],
                                   "--out"),
        "compare check --json": ([compare, "check", "STUDENT", "--json", "OUT/c.json"], "--json"),
        "compare check --plots": ([compare, "check", "STUDENT", "--plots", "OUT"], "--plots"),
        "compare bugs --json": ([compare, "bugs", "--fast", "--json", "OUT/b.json"], "--json"),
        "compare lab --cache-dir": ([compare, "lab", "--cache-dir", "OUT"], "--cache-dir"),
        "keras_impl.test --json": (["-m", "keras_impl.test", "--model-path", "STUDENT",
                                    "--json", "OUT/t.json"], "--json"),
        "keras_impl.test --plots": (["-m", "keras_impl.test", "--model-path", "STUDENT",
                                     "--plots", "OUT"], "--plots"),
        "keras_impl.data --export-png": (["-m", "keras_impl.data", "--export-png", "OUT"],
                                         "--export-png"),
        "scratch_train --json": ([*scratch_train, "--json", "OUT/s.json"], "--json"),
        "scratch_train --save": ([*scratch_train, "--save", "OUT/s.npz"], "--save"),
        "experiments --out": (["-m", "comparison.experiments", "epochs", "--fast", "--out",
                               "OUT"], "--out"),
        "experiments.accuracy --out": (["-m", "comparison.experiments.accuracy", "table",
                                        "--out", "OUT"], "--out"),
    }


REFUSALS = refusal_cases()


@pytest.mark.parametrize("case", REFUSALS)
def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work(inputs, case):
    argv, option = REFUSALS[case]
    argv = [str(inputs["student"]) if a == "STUDENT" else a.replace("OUT", str(UNMAKEABLE))
            for a in argv]
    assert_refused(run(*argv), f"argument {option}", f"cannot make the folder '{UNMAKEABLE}'")


# --- command lines that import TensorFlow first: in-process, through the same main() ----


def test_keras_commands_refuse_an_output_folder_that_cannot_be_made(inputs, capsys):
    from keras_impl import augment, export, train_cli

    out = UNMAKEABLE / "x"
    for main, argv, option in [
            (train_cli.main, ["--model", "fc16", "--json", f"{out}.json"], "--json"),
            (train_cli.main, ["--model", "fc16", "--logdir", out], "--logdir"),
            (export.main, ["--model-path", inputs["student"], "--h5", f"{out}.h5"], "--h5"),
            (augment.main, ["--figure", f"{out}.png"], "--figure")]:
        assert run_command(main, *argv) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"argument {option}: cannot make the folder '{UNMAKEABLE}'" in line, line


def test_training_refuses_a_model_file_name_taken_by_a_folder(inputs, tmp_path, capsys):
    from keras_impl import train_cli

    (tmp_path / "run" / "model.keras").mkdir(parents=True)  # written after the training
    assert run_command(train_cli.main, "--model", "fc16", "--logdir", tmp_path / "run",
                       "--data-dir", inputs["idx"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --logdir" in line and "model.keras' is a folder" in line, line
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- a full disk, for real ------------------------------------------------------------


def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        why = result.stderr.strip() or f"mount exited {result.returncode}"
        pytest.skip(f"cannot mount a small tmpfs to fill up ({why}): the full-disk tests "
                    "need root")


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of `folder` up to `leave` free bytes; returns the filler."""
    filler = folder / "filler"
    stats = os.statvfs(folder)
    with open(filler, "wb") as f:
        f.write(bytes(max(stats.f_bavail * stats.f_frsize - leave, 0)))
    return filler


@pytest.fixture
def full_disk(tmp_path):
    """A 2 MB tmpfs, filled up: every write on it fails with ENOSPC."""
    folder = tmp_path / "full"
    mount_tmpfs(folder, "2m")
    fill(folder)
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def left_on(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != "filler")


def test_writes_on_a_full_disk_fail_in_one_line_and_leave_no_file(full_disk):
    from matplotlib.figure import Figure

    from plumbing.files import WriteError, write_figure, write_json

    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    for write, name in [(lambda path: write_json(path, {"x": list(range(5000))}), "a.json"),
                        (lambda path: write_figure(fig, path), "new/a.png")]:
        with pytest.raises(WriteError) as err:
            write(full_disk / name)
        assert str(err.value) == f"{full_disk / name}: cannot write (No space left on device)"
    assert left_on(full_disk) == []  # no file, no temporary file, no folder made for it


@pytest.mark.parametrize("argv, written", [
    (["compare.py", "exercise", "relu", "--out", "FULL/relu.py"], "relu.py"),
    (["-m", "keras_impl.data", "--export-png", "FULL/pngs", "--count", "10", "--data-dir",
      "IDX"], "pngs/example_input_0_0.png"),
])
def test_a_command_on_a_full_disk_ends_in_one_line_naming_the_file(inputs, full_disk, argv,
                                                                    written):
    argv = [a.replace("FULL", str(full_disk)).replace("IDX", str(inputs["idx"])) for a in argv]
    assert_refused(run(*argv), f"{full_disk / written}: cannot write (No space left on device)")
    assert left_on(full_disk) == []  # no file, no temporary file, no folder made for it


def test_a_training_on_a_full_disk_stops_in_one_line_and_resumes_from_its_checkpoint(
        tmp_path, capsys):
    """Epoch 1 is checkpointed; the disk fills; epoch 2 cannot be checkpointed: one line
    naming the file, no ckpt-2_temp left; with room again --resume finishes the run."""
    from keras_impl import data, train_cli

    idx = write_idx_folder(tmp_path / "idx", n_train=data.VAL_SIZE + 40)  # 40 to train on
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "4m")
    try:
        run = disk / "run"
        train = ["--model", "fc16", "--limit", "40", "--batch-size", "20", "--data-dir", idx,
                 "--logdir", run, "--json", tmp_path / "summary.json"]
        assert run_command(train_cli.main, *train, "--epochs", "1") == 0
        filler = fill(disk, leave=20_000)  # room for the epoch's events, not its checkpoint
        assert run_command(train_cli.main, *train, "--epochs", "2", "--resume") == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(errors) == 1 and "No space left on device" in errors[0], errors
        assert errors[0] == (f"error: {run}/checkpoints/ckpt-2: cannot write the checkpoint "
                             "(No space left on device); --resume continues from "
                             f"{run}/checkpoints/ckpt-1")
        assert not list(run.rglob("*_temp*")) and not list(run.rglob(".*tmp*"))
        filler.unlink()
        assert run_command(train_cli.main, *train, "--epochs", "2", "--resume") == 0
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert [e["epoch"] for e in summary["epochs"]] == [1, 2]
        assert summary["resumed_from"] == 1 and (run / "model.h5").is_file()
    finally:
        subprocess.run(["umount", str(disk)], check=True)
