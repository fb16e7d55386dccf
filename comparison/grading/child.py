"""The process a student's file is graded in: `python -m comparison.grading.child`.

    python -m comparison.grading.child FILE RESULT.json --memory-mb 6144 --output-mb 5
        --hang-dump STACK.txt [--layer L] [--plots DIR] [--no-network]

Started by `comparison.grading.sandbox`, one per file, in a temporary working folder with
its output going to a file. It limits itself first (address space, the size of any file
it writes, no core dump), then imports the student's file, runs every check and writes
RESULT.json: {"file", "layer", "checks": [rows]} or {"file", "error": one line}. Whatever
the student's code does to this process (an endless loop, os._exit, a crash, a flood of
output) the parent notices from outside; what it raises (exit(), KeyboardInterrupt,
RecursionError, MemoryError) becomes a failed row here, see `guarded`.
"""
from __future__ import annotations

import argparse
import faulthandler
import functools
import json
import resource
import signal
import sys
from pathlib import Path


def limit_self(memory_mb: int, output_mb: int) -> None:
    """Address space, the size of every file written (its printed output among them: a
    flood ends in OSError "File too large" in the student's print), no core file, and an
    end when the grader ends (Linux's parent-death signal: a killed grader leaves no
    endless loop running)."""
    import ctypes

    libc = ctypes.CDLL(None)
    if hasattr(libc, "prctl"):
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (output_mb << 20, output_mb << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class StudentStopped(Exception):
    """The student's code raised what would end a program (exit(), KeyboardInterrupt)."""


def guarded(function):
    """`function` with exit() and KeyboardInterrupt turned into StudentStopped (an ordinary
    exception, so the row that called it fails and the others still run), keeping the
    student's traceback."""
    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except SystemExit as err:
            code = "" if err.code is None else repr(err.code)
            stopped = StudentStopped(f"called exit({code})")
            raise stopped.with_traceback(err.__traceback__) from None
        except KeyboardInterrupt as err:
            stopped = StudentStopped("raised KeyboardInterrupt")
            raise stopped.with_traceback(err.__traceback__) from None
    return call


def grade(args) -> dict:
    from comparison.grading import student
    from comparison.grading.checks import as_dict, layer_checks

    try:
        layer, functions = student.load(args.file, args.layer)
    except student.StudentFileError as err:
        return {"file": str(args.file), "error": str(err)}
    guarded_functions = {name: guarded(fn) for name, fn in functions.items()}
    results = layer_checks(layer, guarded_functions, plots=args.plots, network=args.network)
    return {"file": str(args.file), "layer": layer, "checks": [as_dict(r) for r in results]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comparison.grading.child")
    parser.add_argument("file", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--layer")
    parser.add_argument("--plots", type=Path)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--output-mb", type=int, required=True)
    parser.add_argument("--hang-dump", type=Path, required=True,
                        help="where faulthandler writes the stack on SIGUSR1")
    parser.add_argument("--no-network", dest="network", action="store_false")
    args = parser.parse_args(argv)
    limit_self(args.memory_mb, args.output_mb)
    # every thread: the signal may land on one of TensorFlow's, which runs no Python
    faulthandler.register(signal.SIGUSR1, file=open(args.hang_dump, "w"), all_threads=True)
    import plumbing.quiet  # noqa: F401 - before TensorFlow loads
    sys.path.insert(0, str(args.file.resolve().parent))  # the student's own helper modules
    try:
        result = grade(args)
    except Exception as err:  # noqa: BLE001 - a failure of the grader's: said in one line
        result = {"file": str(args.file),
                  "error": f"{args.file}: the grader failed on it: {type(err).__name__}: "
                           f"{err} (please report this, with the file)"}
    text = json.dumps(result)
    args.result.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
