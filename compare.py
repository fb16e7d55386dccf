"""twinnet's main job: the NumPy and the Keras model of each zoo architecture, side by side.

    python compare.py [--model fc128 convnet] [--epochs 2] [--json FILE] ...
        1. parameter tables (NumPy count, Keras count, formula); a mismatch exits 1
        2. identical start: Keras's initial weights copied into the NumPy model
        3. gradient agreement on one batch, float64 and float32
        4. lockstep: K optimiser steps on identical batches, both losses after every step
        5. full training on the same tf.data batches: seconds per epoch, accuracies
        6. rich tables, TensorBoard (runs/compare-<time>/numpy and /keras), compare.png, JSON

    python compare.py params [--model NAME ... | --all | --hidden N]
    python compare.py gradcheck [--model NAME ...]
    python compare.py bench [--json FILE] [--readme README.md] [--busy N] [--quick]
    python compare.py profile [--model NAME ...] [--batch-size B] [--json F] [--figure F]
    python compare.py exercise LAYER [--out FILE] | --list   (a layer to write yourself)
    python compare.py check FILE.py [--layer LAYER] [--json OUT] [--plots DIR]   (grade it)
    python compare.py bugs [--bug NAME ...] [--fast] [--json OUT]   (which check catches what)
    python compare.py --inject BUG ...   (a bug of the zoo in the NumPy side: the localizer)
    python compare.py lab [--port 8000] [--models DIR]   (the draw-a-digit lab, comparison/lab)
"""
from __future__ import annotations

import plumbing.quiet  # noqa: F401  first: quiets TensorFlow's start-up (see there)
import argparse
import sys
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from keras_impl.data import SPLITS, add_data_dir_arg, load_split
from comparison.grading import bugs, bugtable, exercise, student
from comparison import bench
from comparison.params import (DEFAULT_MODELS, ComparisonError, param_comparison,
                                          params_command, print_param_table)
from scratch import zoo
from plumbing.args import (at_most, batch_size, epoch_count, figure_file, output_file,
                           output_folder, positive_int, seed_number)
from plumbing.files import write_json
from scratch.cli import add_optimizer_args, check_optimizer_args, model_name

