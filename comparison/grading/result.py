"""One row of the check table, and the row for an exception in the student's code."""
from __future__ import annotations

import dataclasses
import inspect
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass
class CheckResult:
    """One row of the check table. error: the measured error (None when nothing could be
    measured, e.g. the student's code raised); where: the worst entry or the failing line;
    diagnosis: a pattern that explains the failure, or what was raised; detail: more
    lines (the student's traceback, a heatmap's path, entries left out at kinks);
    not_run: why the check could not run, when the student's code raised
    ("dense_backward raised ValueError at your line 39"), so that a report can say it once."""

    check: str
    passed: bool
    error: float | None
    threshold: float | None
    where: str | None = None
    diagnosis: str | None = None
    detail: str = ""
    not_run: str | None = None


def as_dict(result: CheckResult) -> dict:
    return dataclasses.asdict(result)


def source_files(impl: dict[str, Callable]) -> set[str]:
    """The files the functions of `impl` were written in: the student's."""
    functions = [inspect.unwrap(fn) for fn in impl.values()]  # under the grader's guard
    return {fn.__code__.co_filename for fn in functions if hasattr(fn, "__code__")}


def trace_lines(frames) -> list[str]:
    """Traceback lines of `frames`, a run of identical frames (a recursion) said once."""
    lines, previous, repeats = [], None, 0
    for f in frames:
        line = f'  File "{f.filename}", line {f.lineno}, in {f.name}\n    {f.line}'
        if line == previous:
            repeats += 1
            continue
        if repeats:
            lines.append(f"  [the line above repeated {repeats} more times]")
        lines.append(line)
        previous, repeats = line, 0
    if repeats:
        lines.append(f"  [the line above repeated {repeats} more times]")
    return lines


def raised(check: str, err: BaseException, files: set[str], threshold=None) -> CheckResult:
    """A failed row for an exception: the message as its diagnosis, the traceback lines in
    `files` (the student's file) only, never ours, as its detail."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename in files]
    message = f"{type(err).__name__}: {err}".splitlines()[0][:200]
    short = f"raised {type(err).__name__}"
    if type(err).__name__ == "StudentStopped":  # the child's exit() and KeyboardInterrupt
        short = str(err)
        message = f"your code {short}"
    if type(err).__name__ == "WrongReturnValue":  # checked by the grader: the message says it
        short = message = f"your {err}"
    if isinstance(err, MemoryError):
        message += " (more memory than the grader allows)"
    where = f"{Path(frames[-1].filename).name} line {frames[-1].lineno}" if frames else None
    not_run = (f"{frames[0].name} {short} at your line {frames[-1].lineno}" if frames
               else message)
    return CheckResult(check, False, None, threshold, where=where, diagnosis=message,
                       detail="\n".join(trace_lines(frames)), not_run=not_run)
