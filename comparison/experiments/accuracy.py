"""The accuracy table of docs/accuracy.md: fixed training recipes, run over several seeds, summarised.

    python -m comparison.experiments.accuracy run keras-best [--seeds 0 1 2] [--out results/accuracy]
    python -m comparison.experiments.accuracy table [--out results/accuracy]

`run` trains one recipe per seed with the ordinary command lines (keras_impl.train or
comparison.scratch_train, in a subprocess each, printed before it starts), then measures the model
on the MNIST test set and on the transformed test sets of `keras_impl.test --shifted`.
A NumPy model is measured through its Keras twin (the weights copied by
comparison.layout), so both implementations face the same evaluation code. Finished
seeds are skipped and an interrupted training resumes from its checkpoint, so running
the same command again loses at most one epoch.

`table` reads what `run` wrote in --out and prints, per recipe, the test accuracy and
the transformed-test mean (mean +- standard deviation over seeds), epochs and training
minutes, into <out>/accuracy.json and <out>/accuracy.md.

Files per recipe R and seed S in --out:
    R-seedS.json        the training CLI's --json (per-epoch numbers and seconds)
    R-seedS-test.json   test and transformed-test accuracy (keras_impl.test's robustness)
    runs/R-seedS[.npz]  the Keras run folder (model.keras, model.h5, TensorBoard logs) or
                        the NumPy checkpoint
The recipes were fixed before any test measurement; runs report validation accuracy per epoch.
"""
from __future__ import annotations

import plumbing.quiet  # noqa: F401  first: quiets TensorFlow's start-up (see there)
import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_impl.data import add_data_dir_arg, run_cli
from scratch import zoo
from plumbing.args import output_folder, seed_number
from plumbing.files import write_json, write_text

# The accuracy model's recipe: augmentation, Adam with a 1-epoch warmup and cosine decay,
# label smoothing 0.1 (common choices fixed in advance, watched on the validation split).
BEST_ARGS = ["--augment", "--schedule", "cosine", "--warmup-epochs", "1",
             "--label-smoothing", "0.1", "--lr", "0.002"]


@dataclass(frozen=True)
class Recipe:
    """One row of the table: a zoo model, an implementation and its training options."""

    model: str
    implementation: str  # "keras" or "numpy"
    options: tuple[str, ...]
    epochs: int

    def command(self, seed) -> list[str]:
        module = ("keras_impl.train" if self.implementation == "keras"
                  else "comparison.scratch_train")
        return ["python", "-m", module, "--model", self.model, "--epochs", str(self.epochs),
                *self.options, "--seed", str(seed)]


RECIPES = {
    "keras-best": Recipe("best", "keras", tuple(BEST_ARGS), 20),
    "numpy-best": Recipe("best", "numpy", tuple(BEST_ARGS), 8),
    "keras-mlp500-l2": Recipe("mlp500", "keras",
                              ("--l2", "1e-5", "--augment", "--schedule", "cosine",
                               "--warmup-epochs", "1"), 30),
}


class AccuracyError(Exception):
    """A run that failed; the message is one line."""


