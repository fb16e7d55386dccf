"""`python -m comparison.experiments NAME ...`: run one experiment, write its JSON and figure."""
from __future__ import annotations

import plumbing.quiet  # noqa: F401  first: quiets TensorFlow's start-up (see there)
import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

import comparison.experiments
from keras_impl.data import SPLITS, add_data_dir_arg, load_split, run_cli
from comparison.experiments.complexity import MODELS as COMPLEXITY_MODELS, complexity_experiment
from comparison.experiments.epochs import epochs_experiment
from comparison.experiments.l2_sweep import l2_sweep_experiment
from comparison.experiments.own_digits import FONT_FILES, own_digits_experiment
from comparison.experiments.runs import ExperimentError, ExperimentInterrupted
from plumbing.args import (epoch_count, input_file, output_folder, positive_float, positive_int,
                           seed_number)
from plumbing.files import write_json
from scratch.cli import add_optimizer_args, check_optimizer_args, model_name

EXPERIMENTS = {"epochs": epochs_experiment, "l2-sweep": l2_sweep_experiment,
               "own-digits": own_digits_experiment, "complexity": complexity_experiment}
EXIT_INTERRUPTED = 130

# Full-size settings and the --fast ones; an option given on the command line wins.
FULL = {
    "epochs": {"models": ["fc128", "convnet"], "epochs": 30, "limit": None},
    "l2-sweep": {"epochs": 40, "factors": [float(f) for f in np.logspace(-6, -3, 5)],
                 "replicates": 3, "limit": None},
    "own-digits": {"model": "convnet", "epochs": 5, "limit": None, "fonts": None},
    "complexity": {"models": COMPLEXITY_MODELS, "epochs": 5, "limit": None},
}
FAST = {
    "epochs": {"models": ["fc128", "convnet"], "epochs": 2, "limit": 1000},
    "l2-sweep": {"epochs": 2, "factors": [1e-6, 1e-3], "replicates": 2, "limit": 1000},
    "own-digits": {"model": "fc128", "epochs": 2, "limit": 2000, "fonts": 2},
    "complexity": {"models": ["fc128", "tiny"], "epochs": 1, "limit": 1000},
}
HELP = {"epochs": "training and validation accuracy per epoch, the chosen epoch marked",
        "l2-sweep": "mlp500 with L2 factors 1e-6..1e-3, several seeds, against Hinton",
        "own-digits": "classify digits drawn with pillow (or your own PNGs)",
        "complexity": "parameters against test accuracy of zoo models"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comparison.experiments",
                                     description=comparison.experiments.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    for name, text in HELP.items():
        sub = commands.add_parser(name, help=text, description=text)
        full, fast = FULL[name], FAST[name]
        sub.add_argument("--out", type=output_folder, default="runs/experiments",
                         help="where the JSON, the figure and the runs go "
                              "(default runs/experiments)")
        sub.add_argument("--fast", action="store_true",
                         help="smoke-test size: " + ", ".join(f"{k} {v}" for k, v in fast.items()))
        sub.add_argument("--epochs", type=epoch_count,
                         help=f"epochs per training (default {full['epochs']})")
        sub.add_argument("--limit", type=positive_int,
                         help="use only the first N training and N validation images")
        sub.add_argument("--loop", choices=("custom", "fit"), default="custom",
                         help="keras_impl.train's loop (default custom)")
        add_optimizer_args(sub)
        sub.add_argument("--seed", type=seed_number, default=0,
                         help="seed of the (first) run")
        add_data_dir_arg(sub)
        if "models" in full:
            sub.add_argument("--models", nargs="+", type=model_name,
                             help=f"zoo models (default {' '.join(full['models'])})")
        if name == "l2-sweep":
            sub.add_argument("--factors", nargs="+", type=positive_float,
                             help="L2 factors (default 5 log-spaced from 1e-6 to 1e-3)")
            sub.add_argument("--replicates", type=positive_int,
                             help="seeds per factor (default 3)")
        if name == "own-digits":
            sub.add_argument("--model-path", type=input_file,
                             help="a trained .keras or .h5 model (default: train --model here)")
            sub.add_argument("--model", type=model_name,
                             help="zoo model to train (default convnet)")
            sub.add_argument("--fonts", type=positive_int,
                             help=f"use the first N fonts (default all, up to "
                                  f"{len(FONT_FILES) + 1})")
            sub.add_argument("--images", help="classify the PNGs in this folder instead "
                                              "(named <digit>_<anything>.png)")
        if name == "complexity":
            sub.add_argument("--from-json", metavar="FILE",
                             help="plot an earlier complexity.json instead of training")
    return parser


def resolve_settings(args) -> dict:
    """FULL (or FAST) settings of the experiment, overridden by options given."""
    settings = dict((FAST if args.fast else FULL)[args.experiment])
    for key in settings:
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    return settings


def main(argv=None, console=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    check_optimizer_args(parser, args)
    console = console or plumbing.quiet.make_console()
    settings = resolve_settings(args)
    if not getattr(args, "from_json", None):  # missing or unusable data: said before any work
        for split in SPLITS:
            load_split(split, args.data_dir, settings["limit"])
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        result = EXPERIMENTS[args.experiment](args, settings, console)
    except ExperimentInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ExperimentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = {"experiment": args.experiment,
              "command": "python -m comparison.experiments " + shlex.join(argv), **result}
    name = args.experiment
    write_json(args.out / f"{name}.json", result)
    console.print(f"wrote {args.out / f'{name}.json'} and {args.out / f'{name}.png'}",
                  soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
