"""One row of the check table, and the row for an exception in the student's code."""
from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass
class CheckResult:
    """One row of the check table. error: the measured error (None when nothing could be
    measured, e.g. the student's code raised); where: the worst entry or the failing line;
    diagnosis: a pattern that explains the failure, or what was raised; detail: more
    lines (the student's traceback, a heatmap's path, entries left out at kinks)."""

    check: str
    passed: bool
    error: float | None
    threshold: float | None
    where: str | None = None
    diagnosis: str | None = None
    detail: str = ""


def as_dict(result: CheckResult) -> dict:
    return dataclasses.asdict(result)


def source_files(impl: dict[str, Callable]) -> set[str]:
    """The files the functions of `impl` were written in: the student's."""
    return {fn.__code__.co_filename for fn in impl.values() if hasattr(fn, "__code__")}


def raised(check: str, err: BaseException, files: set[str], threshold=None) -> CheckResult:
    """A failed row for an exception: the message as its diagnosis, the traceback lines in
    `files` (the student's file) only, never ours, as its detail."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename in files]
    message = f"{type(err).__name__}: {err}".splitlines()[0]
    trace = [f'  File "{f.filename}", line {f.lineno}, in {f.name}\n    {f.line}' for f in frames]
    where = f"{Path(frames[-1].filename).name} line {frames[-1].lineno}" if frames else None
    return CheckResult(check, False, None, threshold, where=where, diagnosis=message,
                       detail="\n".join(trace))
