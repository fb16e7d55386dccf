"""The bench table of docs/performance.md, written by
`python compare.py bench --readme docs/performance.md`.

The bench's numbers go into a Markdown table, each beside its target,
and the table replaces whatever stands between the two marker lines

    <!-- bench table: start -->
    <!-- bench table: end -->

of the file, so that the page shows the last bench run and nothing typed by hand.
The file and its markers are checked before the bench starts (`readme_file`, an
argparse type): a bad --readme fails in one line, not after minutes of timing.
No TensorFlow here: compare.py checks its arguments before TensorFlow loads.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from plumbing.args import output_file
from plumbing.files import write_text

START, END = "<!-- bench table: start -->", "<!-- bench table: end -->"

# The targets: NumPy / fit seconds per epoch at most `ratio`, NumPy at least
# `gflops` GFLOP/s, a NumPy training's peak resident memory under `peak_mb` MB.
TARGETS = {"fc128": {"ratio": 0.8}, "mlp500": {"ratio": 0.8},
           "convnet": {"ratio": 1.3, "gflops": 80}, "cnn3": {"ratio": 1.2},
           "best": {"ratio": 1.5, "peak_mb": 1500}}


def readme_file(text: str) -> Path:
    """--readme FILE: an existing, writable Markdown file holding both marker lines once."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file (the Markdown file to update)")
    output_file(text)  # rewritten atomically: a new file beside it, renamed onto it
    try:
        body = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise argparse.ArgumentTypeError(f"{text}: cannot read it as text ({err})") from None
    lines = body.splitlines()
    if lines.count(START) != 1 or lines.count(END) != 1 or lines.index(START) > lines.index(END):
        raise argparse.ArgumentTypeError(
            f"{text}: expected the lines {START!r} and then {END!r}, once each, around the "
            "table to replace")
    return path


def _against(value: float, target: float | None, at_most: bool, text: str) -> str:
    """`text`, then the target and whether this run met it: '1.45 (<= 1.2, **not met**)'.
    A value that rounds to the target is shown to 6 digits: 0.8004 is not <= 0.8."""
    if target is None:
        return text
    met = value <= target if at_most else value >= target
    if value != target and text.replace(",", "") == f"{target:.{_decimals(text)}f}":
        text = f"{value:.6g}"
    sign = "<=" if at_most else ">="
    return f"{text} ({sign} {target:g}, {'met' if met else '**not met**'})"


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


# The engines of a --busy run, as the tables name them (comparison.benchtimes.ENGINES)
ENGINE_NAMES = {"numpy": "NumPy", "numpy_all_cpus": "NumPy, every CPU",
                "numpy_1thread": "NumPy, 1 thread", "keras_fit": "Keras fit()"}


def _of_peak(gflops: float, results: dict) -> str:
    return f"{gflops / max(results['matmul_peak_gflops'].values()):.0%}"


def machine_markdown(machine: dict) -> str:
    """One paragraph naming the machine a bench ran on (comparison.machine.describe)."""
    lib = machine["blas"]
    quota = f", cgroup quota {machine['cpu_quota']:g} CPUs" if machine.get("cpu_quota") else ""
    return (f"Machine: {machine['cpu']}, {machine['usable_cpus']} usable CPUs{quota} "
            f"(vector instructions {', '.join(machine['vector_flags']) or 'none listed'}); "
            f"load average {machine['load_average_1min']:g} at the start, "
            f"{machine.get('load_average_1min_at_end', float('nan')):g} at the end. "
            f"NumPy {machine['numpy']} on {lib['library']} {lib.get('version') or ''} "
            f"({lib.get('kernels') or '?'} kernels, up to {lib.get('max_threads')} threads, "
            f"as many used as CPUs are free); TensorFlow {machine['tensorflow']} "
            f"({machine['tensorflow_kernels']} kernels), Keras {machine['keras']}.")


def bench_markdown(results: dict) -> str:
    """The bench's results (bench.main's dict) as a Markdown table with the targets, each
    engine's GFLOP/s as a share of the machine's matmul peak beside each ratio; the machine
    and (--busy) the slowdowns below it."""
    header = ["model", "NumPy s/epoch (1 thread)", "Keras `fit()`", "Keras custom loop",
              "NumPy / fit (target)", "NumPy / fit peak share", "custom / fit",
              "NumPy GFLOP/s (target)", "fit GFLOP/s", "NumPy peak MB (target)",
              "pipeline share"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, r in results["models"].items():
        target = TARGETS.get(name, {})
        cells = [name,
                 f"{r['numpy_s_per_epoch']:.2f} ({r['numpy_1thread_s_per_epoch']:.2f})",
                 f"{r['keras_fit_s_per_epoch']:.2f}", f"{r['keras_custom_s_per_epoch']:.2f}",
                 _against(r["ratio_numpy_over_fit"], target.get("ratio"), True,
                          f"{r['ratio_numpy_over_fit']:.2f}"),
                 f"{_of_peak(r['numpy_gflops'], results)} / "
                 f"{_of_peak(r['keras_fit_gflops'], results)}",
                 f"{r['ratio_custom_over_fit']:.2f}",
                 _against(r["numpy_gflops"], target.get("gflops"), False,
                          f"{r['numpy_gflops']:.0f}"),
                 f"{r['keras_fit_gflops']:.0f}",
                 _against(r["numpy_peak_rss_mb"], target.get("peak_mb"), True,
                          f"{r['numpy_peak_rss_mb']:,.0f}"),
                 f"{r['pipeline_share']:.1%}"]
        lines.append("| " + " | ".join(cells) + " |")
    peak = results["matmul_peak_gflops"]
    lines.append("")
    lines.append(f"Matmul peak in the same run (1024 x 1024 float32): NumPy "
                 f"{peak['numpy']:.0f} GFLOP/s, TensorFlow {peak['tensorflow']:.0f} GFLOP/s; "
                 "\"peak share\" is each engine's GFLOP/s as a share of the larger.")
    if "machine" in results:
        lines += ["", machine_markdown(results["machine"])]
    if results.get("busy_processes"):
        lines += ["", busy_markdown(results)]
    return "\n".join(lines)


def busy_markdown(results: dict) -> str:
    """The --busy slowdowns: busy / idle seconds per engine, its fair share in brackets."""
    header = ["model", *(f"{name} slowdown (fair share)" for name in ENGINE_NAMES.values())]
    lines = [f"Beside {results['busy_processes']} CPU-bound process(es), same run:", "",
             "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, r in results["models"].items():
        cells = [f"{r[f'{e}_slowdown']:.2f} ({r[f'{e}_fair_slowdown']:.2f})"
                 for e in ENGINE_NAMES]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def rewrite_readme(path: Path, table: str) -> None:
    """Replace the lines between the markers of `path` (see readme_file) with `table`."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    bare = [line.rstrip("\r\n") for line in lines]
    start, end = bare.index(START), bare.index(END)
    text = "".join(lines[:start + 1]) + table + "\n" + "".join(lines[end:])
    write_text(path, text)