def _read_json(path: Path):
    """The JSON in `path`, None when there is no such file; AccuracyError when unreadable."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise AccuracyError(f"{path}: not a readable JSON file ({err})") from None


def _fields(path: Path, read):
    """read(the JSON in `path`); AccuracyError naming the file when it lacks what `run` writes."""
    data = _read_json(path)
    try:
        return read(data)
    except (KeyError, TypeError, ValueError) as err:
        missing = "the file is missing" if data is None else f"{type(err).__name__}: {err}"
        raise AccuracyError(f"{path}: not what `python -m comparison.experiments.accuracy run` writes "
                            f"({missing})") from None


def train_seed(name: str, seed: int, out: Path, data_dir=None) -> Path:
    """Train (or resume, or reuse) recipe `name` with `seed`; returns the training JSON."""
    recipe = RECIPES[name]
    summary = out / f"{name}-seed{seed}.json"
    run = out / "runs" / f"{name}-seed{seed}"
    previous = _read_json(summary)
    if recipe.implementation == "keras":
        if previous is not None and previous.get("status") == "completed":
            return summary
        extra = ["--logdir", str(run), "--json", str(summary)]
        if (run / "checkpoints" / "checkpoint").exists():
            extra.append("--resume")
    else:
        if previous is not None and "test_accuracy" in previous:
            return summary
        checkpoint = run.with_suffix(".npz")
        extra = ["--json", str(summary)]
        extra += ["--resume", str(checkpoint)] if checkpoint.exists() else ["--save",
                                                                             str(checkpoint)]
    extra += ["--data-dir", str(data_dir)] if data_dir else []
    command = recipe.command(seed) + extra
    print("$ " + shlex.join(command), flush=True)
    code = subprocess.call([sys.executable, *command[1:]])
    if code != 0:
        raise AccuracyError(f"{name} seed {seed}: training exited with code {code}")
    return summary


def trained_keras_model(name: str, seed: int, out: Path):
    """The trained model of a run as a Keras model (a NumPy model through its twin)."""
    from keras_impl import test
    from comparison import layout
    from keras_impl.zoo_model import build_twinnet
    from scratch.model import load_npz

    run = out / "runs" / f"{name}-seed{seed}"
    if RECIPES[name].implementation == "keras":
        return test.load_model(run / "model.keras")
    numpy_model = load_npz(run.with_suffix(".npz"))
    keras_model = build_twinnet(numpy_model.name)
    keras_model(np.zeros((1, *zoo.INPUT_SHAPE), np.float32))  # create the variables
    layout.to_keras(numpy_model, keras_model)
    return keras_model


def evaluate_seed(name: str, seed: int, out: Path, data_dir=None) -> Path:
    """Test and transformed-test accuracy of a trained seed, written once."""
    from keras_impl import test
    from keras_impl.data import load_mnist

    path = out / f"{name}-seed{seed}-test.json"
    if path.exists():
        return path
    images, labels = load_mnist("test", data_dir)
    result = test.robustness(trained_keras_model(name, seed, out),
                             images.astype(np.float32) / 255.0, labels)
    write_json(path, result)
    return path


def _mean_std(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))
            if len(values) > 1 else 0.0, "values": values}


def test_fields(results: dict) -> dict:
    """{transform: accuracy, ..., "mean": mean transformed accuracy} of a -test.json."""
    accuracies = {name: float(row["accuracy"]) for name, row in results["sets"].items()}
    return {"original": accuracies.pop("original"), **accuracies,
            "mean": float(results["mean_transformed_accuracy"])}


def summarise(name: str, out: Path) -> dict | None:
    """One table row from every finished seed of recipe `name` (None if none finished).
    A seed trained but not yet measured is left out, with a note saying so."""
    recipe = RECIPES[name]
    seeds, tested, minutes = [], [], []
    for path in sorted(out.glob(f"{name}-seed*-test.json")):
        seed = path.name[len(f"{name}-seed"):-len("-test.json")]
        if not seed.isdigit():
            raise AccuracyError(f"{path}: not a name `run` writes ({name}-seedS-test.json)")
        seeds.append(int(seed))
        tested.append(_fields(path, test_fields))
        minutes.append(_fields(out / f"{name}-seed{seed}.json",
                               lambda t: sum(float(e["seconds"]) for e in t["epochs"]) / 60))
    for path in sorted(out.glob(f"{name}-seed*.json")):
        if not (path.stem.endswith("-test") or path.with_name(f"{path.stem}-test.json").exists()):
            print(f"note: {path}: not measured yet, left out of the table", file=sys.stderr)
    if not seeds:
        return None
    return {
        "recipe": name, "model": recipe.model, "implementation": recipe.implementation,
        "params": zoo.count_params(recipe.model), "epochs": recipe.epochs, "seeds": seeds,
        "test_accuracy": _mean_std([t["original"] for t in tested]),
        "transformed_accuracy": _mean_std([t["mean"] for t in tested]),
        "per_transform": {key: float(np.mean([t[key] for t in tested]))
                          for key in tested[0] if key != "mean"},
        "training_minutes": _mean_std(minutes),
        "command": shlex.join(recipe.command("S")),
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| model | params | implementation | MNIST test (mean ± std) | transformed test "
             "mean | epochs | training minutes | seeds | command |",
             "| --- | ---: | --- | --- | --- | ---: | ---: | --- | --- |"]
    for row in rows:
        test, moved = row["test_accuracy"], row["transformed_accuracy"]
        lines.append(
            f"| {row['model']} | {row['params']:,} | {row['implementation']} | "
            f"{test['mean']:.2%} ± {test['std']:.2%} | {moved['mean']:.2%} ± {moved['std']:.2%}"
            f" | {row['epochs']} | {row['training_minutes']['mean']:.0f} | "
            f"{', '.join(map(str, row['seeds']))} | `{row['command']}` |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comparison.experiments.accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "table"))
    parser.add_argument("recipe", nargs="?", choices=list(RECIPES),
                        help="with run: which recipe")
    parser.add_argument("--seeds", type=seed_number, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=output_folder, default="results/accuracy")
    add_data_dir_arg(parser)
    args = parser.parse_args(argv)
    if args.action == "run" and args.recipe is None:
        parser.error("run needs a recipe: " + ", ".join(RECIPES))
    try:
        if args.action == "run":
            (args.out / "runs").mkdir(parents=True, exist_ok=True)
            for seed in args.seeds:
                train_seed(args.recipe, seed, args.out, args.data_dir)
                evaluate_seed(args.recipe, seed, args.out, args.data_dir)
        rows = [row for name in RECIPES if (row := summarise(name, args.out)) is not None]
    except AccuracyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_json(args.out / "accuracy.json", {"rows": rows})
    write_text(args.out / "accuracy.md", markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
