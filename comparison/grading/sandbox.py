"""One student file graded in a child process with limits; what happened, in one line.

    graded = grade_file(Path("mine.py"), Limits(timeout=120))
    graded.results      # the rows (CheckResult), [] when the file could not be graded
    graded.verdict      # None, or one line: "timed out after 120 s at your line 12 (...)"
    graded.output       # what the student's code printed, cut to OUTPUT_SHOWN characters

The child (`python -m comparison.grading.child`) runs in its own temporary working folder,
in its own session (a Ctrl-C at the terminal reaches the grader, which ends it), with
stdin closed and its output going to a file. It limits its own address space and the
size of the files it writes; the grader waits at most `timeout` seconds, then asks
faulthandler where the code was, and kills the whole process group. No result file
means the process ended early: killed by a signal (a crash), or ended with a status of
its own (os._exit, or exit() at the wrong moment); the verdict names which.

This keeps the grader and the grading of other files safe from a student's mistakes.
It is not a security boundary: the file's code runs with the rights of whoever runs the
grader, as it would under pytest. Untrusted files belong in a throwaway account or a
container (docs/grading.md).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from comparison.grading.result import CheckResult

PROJECT = Path(__file__).resolve().parents[2]
OUTPUT_SHOWN = 2000  # characters of the student's printed output kept for the report
HANG_DUMP = "where_it_hung.txt"  # faulthandler's stack dump when the time is up
DUMP_WAIT = 5.0  # seconds faulthandler gets to write where the code hung


@dataclass(frozen=True)
class Limits:
    """timeout: seconds per file (import, checks, network); memory_mb: address space of
    the child (TensorFlow alone reserves about 2 GB of it); output_mb: the most the
    student's code may print, and the largest file it may write."""

    timeout: float = 300.0
    memory_mb: int = 6144
    output_mb: int = 5
    network: bool = True


@dataclass
class Graded:
    """What grading one file gave: the layer, the rows, a one-line verdict when the file
    could not be graded or the process did not finish, the student's printed output."""

    file: str
    layer: str | None = None
    results: list[CheckResult] = field(default_factory=list)
    verdict: str | None = None
    output: str = ""
    output_lines: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict is None and bool(self.results) and all(r.passed for r in self.results)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


CRASHES = {"SIGSEGV": "a segmentation fault", "SIGBUS": "a bus error", "SIGABRT": "an abort",
           "SIGFPE": "a floating-point trap", "SIGILL": "an illegal instruction",
           "SIGKILL": "killed from outside (out of memory?)"}


def ended_early(status: int) -> str:
    """The verdict for a child that ended without writing its result."""
    if status < 0:
        name = signal_name(-status)
        return f"the grading process crashed ({CRASHES.get(name, name)}, {name})"
    return (f"the grading process ended early with exit status {status} and no result: "
            "your code ended it (os._exit? a C extension?)")


def where_in(dump: str, path: Path) -> str:
    """"at your line N (in f)" from faulthandler's stack dump, innermost student frame."""
    found = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', dump)
    mine = [(line, name) for file, line, name in found if file == str(path)]
    return f" at your line {mine[0][0]} (in {mine[0][1]})" if mine else ""


def child_command(path: Path, work: Path, layer, plots, limits: Limits) -> list[str]:
    command = [sys.executable, "-m", "comparison.grading.child", str(path),
               str(work / "result.json"), "--hang-dump", str(work / HANG_DUMP),
               "--memory-mb", str(limits.memory_mb), "--output-mb", str(limits.output_mb)]
    if layer:
        command += ["--layer", layer]
    if plots is not None:
        command += ["--plots", str(Path(plots).resolve())]
    if not limits.network:
        command.append("--no-network")
    return command


def child_environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    env.update({"MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def grade_file(path: Path, limits: Limits = Limits(), layer: str | None = None,
               plots=None) -> Graded:
    """Grade `path` in a child process within `limits`; never raises for the student's
    doing, never waits longer than limits.timeout plus a few seconds."""
    path = Path(path).resolve()
    graded = Graded(str(path))
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="twinnet-grade-") as folder:
        work = Path(folder)
        result, printed = work / "result.json", work / "printed.txt"
        with open(printed, "wb") as out:
            child = subprocess.Popen(child_command(path, work, layer, plots, limits),
                                     cwd=work, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=child_environment(),
                                     start_new_session=True)
            try:
                status = child.wait(limits.timeout)
            except subprocess.TimeoutExpired:
                status = None
                os.killpg(child.pid, signal.SIGUSR1)  # faulthandler: where is it?
                wait_for_dump(work / HANG_DUMP)
            finally:
                stop_group(child)
        graded.seconds = time.monotonic() - start
        text = printed.read_bytes()
        graded.output = text[:OUTPUT_SHOWN].decode("utf-8", "replace")
        graded.output_lines = text.count(b"\n")
        flooded = len(text) >= limits.output_mb << 20
        if status is None:
            dump_file = work / HANG_DUMP
            dump = dump_file.read_text(errors="replace") if dump_file.exists() else ""
            graded.verdict = (f"timed out after {limits.timeout:g} s{where_in(dump, path)}: "
                              "an endless loop, or far too slow")
        elif result.exists():
            read_result(graded, result.read_text(errors="replace"))
        else:
            graded.verdict = ended_early(status)
        if flooded:
            flood = (f"your code printed more than {limits.output_mb} MB (an output flood), "
                     "cut there")
            graded.verdict = flood if graded.verdict is None else f"{graded.verdict}; {flood}"
    return graded


def wait_for_dump(path: Path) -> None:
    """Until faulthandler's stack dump is in `path`, at most DUMP_WAIT seconds."""
    end = time.monotonic() + DUMP_WAIT
    while time.monotonic() < end:
        if path.exists() and "line" in path.read_text(errors="replace"):
            time.sleep(0.2)  # the rest of the dump
            return
        time.sleep(0.1)


def stop_group(child: subprocess.Popen) -> None:
    """Kill the child and whatever it started (its own session), and reap it."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.wait()


def read_result(graded: Graded, text: str) -> None:
    """The child's result into `graded`; one that is not what the child writes (the
    student's code wrote over it) is a verdict."""
    try:
        result = json.loads(text)
        if "error" in result:
            graded.verdict = str(result["error"])
            return
        graded.layer = str(result["layer"])
        graded.results = [CheckResult(**row) for row in result["checks"]]
    except (ValueError, TypeError, KeyError, AttributeError):
        graded.verdict = "the grading process left an unreadable result: your code wrote over it?"
