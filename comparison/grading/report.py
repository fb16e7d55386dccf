"""The report of one graded file: the table of the checks that ran, one line per reason
other checks did not run, the student's own traceback lines, what the file printed.

    print_report(graded, console)    # graded: comparison.grading.sandbox.Graded
"""
from __future__ import annotations

from collections import Counter

from rich import box
from rich.markup import escape
from rich.table import Table

PRINTED_LINES = 20  # lines of the student's printed output shown under the report


def report_table(graded) -> Table:
    """The rich table of the checks that ran (fits 80 columns)."""
    results = graded.results
    passed = sum(r.passed for r in results)
    table = Table(title=f"{graded.file}: {graded.layer}, {passed} of {len(results)} checks pass",
                  caption="float64 unless named; error: the largest relative error |a-b| / "
                          "max(|a|, |b|); central diff.: of your forward pass",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("check", ratio=4)
    table.add_column("", no_wrap=True)
    table.add_column("error", justify="right", no_wrap=True)
    table.add_column("limit", justify="right", no_wrap=True)
    table.add_column("where, diagnosis", ratio=5)
    for r in results:
        if r.not_run:
            continue
        status = "[green]pass[/]" if r.passed else "[red]FAIL[/]"
        error = "-" if r.error is None else f"{r.error:.1e}"
        limit = "-" if r.threshold is None else f"{r.threshold:.0e}"
        notes = [escape(r.where or ""), f"[bold]{escape(r.diagnosis)}[/]" if r.diagnosis else ""]
        table.add_row(escape(r.check), status, error, limit, "\n".join(filter(None, notes)))
    return table


def not_run_lines(results) -> list[tuple[str, object]]:
    """("9 checks not run: dense_backward raised ValueError at your line 39: <message>",
    the first such row), one per distinct reason, in the order they first happened."""
    counts = Counter(r.not_run for r in results if r.not_run)
    first = {}
    for r in results:
        first.setdefault(r.not_run, r)
    lines = []
    for reason, count in counts.items():
        message = first[reason].diagnosis or ""
        kind, _, text = message.partition(": ")
        if f"raised {kind}" in reason:  # said once: "raised ValueError at ...: text"
            message = text
        tail = f": {message}" if message and not message.startswith("your code") else ""
        lines.append((f"{count} check{'s' if count > 1 else ''} not run: {reason}{tail}",
                      first[reason]))
    return lines


def print_report(graded, console) -> None:
    """Table, reasons checks did not run with each traceback once, the printed output,
    heatmaps, the verdict, the last line."""
    results = graded.results
    if any(not r.not_run for r in results):
        console.print(report_table(graded))
    for line, row in not_run_lines(results):
        console.print(f"[red]{escape(line)}[/]", highlight=False, soft_wrap=True)
        trace = [text for text in row.detail.splitlines() if text.startswith("  ")]
        console.print("\n".join(trace), highlight=False, markup=False, soft_wrap=True)
    for r in results:
        for line in r.detail.splitlines():
            if line.startswith("heatmap: "):
                console.print(line, highlight=False, soft_wrap=True)
    if graded.output:
        cut = graded.output.splitlines()[:PRINTED_LINES]
        console.print(f"your code printed {graded.output_lines} lines; the first {len(cut)}:",
                      highlight=False)
        console.print("\n".join("  | " + line[:76] for line in cut), highlight=False,
                      markup=False)
    if graded.verdict:
        console.print(f"[red]{escape(graded.verdict)}[/]", highlight=False, soft_wrap=True)
    failed = len(results) - sum(r.passed for r in results)
    if graded.passed:
        console.print("[green]all checks pass[/]")
    elif results:
        console.print(f"[red]{failed} of {len(results)} checks fail[/]")