COMMANDS = ("run", "params", "gradcheck", "bench", "exercise", "check", "profile", "bugs")
console = Console()


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table (what TensorBoard's text dashboard renders)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- 3. and 4.: gradient agreement and lockstep ---------------------------------------


def first_batch(args, name, batch_size=None):
    from keras_impl.data import make_dataset

    ds = make_dataset("train", batch_size or args.batch_size, flat=not zoo.has_conv(name),
                      seed=args.seed, data_dir=args.data_dir, limit=args.limit)
    return next(ds.as_numpy_iterator())


def gradient_section(name, args) -> dict:
    from comparison import twin

    x, y = first_batch(args, name)
    reports = {}
    for dtype in ("float64", "float32"):
        report = twin.gradient_agreement(twin.twin_pair(name, dtype, args.seed), x, y)
        reports[dtype] = {"loss_numpy": report.loss_numpy, "loss_keras": report.loss_keras,
                          "measure": twin.GRAD_MEASURE[dtype], "errors": report.errors,
                          "elementwise": report.elementwise, "normwise": report.normwise,
                          "max_error": report.max_error, "tolerance": report.tolerance,
                          "passed": report.passed, "zeros": list(report.zeros)}
    table = Table(title=f"{name}: NumPy vs TensorFlow gradients on one batch of {len(y)} "
                        "(relative error per variable)")
    table.add_column("variable")
    for dtype, rep in reports.items():
        table.add_column(f"{dtype} {rep['measure']} (<= {rep['tolerance']:g})", justify="right")
    for label in reports["float64"]["errors"]:
        shown = f"{label} (0: feeds BatchNorm)" if label in reports["float64"]["zeros"] else label
        table.add_row(shown, *(f"{rep['errors'][label]:.2e}" for rep in reports.values()))
    table.add_row("loss NumPy / Keras",
                  *(f"{r['loss_numpy']:.8f} / {r['loss_keras']:.8f}" for r in reports.values()))
    table.add_row("verdict", *("[green]pass[/]" if r["passed"] else "[red]FAIL[/]"
                               for r in reports.values()), style="bold")
    if reports["float64"]["zeros"]:
        table.caption = ("Training mode, dropout off. (0: feeds BatchNorm): the batch mean "
                         "absorbs that bias, its gradient is 0 and both sides hold round-off, "
                         "measured against the network's largest gradient.")
    console.print(table)
    return reports


def lockstep_section(name, args) -> dict:
    from comparison import twin
    from keras_impl.data import make_dataset

    pair = twin.twin_pair(name, args.dtype, args.seed)
    batches = make_dataset("train", args.batch_size, flat=not zoo.has_conv(name),
                           seed=args.seed, data_dir=args.data_dir, limit=args.limit)
    numpy_losses, keras_losses = twin.lockstep(pair, batches.repeat().as_numpy_iterator(),
                                               args.optimizer, args.lr, args.lockstep_steps,
                                               args.momentum, args.nesterov)
    diffs = [abs(a - b) for a, b in zip(numpy_losses, keras_losses)]
    console.print(f"{name}: lockstep {len(diffs)} {args.optimizer} steps ({args.dtype}, dropout "
                  f"off): loss {numpy_losses[0]:.4f} -> NumPy {numpy_losses[-1]:.6f}, Keras "
                  f"{keras_losses[-1]:.6f}; largest difference {max(diffs):.2e}")
    result = {"numpy": numpy_losses, "keras": keras_losses, "max_abs_diff": max(diffs),
              "optimizer": args.optimizer, "dtype": args.dtype}
    moving = {label: diff for label, diff in twin.weight_differences(pair).items()
              if "/moving_" in label}
    if moving:
        worst = max(moving, key=moving.get)
        console.print(f"{name}: BatchNorm moving statistics after the steps: largest relative "
                      f"difference {moving[worst]:.2e} ({worst})")
        result["moving_stats_max_diff"] = moving[worst]
    return result


# --- 5. full training on shared batches ---------------------------------------------


def training_section(name, args) -> dict:
    from comparison import twin
    from comparison.sidebyside import train_side_by_side

    pair = twin.twin_pair(name, "float32", args.seed)
    return train_side_by_side(pair, args, console)


# --- 6. outputs ----------------------------------------------------------------------


def log_to_tensorboard(logdir: Path, name: str, result: dict) -> None:
    import tensorflow as tf

    for side in ("numpy", "keras"):
        writer = tf.summary.create_file_writer(str(logdir / side))
        with writer.as_default():
            for step, loss in enumerate(result["lockstep"][side]):
                tf.summary.scalar(f"{name}/lockstep_loss", loss, step=step)
            for step, loss in enumerate(result["training"][side]["step_loss"]):
                tf.summary.scalar(f"{name}/train_loss_per_step", loss, step=step)
            for epoch, metrics in enumerate(result["training"][side]["epochs"], start=1):
                for key, value in metrics.items():
                    tf.summary.scalar(f"{name}/{key}", value, step=epoch)
            table = result["params"]
            tf.summary.text(f"{name}/parameters", markdown_table(
                ["layer", "formula", "NumPy", "Keras"],
                [[r["layer"], r["formula"], r["numpy"], r["keras"]] for r in table["rows"]]),
                step=0)
            grads = result["gradients"]
            tf.summary.text(f"{name}/gradient_agreement", markdown_table(
                ["variable", "float64 elementwise rel. error", "float32 norm-wise rel. error"],
                [[k, f"{grads['float64']['errors'][k]:.2e}", f"{grads['float32']['errors'][k]:.2e}"]
                 for k in grads["float64"]["errors"]]), step=0)
        writer.close()


def save_figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = list(results)
    fig, axes = plt.subplots(len(names), 4, figsize=(18, 3.6 * len(names)), squeeze=False)
    style = {"numpy": {"color": "tab:orange", "linestyle": "-"},
             "keras": {"color": "tab:blue", "linestyle": "--"}}  # dashed: both stay visible
    for row, name in zip(axes, names):
        result = results[name]
        training, lockstep = result["training"], result["lockstep"]
        for side, kw in style.items():
            row[0].plot(training[side]["step_loss"], alpha=0.8, label=side, **kw)
            epochs = range(1, len(training[side]["epochs"]) + 1)
            row[1].plot(epochs, [e["val_accuracy"] for e in training[side]["epochs"]],
                        marker="o", label=f"{side} validation", **kw)
            row[1].plot(epochs, [e["train_accuracy"] for e in training[side]["epochs"]],
                        marker="x", alpha=0.6, label=f"{side} train", **kw)
            row[2].plot(lockstep[side], label=side, **kw)
        diff = row[2].twinx()
        diff.semilogy([abs(a - b) for a, b in zip(lockstep["numpy"], lockstep["keras"])],
                      color="grey", linewidth=0.8, label="|difference|")
        diff.set_ylabel("|NumPy - Keras|", color="grey")
        row[0].set(title=f"{name}: training loss per step", xlabel="step", yscale="log")
        row[1].set(title=f"{name}: accuracy per epoch", xlabel="epoch")
        row[1].xaxis.set_major_locator(MaxNLocator(integer=True))
        row[2].set(title=f"{name}: lockstep loss ({lockstep['dtype']}, "
                         f"max diff {lockstep['max_abs_diff']:.1e})", xlabel="step")
        seconds = [training[side]["seconds_per_epoch"] for side in style]
        row[3].bar(list(style), seconds, color=[kw["color"] for kw in style.values()])
        row[3].set(title=f"{name}: seconds per epoch", ylabel="s")
        for ax in row[:3]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_command(args) -> dict:
    from comparison import localize

    started = datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = Path(args.logdir) / f"compare-{started}"
    results = {}
    for name in args.model:
        console.rule(f"[bold]{name}")
        result = {"params": param_comparison(name)}
        print_param_table(name, result["params"], console)
        result["gradients"] = gradient_section(name, args)
        result["lockstep"] = lockstep_section(name, args)
        result["localizer"] = localize.section(name, args, result, console)  # on disagreement
        result["training"] = training_section(name, args)
        log_to_tensorboard(logdir, name, result)
        results[name] = result
    figure = Path(args.figure)
    save_figure(results, figure)
    print_summary(results)
    console.print(f"figure: {figure}\nTensorBoard: tensorboard --logdir {logdir}")
    return {"logdir": str(logdir), "figure": str(figure), "models": results}


def print_summary(results: dict) -> None:
    checks = Table(title="Cross-checks")
    for column in ("model", "params NumPy = Keras", "grad float64", "grad float32",
                   "lockstep max diff"):
        checks.add_column(column, justify="left" if column == "model" else "right")
    training = Table(title="Training on the same batches")
    for column in ("model", "impl", "s/epoch", "images/s", "val acc", "test acc"):
        training.add_column(column, justify="left" if column in ("model", "impl") else "right")
    for name, r in results.items():
        grads = r["gradients"]
        checks.add_row(name, f"{r['params']['totals']['numpy']:,}",
                       *(f"{grads[d]['max_error']:.1e} {'ok' if grads[d]['passed'] else 'FAIL'}"
                         for d in ("float64", "float32")),
                       f"{r['lockstep']['max_abs_diff']:.1e}")
        for side in ("numpy", "keras"):
            t = r["training"][side]
            training.add_row(name if side == "numpy" else "", side,
                             f"{t['seconds_per_epoch']:.2f}", f"{t['images_per_second']:,.0f}",
                             f"{t['epochs'][-1]['val_accuracy']:.4f}", f"{t['test_accuracy']:.4f}")
    console.print(checks)
    console.print(training)


# --- command line ------------------------------------------------------------------------


def hidden_units(text: str) -> int:
    """--hidden N: a positive N whose MLP fc<N> is small enough to build."""
    units = positive_int(text)
    model_name(f"fc{units}")
    return units


def parse_args(argv):
    argv = list(argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "run"
    parser = argparse.ArgumentParser(prog=f"python compare.py {command}".replace(" run", ""),
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", type=model_name, default=None,
                        help=f"zoo models (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--json", type=output_file, help="write every number to this JSON file")
    if command not in ("params", "gradcheck"):  # those two read no MNIST
        add_data_dir_arg(parser)
    if command in ("exercise", "check", "bugs"):  # comparison/grading: exercises, grading
        {"exercise": exercise, "check": student, "bugs": bugtable}[command].add_arguments(parser)
    if command == "params":
        parser.add_argument("--all", action="store_true", help="every zoo model")
        parser.add_argument("--hidden", type=hidden_units, nargs="+", metavar="N",
                            help="one-hidden-layer MLPs of N units (795N + 10)")
    if command in ("run", "gradcheck"):
        parser.add_argument("--batch-size", type=batch_size, default=128)
        parser.add_argument("--seed", type=seed_number, default=0)
        parser.add_argument("--limit", type=positive_int,
                            help="use only the first N training images")
    if command == "bench":
        bench.add_arguments(parser)
    if command == "profile":  # ms, FLOPs and bytes per layer: comparison/profile.py
        parser.add_argument("--batch-size", type=at_most(positive_int, 55_000), default=128)
        parser.add_argument("--figure", type=figure_file, help="stacked bars per layer")
    if command == "run":
        parser.add_argument("--epochs", type=epoch_count, default=2)
        add_optimizer_args(parser)
        parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                            help="precision of the lockstep part")
        parser.add_argument("--lockstep-steps", type=positive_int, default=50)
        parser.add_argument("--logdir", type=output_folder, default="runs")
        parser.add_argument("--figure", type=figure_file, default="compare.png")
        parser.add_argument("--inject", type=bugs.bug_argument, metavar="BUG",
                            help="plant this bug of `compare.py bugs` in the NumPy side")
    args = parser.parse_args(argv)
    args.command = command
    if command == "run":
        check_optimizer_args(parser, args)
        args.model = args.model or DEFAULT_MODELS
    return args


def gradcheck_command(args) -> dict:
    from comparison import gradtable

    return gradtable.main(args, console)


def profile_command(args) -> dict:
    from comparison import profile

    return profile.main(args, console)


def bench_command(args) -> dict:
    return bench.main(args, console)


COMMAND_HANDLERS = {"run": run_command, "params": lambda args: params_command(args, console),
                    "exercise": lambda args: exercise.exercise_command(args, console),
                    "check": lambda args: student.check_command(args, console),
                    "bugs": lambda args: bugtable.main(args, console),
                    "gradcheck": gradcheck_command, "bench": bench_command,
                    "profile": profile_command}


def main(argv=None) -> int:
    from keras_impl.data import MnistError

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lab"]:  # a web server with its own command line
        from comparison.lab.cli import main as lab_main
        return lab_main(argv[1:])
    args = parse_args(argv)
    try:
        if args.command in ("run", "bench", "profile"):  # missing or unusable data: said first
            for split in SPLITS:
                load_split(split, args.data_dir)
        with bugs.planted(getattr(args, "inject", None), console):
            output = COMMAND_HANDLERS[args.command](args)
    except ComparisonError as err:  # the twins disagree: the check failed
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (MnistError, OSError) as err:  # bad input, as every command line reports it
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        write_json(args.json, output)
        console.print(f"numbers: {args.json}")
    return 1 if output.get("passed") is False else 0  # gradcheck: a failed array fails the run


if __name__ == "__main__":
    sys.exit(main())
