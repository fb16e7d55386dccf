"""`python compare.py check FILE.py|FOLDER`: grade a student's file, or a whole class.

    python compare.py check my_conv.py [--layer conv2d] [--json OUT] [--plots DIR]
    python compare.py check SUBMISSIONS/ --gradebook grades.csv [--gradescope results.json]

`load` imports the student's file as it is (in the child process of
`comparison.grading.sandbox`, never in the grader's own). What can go wrong before any
check runs is one line naming the file: no such file, not a .py file, not UTF-8, a syntax
error, an exception or exit() while importing it, no function of any layer, functions of
several layers without --layer, a missing function, a signature other than the
reference's. `main` grades one file (the report of `comparison.grading.report`)
or a folder (`comparison.grading.classroom`). Exit 0 only if every check passes.
"""
from __future__ import annotations

import importlib.util
import inspect
import io
import sys
import textwrap
import tokenize
import traceback
from pathlib import Path

from rich.markup import escape

from comparison.grading.exercise import layer_names, reference_functions
from plumbing.args import output_file, output_folder, positive_float, positive_int
from plumbing.files import atomic_write, write_json


class StudentFileError(Exception):
    """The student's file cannot be graded; the message is one line naming it."""


def source_problem(path: Path) -> str | None:
    """Why Python would refuse to read `path` before running it, or None."""
    if path.suffix != ".py":
        return f"{path}: expected a Python file ending in .py"
    data = path.read_bytes()
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as err:  # a bad first two lines: their bytes say more, if not UTF-8
        encoding, declared = "utf-8", f"{path}: {err}"
    else:
        declared = None
    try:
        data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        return (f"{path} line {line}: byte {data[err.start]:#04x} is not {encoding}: "
                "save the file as UTF-8")
    return declared


def import_file(path: Path):
    """The student's file as a module, or a one-line StudentFileError."""
    if not path.is_file():
        raise StudentFileError(f"{path}: no such file")
    problem = source_problem(path)
    if problem:
        raise StudentFileError(problem)
    name = f"student_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # some code (dataclasses, pickling) looks itself up there
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        text = (err.text or "").strip()
        raise StudentFileError(f"{path} line {err.lineno}: {err.msg}"
                               + (f": {text}" if text else "")) from None
    except (Exception, SystemExit, KeyboardInterrupt) as err:  # noqa: BLE001 - its top level
        frames = [f for f in traceback.extract_tb(err.__traceback__)
                  if f.filename == str(path.resolve()) or f.filename == str(path)]
        at = f" (line {frames[-1].lineno}: {frames[-1].line})" if frames else ""
        what = (f"called exit({err.code!r})" if isinstance(err, SystemExit)
                else f"raised {type(err).__name__}: {err}")
        raise StudentFileError(f"{path}: importing it {what}{at}") from None
    return module


def infer_layer(module, path: Path) -> str:
    """The one layer whose function names the file defines."""
    defined = {name for name, value in vars(module).items() if inspect.isfunction(value)}
    found = [layer for layer in layer_names() if defined & set(reference_functions(layer))]
    if not found:
        names = ", ".join(name for layer in layer_names() for name in reference_functions(layer))
        raise StudentFileError(f"{path} defines none of the exercise functions ({names})")
    if len(found) > 1:
        raise StudentFileError(f"{path} defines functions of {' and '.join(found)}: "
                               "choose one with --layer")
    return found[0]


def signature_text(function) -> str:
    return f"{function.__name__}{inspect.signature(function)}"


def student_functions(module, layer: str, path: Path) -> dict:
    """{name: the student's function} for every reference function of `layer`."""
    functions = {}
    for name, reference in reference_functions(layer).items():
        function = getattr(module, name, None)
        if function is None:
            raise StudentFileError(f"{path} has no function {name} (a {layer} needs "
                                   f"{', '.join(reference_functions(layer))})")
        if not callable(function):
            raise StudentFileError(f"{path}: {name} is a {type(function).__name__}, "
                                   "not a function")
        try:
            theirs = [(p.name, p.kind, p.default) for p in
                      inspect.signature(function).parameters.values()]
        except (TypeError, ValueError):
            theirs = None
        ours = [(p.name, p.kind, p.default) for p in
                inspect.signature(reference).parameters.values()]
        if theirs != ours:
            shown = signature_text(function) if theirs is not None else name
            raise StudentFileError(f"{path}: {shown} should be "
                                   f"{signature_text(reference)}")
        functions[name] = function
    return functions


def load(path: Path, layer: str | None = None) -> tuple[str, dict]:
    """(layer, {name: function}) from the student's file, or a one-line StudentFileError."""
    module = import_file(path)
    layer = layer or infer_layer(module, path)
    return layer, student_functions(module, layer, path)


