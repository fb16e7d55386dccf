"""twinnet's command line: the NumPy and the Keras twin of each model, side by side.

    python compare.py [--model fc128 convnet] [--epochs 2] [--json FILE] ...
        the main job (comparison/run.py): parameter tables, identical start, gradient
        agreement, lockstep, training on the same tf.data batches, TensorBoard, figure

    python compare.py SUBCOMMAND --help      each subcommand's own options
"""
from __future__ import annotations

import plumbing.quiet  # first: quiets TensorFlow's start-up (see there); make_console
import argparse
import importlib
import sys

from keras_impl.data import SPLITS, MnistError, add_data_dir_arg, load_split, run_cli
from plumbing.args import output_file
from plumbing.files import write_json
from scratch.cli import model_name

# name: (module with add_arguments(parser), main(args, console) and maybe
#        check_arguments(parser, args), one line of help,
#        the options every such command shares: model, json, data (--data-dir), mnist
#        (--data-dir, and the MNIST files read before any work))
SUBCOMMANDS = {
    "params": ("comparison.params", "parameter tables of both twins, zoo and famous "
               "networks", {"model", "json"}),
    "gradcheck": ("comparison.gradtable", "numeric vs NumPy vs TensorFlow gradients, "
                  "one table", {"model", "json"}),
    "bench": ("comparison.bench", "seconds per epoch, GFLOP/s, memory, pipeline share",
              {"model", "json", "mnist"}),
    "profile": ("comparison.profile", "ms, FLOPs and bytes per layer of both twins",
                {"model", "json", "mnist"}),
    "exercise": ("comparison.grading.exercise", "write a layer exercise file to fill in",
                 set()),
    "check": ("comparison.grading.student", "grade a student's layer file, or a whole "
              "class, against both twins", set()),
    "bugs": ("comparison.grading.bugtable", "the bug zoo: which check catches which "
             "mistake", {"json", "data"}),
    "lab": ("comparison.lab.cli", "the draw-a-digit lab, a local web page", {"data"}),
    "parallel": ("comparison.parallel", "data parallelism by hand against tf.distribute: "
                 "K replicas, several workers", set()),
}
MAIN_JOB = ("comparison.run", __doc__, {"model", "json", "mnist"})


def add_shared_arguments(parser, shared: set[str]) -> None:
    if "model" in shared:
        parser.add_argument("--model", nargs="+", type=model_name, metavar="NAME",
                            help="zoo models (e.g. fc128 convnet tiny best; fc<N> for any N)")
    if "json" in shared:
        parser.add_argument("--json", type=output_file, metavar="FILE",
                            help="write every number to this JSON file")
    if shared & {"data", "mnist"}:
        add_data_dir_arg(parser)


def parse_args(argv) -> argparse.Namespace:
    """The main job's options, or SUBCOMMAND's alone: only the chosen command's module is
    imported, so `--help` and bad arguments answer without loading the others."""
    argv = list(argv)
    name = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    module_name, _, shared = SUBCOMMANDS[name] if name else MAIN_JOB
    parser = argparse.ArgumentParser(prog="python compare.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND",
                                       title="subcommands (each with its own --help)")
    chosen = parser
    for sub, (_, help_line, _) in SUBCOMMANDS.items():
        subparser = subparsers.add_parser(sub, help=help_line, description=help_line,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
        if sub == name:
            chosen = subparser
    module = importlib.import_module(module_name)
    add_shared_arguments(chosen, shared)
    module.add_arguments(chosen)
    args = parser.parse_args(argv)
    args.module, args.shared = module, shared
    if hasattr(module, "check_arguments"):  # rules between its options
        module.check_arguments(chosen, args)
    return args


def main(argv=None) -> int:
    """Run the chosen command: exit 1 when the twins disagree or a check fails, 2 with one
    line for bad input (data, files, an output that cannot be written)."""
    from comparison.params import ComparisonError

    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = plumbing.quiet.make_console()
    try:
        if "mnist" in args.shared:  # missing or unusable data: said before any work
            for split in SPLITS:
                load_split(split, args.data_dir)
        output = args.module.main(args, console)
        if isinstance(output, int):  # a command without --json (the lab): its exit status
            return output
        if getattr(args, "json", None):
            write_json(args.json, output)
            console.print(f"numbers: {args.json}")
    except ComparisonError as err:  # the twins disagree: the check failed
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (MnistError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if output.get("passed") is False else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
