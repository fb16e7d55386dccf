"""`python compare.py check FILE.py`: grade a student's file, one table row per check.

    python compare.py check my_conv.py [--layer conv2d] [--json OUT] [--plots DIR]

The file is imported as it is (a file written from `python compare.py exercise`, or any
file defining the layer's functions). What can go wrong before any check runs is one line
naming the file: no such file, a syntax error, an exception while importing it, no
function of any layer, functions of several layers without --layer, a missing function,
a signature other than the reference's. Then `checks.layer_checks` runs every check; an
exception inside the student's code fails the rows that needed it and shows the student's
own traceback lines below the table (never ours). Exit 0 only if every check passes.
"""
from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from pathlib import Path

from rich import box
from rich.markup import escape
from rich.table import Table

from comparison.grading.exercise import layer_names, reference_functions
from plumbing.args import output_folder


class StudentFileError(Exception):
    """The student's file cannot be graded; the message is one line naming it."""


def import_file(path: Path):
    """The student's file as a module, or a one-line StudentFileError."""
    if not path.is_file():
        raise StudentFileError(f"{path}: no such file")
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
    except Exception as err:  # noqa: BLE001 - whatever the student's top level raises
        frames = [f for f in traceback.extract_tb(err.__traceback__)
                  if f.filename == str(path.resolve()) or f.filename == str(path)]
        at = f" (line {frames[-1].lineno}: {frames[-1].line})" if frames else ""
        raise StudentFileError(f"{path}: importing it raised {type(err).__name__}: "
                               f"{err}{at}") from None
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


def report_table(path, layer: str, results) -> Table:
    """The rich table of the results (fits 80 columns)."""
    passed = sum(r.passed for r in results)
    table = Table(title=f"{path}: {layer}, {passed} of {len(results)} checks pass",
                  caption="float64; error: the largest relative error |a-b| / max(|a|, |b|); "
                          "central diff.: of your forward pass",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("check", ratio=4)
    table.add_column("", no_wrap=True)
    table.add_column("error", justify="right", no_wrap=True)
    table.add_column("limit", justify="right", no_wrap=True)
    table.add_column("where, diagnosis", ratio=5)
    for r in results:
        status = "[green]pass[/]" if r.passed else "[red]FAIL[/]"
        error = "-" if r.error is None else f"{r.error:.1e}"
        limit = "-" if r.threshold is None else f"{r.threshold:.0e}"
        notes = [escape(r.where or ""), f"[bold]{escape(r.diagnosis)}[/]" if r.diagnosis else ""]
        table.add_row(escape(r.check), status, error, limit, "\n".join(filter(None, notes)))
    return table


def print_tracebacks(results, console) -> None:
    """Each distinct traceback of the student's code once, then every heatmap written."""
    shown = set()
    for r in results:
        trace = [line for line in r.detail.splitlines() if line.startswith("  ")]
        if trace and r.detail not in shown:
            shown.add(r.detail)
            console.print(f"[red]{escape(r.check)}[/]: your code raised {escape(r.diagnosis)}",
                          highlight=False, soft_wrap=True)
            console.print("\n".join(trace), highlight=False, markup=False, soft_wrap=True)
    for r in results:
        for line in r.detail.splitlines():
            if line.startswith("heatmap: "):
                console.print(line, highlight=False, soft_wrap=True)


def add_arguments(parser) -> None:
    """The arguments of `python compare.py check`."""
    parser.add_argument("file", type=Path, metavar="FILE.py", help="the student's file")
    parser.add_argument("--layer", choices=layer_names(), metavar="LAYER",
                        help="the layer the file implements (default: from its function names)")
    parser.add_argument("--plots", type=output_folder, metavar="DIR",
                        help="write a heatmap PNG of the relative error of every failing array")


def check_command(args, console) -> dict:
    """`python compare.py check`: load, grade, print; {"passed": ...} decides the exit code."""
    from comparison.grading.checks import as_dict, layer_checks

    try:
        layer, functions = load(args.file, args.layer)
    except StudentFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return {"file": str(args.file), "passed": False, "error": str(err)}
    results = layer_checks(layer, functions, plots=args.plots)
    console.print(report_table(args.file, layer, results))
    print_tracebacks(results, console)
    passed = all(r.passed for r in results)
    failed = len(results) - sum(r.passed for r in results)
    console.print("[green]all checks pass[/]" if passed else f"[red]{failed} checks fail[/]")
    return {"file": str(args.file), "layer": layer, "passed": passed,
            "checks": [as_dict(r) for r in results]}