def add_arguments(parser) -> None:
    """Every argument of `python compare.py check`."""
    from comparison.grading.sandbox import Limits

    defaults = Limits()
    parser.add_argument("path", type=Path, metavar="FILE.py|FOLDER",
                        help="a student's file, or a folder of submissions (a .py file or a "
                             "folder per student) to grade as a class")
    parser.add_argument("--layer", choices=layer_names(), metavar="LAYER",
                        help="the layer the file implements (default: from its function names)")
    parser.add_argument("--json", type=output_file, help="write every row to this JSON file")
    parser.add_argument("--plots", type=output_folder, metavar="DIR",
                        help="write a heatmap PNG of the relative error of every failing array")
    parser.add_argument("--gradebook", type=output_file, metavar="CSV",
                        help="write one row per student: score, verdict, a column per check")
    parser.add_argument("--gradescope", type=output_file, metavar="JSON",
                        help="write Gradescope's autograder results.json")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="submissions graded at the same time (default 1)")
    parser.add_argument("--timeout", type=positive_float, default=defaults.timeout,
                        metavar="SECONDS", help="time per file, TensorFlow's start included "
                                                f"(default {defaults.timeout:g})")
    parser.add_argument("--memory", type=positive_int, default=defaults.memory_mb,
                        metavar="MB", help="address space per file (default "
                                           f"{defaults.memory_mb}; TensorFlow needs about 2000)")
    parser.add_argument("--no-network", dest="network", action="store_false",
                        help="skip the checks in a small network (quicker, a first try)")
    parser.epilog = textwrap.fill(
        "The file's code runs with your rights, as it would under pytest: each "
        "file runs in a child process with a time and memory limit, which "
        "protects the grading from mistakes, not your account from a hostile "
        "file. Grade untrusted files inside the project's Docker image or as a "
        "throwaway user (docs/grading.md).", 79)


def main(args, console) -> dict:
    """`python compare.py check`: one file (its report) or a folder (a class); {"passed":
    ...} decides the exit code: passed only when every submission passed."""
    from comparison.grading import classroom
    from comparison.grading.report import print_report
    from comparison.grading.sandbox import Limits, grade_file

    limits = Limits(timeout=args.timeout, memory_mb=args.memory, network=args.network)
    if args.path.is_dir():
        return class_command(args, console, limits)
    graded = grade_file(args.path, limits, args.layer, args.plots)
    entry = classroom.Submission(args.path.stem, args.path)
    write_class_outputs(args, [entry], [graded])
    if not graded.results:
        print(f"error: {graded.verdict}", file=sys.stderr)
        return {"file": str(args.path), "passed": False, "error": graded.verdict}
    print_report(graded, console)
    return graded_dict(graded)


def graded_dict(graded) -> dict:
    from comparison.grading.checks import as_dict

    return {"file": graded.file, "layer": graded.layer, "passed": graded.passed,
            "verdict": graded.verdict, "seconds": round(graded.seconds, 1),
            "checks": [as_dict(r) for r in graded.results]}


def write_class_outputs(args, entries, graded_list) -> None:
    from comparison.grading import classroom

    if args.gradebook:
        text = classroom.gradebook_csv(entries, graded_list)
        atomic_write(args.gradebook, lambda f: f.write(text.encode()))
    if args.gradescope:
        write_json(args.gradescope, classroom.gradescope_json(entries, graded_list))


def class_command(args, console, limits) -> dict:
    """Grade every submission of the folder, print a line each and the common mistakes."""
    from comparison.grading import classroom

    entries = classroom.submissions(args.path)
    if not entries:
        print(f"error: {args.path}: no submissions in it (.py files or folders)", file=sys.stderr)
        return {"passed": False, "error": f"{args.path}: no submissions"}

    def progress(entry, graded):
        passed, total = classroom.score(graded)
        mark = "[green]pass[/]" if graded.passed else "[red]FAIL[/]"
        console.print(f"{mark} {escape(entry.student)} ({graded.seconds:.0f} s): {passed}/{total}, "
                      f"{escape(classroom.verdict_text(graded))}", highlight=False,
                      soft_wrap=True)

    console.print(f"grading {len(entries)} submissions, {args.jobs} at a time, at most "
                  f"{args.timeout:g} s each")
    graded_list = classroom.grade_class(entries, limits, args.layer, args.jobs, progress)
    write_class_outputs(args, entries, graded_list)
    passed = sum(g.passed for g in graded_list)
    console.print(f"{passed} of {len(entries)} submissions pass every check")
    common = classroom.common_mistakes(graded_list)
    if common:
        console.print("the class's most common mistakes (students, mistake):")
        for mistake, count in common:
            console.print(f"  {count:3d}  {escape(mistake)}", highlight=False, soft_wrap=True)
    for label, path in (("gradebook", args.gradebook), ("Gradescope", args.gradescope)):
        if path:
            console.print(f"{label}: {path}")
    return {"passed": passed == len(entries), "submissions": [
        {"student": entry.student, **graded_dict(graded),
         "verdict": classroom.verdict_text(graded)}
        for entry, graded in zip(entries, graded_list)]}
