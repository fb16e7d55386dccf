"""`python compare.py bench`: both engines timed in one run, on a machine it names.

    python compare.py bench [--model NAME ...] [--busy N] [--quick] [--json F] [--readme F]

Prints the machine (comparison.machine), its matmul peak, then per model seconds per
epoch, NumPy / fit() ratios and each engine's GFLOP/s as a share of that peak (what
makes tables from two machines comparable; the measurements are comparison.benchtimes').
--busy N also times every engine beside N CPU-bound processes, in the same rounds, and
reports each one's slowdown against its idle time and against its fair share of the
CPUs. --quick times a few batches per model, once, without the custom loop, the pipeline
and the memory probe: for trying the command out, not for figures.
This module's options are checked before TensorFlow loads; main() loads it.
"""
from __future__ import annotations

import os

from rich.table import Table

from comparison import benchreadme
from plumbing.args import at_most, nonnegative_int

QUICK_STEPS = 10  # batches per timed run with --quick
MAX_BUSY = 64


def add_arguments(parser) -> None:
    output = parser.add_mutually_exclusive_group()  # --quick lacks columns of the table
    output.add_argument("--readme", type=benchreadme.readme_file, metavar="FILE",
                        help="write the results table, with the targets, into this "
                             "Markdown file (between its bench-table marker lines)")
    parser.add_argument("--busy", type=at_most(nonnegative_int, MAX_BUSY), default=0,
                        metavar="N",
                        help="also time every engine beside N CPU-bound processes and report "
                             "its slowdown (default 0: idle only)")
    output.add_argument("--quick", action="store_true",
                        help=f"{QUICK_STEPS} batches per model, one round, no custom loop, "
                             "pipeline or memory figures (a try-out, not a measurement)")


def peak_share(gflops: float, results: dict) -> float:
    """GFLOP/s as a fraction of the machine's matmul peak (the faster engine's)."""
    return gflops / max(results["matmul_peak_gflops"].values())


def bench_tables(results: dict) -> list[Table]:
    """The measurements of `main` as tables that fit 80 columns: seconds per epoch, the
    ratios and throughputs, and (--busy) the slowdowns."""
    full = "keras_custom_s_per_epoch" in next(iter(results["models"].values()))
    seconds = Table(title="Seconds per 55,000-image epoch (batch 128, Adam), fastest of "
                          f"{results['rounds']} rounds; NumPy with BLAS threads chosen from "
                          "the free CPUs (every CPU; 1 thread)")
    for column in ("model", "timed", "NumPy", "Keras fit") + (
            ("Keras custom", "NumPy peak MB") if full else ()):
        seconds.add_column(column, justify="left" if column == "model" else "right")
    speed = Table(title="Relative to Keras fit(), and GFLOP/s as % of the matmul peak")
    for column in ("model", "NumPy/fit", "NumPy GFLOP/s", "fit GFLOP/s") + (
            ("custom/fit", "pipeline share") if full else ()):
        speed.add_column(column, justify="left" if column == "model" else "right")
    for name, r in results["models"].items():
        seconds.add_row(name, f"{r['fraction_timed']:.1%}",
                        f"{r['numpy_s_per_epoch']:.1f} ({r['numpy_all_cpus_s_per_epoch']:.1f}; "
                        f"{r['numpy_1thread_s_per_epoch']:.1f})",
                        f"{r['keras_fit_s_per_epoch']:.1f}",
                        *((f"{r['keras_custom_s_per_epoch']:.1f}",
                           f"{r['numpy_peak_rss_mb']:,.0f}") if full else ()))
        speed.add_row(name, f"{r['ratio_numpy_over_fit']:.2f}",
                      f"{r['numpy_gflops']:.1f} ({peak_share(r['numpy_gflops'], results):.0%})",
                      f"{r['keras_fit_gflops']:.1f} "
                      f"({peak_share(r['keras_fit_gflops'], results):.0%})",
                      *((f"{r['ratio_custom_over_fit']:.2f}", f"{r['pipeline_share']:.1%}")
                        if full else ()))
    tables = [seconds, speed]
    if results.get("busy_processes"):
        tables.append(slowdown_table(results))
    return tables


def slowdown_table(results: dict) -> Table:
    busy = results["busy_processes"]
    table = Table(title=f"Slowdown beside {busy} CPU-bound process(es): busy / idle seconds, "
                        "(fair share: CPUs split evenly between the processes)")
    table.add_column("model")
    for engine in benchreadme.ENGINE_NAMES:
        table.add_column(benchreadme.ENGINE_NAMES[engine], justify="right")
    for name, r in results["models"].items():
        table.add_row(name, *(f"{r[f'{e}_slowdown']:.2f} ({r[f'{e}_fair_slowdown']:.2f})"
                              for e in benchreadme.ENGINE_NAMES))
    return table


def main(args, console) -> dict:
    # TensorFlow loads here, after compare.py has checked every argument
    from comparison import benchtimes, machine

    described = machine.describe()
    for line in machine.summary(described):
        console.print(line)
    names = args.model or list(benchtimes.FRACTIONS)
    peak = benchtimes.matmul_peak()
    console.print(f"matmul peak (1024x1024 float32): NumPy {peak['numpy']:.1f} GFLOP/s, "
                  f"TensorFlow {peak['tensorflow']:.1f} GFLOP/s")
    rounds = 1 if args.quick else benchtimes.ROUNDS
    results = {"machine": described, "matmul_peak_gflops": peak,
               "batch_size": benchtimes.BATCH, "rounds": rounds,
               "busy_processes": args.busy, "models": {}}
    for name in names:
        results["models"][name] = benchtimes.bench_model(
            name, benchtimes.FRACTIONS.get(name, 0.25), args.data_dir, busy=args.busy,
            rounds=rounds, steps=QUICK_STEPS if args.quick else None, extras=not args.quick)
    results["machine"]["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    for table in bench_tables(results):
        console.print(table)
    if args.readme:
        benchreadme.rewrite_readme(args.readme, benchreadme.bench_markdown(results))
        console.print(f"table with the targets: {args.readme}")
    return results
