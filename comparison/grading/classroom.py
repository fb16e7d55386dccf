"""A whole class at once: every submission graded in its own child process, N at a time,
then a gradebook, the class's most common mistakes, and Gradescope's results.json.

    python compare.py check SUBMISSIONS/ --gradebook grades.csv [--gradescope results.json]
        [--layer L] [--jobs N] [--timeout S]

SUBMISSIONS/ holds one `.py` file per student (the student is the file's name) or one
folder per student (the student is the folder's name; the `.py` file in it that defines
the layer's functions is graded, and its other modules can be imported from it).
"""
from __future__ import annotations

import csv
import io
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from comparison.grading.sandbox import Graded, grade_file

IGNORED = ("__pycache__",)


@dataclass
class Submission:
    student: str
    path: Path | None  # the file to grade; None when the folder holds none
    problem: str | None = None  # why there is nothing to grade


def defines_exercise_functions(path: Path) -> bool:
    from comparison.grading.exercise import layer_names, reference_functions

    text = path.read_bytes().decode("utf-8", "replace")
    return any(re.search(rf"^def {name}\b|\b{name}\b.*import|import.*\b{name}\b", text, re.M)
               for layer in layer_names() for name in reference_functions(layer))


def folder_submission(folder: Path) -> Submission:
    """The one .py file of a student's folder, or the one of them defining exercise functions."""
    files = sorted(p for p in folder.glob("*.py") if p.is_file())
    if len(files) > 1:
        files = [p for p in files if defines_exercise_functions(p)] or files
    if len(files) == 1:
        return Submission(folder.name, files[0])
    if not files:
        return Submission(folder.name, None, f"{folder}: no .py file in it")
    names = ", ".join(p.name for p in files)
    return Submission(folder.name, None, f"{folder}: several files define exercise functions "
                                         f"({names}): expected one")


def submissions(folder: Path) -> list[Submission]:
    """Every student's submission in `folder`, by name."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name in IGNORED:
            continue
        if entry.is_dir():
            found.append(folder_submission(entry))
        else:
            found.append(Submission(entry.stem, entry))  # the grader names a wrong kind of file
    return found


def grade_class(entries: list[Submission], limits, layer=None, jobs: int = 1,
                progress=None) -> list[Graded]:
    """Graded per submission, in their order, `jobs` children at a time;
    progress(submission, graded) after each."""
    def one(entry: Submission) -> Graded:
        graded = (grade_file(entry.path, limits, layer) if entry.path is not None
                  else Graded(str(entry.student), verdict=entry.problem))
        if progress is not None:
            progress(entry, graded)
        return graded

    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each thread waits on one child
        return list(pool.map(one, entries))


# --- verdicts and mistakes in words ------------------------------------------------------


GENERIC = "wrong values, no simple pattern"


def row_mistakes(graded: Graded) -> list[tuple[str | None, str]]:
    """(check or None, the mistake in words) per distinct mistake of one submission,
    without file names and line numbers (the same mistake in two files reads the same)."""
    if graded.verdict:
        text = graded.verdict.replace(graded.file, "your file")
        text = re.sub(r"your file line \d+", "your file", text)
        return [(None, re.sub(r" at your line \d+( \(in \S+\))?", "", text))]
    found = []
    for r in graded.results:
        if r.passed:
            continue
        if r.not_run:
            found.append((None, re.sub(r" at your line \d+", "", r.not_run)))
            continue
        said = r.where if r.where and not r.where.startswith("worst at") else None
        found.append((r.check, r.diagnosis or said or GENERIC))
    return list(dict.fromkeys(found))


def mistakes(graded: Graded) -> list[str]:
    """The distinct mistakes of one submission: "check: words", or the words alone."""
    return [f"{check}: {words}" if check else words for check, words in row_mistakes(graded)]


def verdict_text(graded: Graded) -> str:
    """The gradebook's verdict: one line in words."""
    if graded.passed:
        return f"all {len(graded.results)} checks pass"
    if graded.verdict:
        return graded.verdict.replace(graded.file, Path(graded.file).name)
    found = mistakes(graded)
    failed = sum(not r.passed for r in graded.results)
    more = f" (and {len(found) - 2} more)" if len(found) > 2 else ""
    return f"{failed} of {len(graded.results)} checks fail: " + "; ".join(found[:2]) + more


def check_names(graded_list) -> list[str]:
    names = {}
    for graded in graded_list:
        for r in graded.results:
            names.setdefault(r.check, None)
    return list(names)


def row_status(graded: Graded, check: str) -> str:
    row = next((r for r in graded.results if r.check == check), None)
    if row is None:
        return ""
    return "pass" if row.passed else ("not run" if row.not_run else "FAIL")


def score(graded: Graded) -> tuple[int, int]:
    return sum(r.passed for r in graded.results), len(graded.results)


def gradebook_csv(entries, graded_list) -> str:
    """One row per student: student, file, layer, passed, checks, score (passed / checks),
    verdict, then one column per check (pass, FAIL, not run, or empty)."""
    names = check_names(graded_list)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["student", "file", "layer", "passed", "checks", "score", "verdict", *names])
    for entry, graded in zip(entries, graded_list):
        passed, total = score(graded)
        writer.writerow([entry.student, graded.file, graded.layer or "", passed, total,
                         f"{passed / total:.3f}" if total and not graded.verdict else "0.000",
                         verdict_text(graded), *(row_status(graded, n) for n in names)])
    return out.getvalue()


def summary_mistakes(graded: Graded) -> list[str]:
    """A student's mistakes as the class summary counts them: the words without the check
    and array sizes; GENERIC only when nothing is named."""
    words = [re.sub(r" \(\d+(, \d+)*,?\)", "", text) for _, text in row_mistakes(graded)]
    found = list(dict.fromkeys(words))
    return [m for m in found if m != GENERIC] or found


def common_mistakes(graded_list, top: int = 10) -> list[tuple[str, int]]:
    """The mistakes the most students made: (mistake in words, number of students)."""
    counts = Counter(m for graded in graded_list if not graded.passed
                     for m in summary_mistakes(graded))
    return counts.most_common(top)


def gradescope_result(graded: Graded) -> dict:
    """Gradescope's autograder results.json for one submission: a test per check (score 1
    when it passes, max_score 1), the overall score, the verdict as the output."""
    if not graded.results:
        return {"score": 0, "output": graded.verdict or "",
                "tests": [{"name": "grading", "score": 0, "max_score": 1,
                           "output": graded.verdict or ""}]}
    tests = [{"name": r.check, "score": int(r.passed), "max_score": 1,
              "output": "; ".join(filter(None, [r.not_run or r.where, r.diagnosis]))}
             for r in graded.results]
    return {"score": sum(t["score"] for t in tests), "output": verdict_text(graded),
            "tests": tests}


def gradescope_json(entries, graded_list) -> dict:
    """One submission: its results.json; several: {"submissions": [one per student]}."""
    if len(graded_list) == 1:
        return gradescope_result(graded_list[0])
    return {"submissions": [{"student": entry.student, **gradescope_result(graded)}
                            for entry, graded in zip(entries, graded_list)]}
