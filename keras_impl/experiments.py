"""The course experiments; each writes <out>/<name>.json and <out>/<name>.png.

    python -m keras_impl.experiments epochs      [--models fc128 convnet] [--epochs 30]
    python -m keras_impl.experiments l2-sweep    [--epochs 40] [--factors F ...] [--replicates 3]
    python -m keras_impl.experiments own-digits  [--model-path M.keras | --model convnet]
    python -m keras_impl.experiments complexity  [--models ...] [--epochs 5] [--from-json FILE]

epochs      train and validation accuracy per epoch; the chosen epoch is the one with
            the best validation accuracy.
l2-sweep    Hinton's 784-500-300-10 net (mlp500) with L2 factors log-spaced from 1e-6 to
            1e-3, several seeds each: final validation accuracy mean +- std per factor
            against the 98.47% of LeCun's MNIST table, and the best run's test accuracy.
own-digits  digits drawn with pillow (fonts, rotation, thick strokes), or your own PNGs
            named <digit>_<anything>.png, classified by `python -m keras_impl.test --apply`.
complexity  trainable parameters against test accuracy for zoo models.

Every training is `keras_impl.train.train` (the custom GradientTape loop unless --loop
fit), one folder per run under <out>/runs/ with its TensorBoard logs, checkpoints and
final model. Rerunning a command after an interruption reuses the finished runs and
resumes the unfinished one from its last checkpoint, so at most one epoch is lost; the
per-epoch history is read back from each run's TensorBoard event files, which hold every
epoch, resumed or not. --fast shrinks everything for smoke tests and notebooks.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from keras_impl.data import add_data_dir_arg, run_cli
from scratch import zoo

HINTON_ACCURACY = 0.9847
HINTON_SOURCE = ("LeCun, Cortes & Burges, The MNIST database, classifier table: '3-layer NN, "
                 "500+300 HU, softmax, cross entropy, weight decay', Hinton, unpublished, "
                 "2005: test error 1.53%")
HINTON_UNSTATED = ["optimiser (plain SGD? momentum?)", "learning rate and its schedule",
                   "weight-decay factor and convention (factor or factor/2, output layer or not)",
                   "initialisation", "number of epochs and stopping rule",
                   "all 60,000 training images, or a validation set held out",
                   "activation function (logistic units were usual in 2005)"]
L2_MODEL = "mlp500"
EXIT_INTERRUPTED = 130

# Full-size settings and the --fast ones; an option given on the command line wins.
FULL = {
    "epochs": {"models": ["fc128", "convnet"], "epochs": 30, "limit": None},
    "l2-sweep": {"epochs": 40, "factors": [float(f) for f in np.logspace(-6, -3, 5)],
                 "replicates": 3, "limit": None},
    "own-digits": {"model": "convnet", "epochs": 5, "limit": None, "fonts": None},
    "complexity": {"models": zoo.model_names(), "epochs": 5, "limit": None},
}
FAST = {
    "epochs": {"models": ["fc128", "convnet"], "epochs": 2, "limit": 1000},
    "l2-sweep": {"epochs": 2, "factors": [1e-6, 1e-3], "replicates": 2, "limit": 1000},
    "own-digits": {"model": "fc128", "epochs": 2, "limit": 2000, "fonts": 2},
    "complexity": {"models": ["fc128", "tiny"], "epochs": 1, "limit": 1000},
}

# own-digits: fonts that come with matplotlib (so every machine has them), then PIL's own.
FONT_FILES = ["DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "DejaVuSans-Bold",
              "DejaVuSerif-Italic", "DejaVuSans-Oblique", "STIXGeneral", "STIXGeneralItalic",
              "cmr10", "cmss10", "cmtt10"]
PIL_DEFAULT = "pil-default"
# name: (rotation in degrees, counter-clockwise; extra stroke width in canvas pixels)
VARIANTS = {"plain": (0, 0), "rotated+15": (15, 0), "rotated-15": (-15, 0), "thick": (0, 5)}
CANVAS = 112
FONT_SIZE = 80


class ExperimentError(Exception):
    """An experiment that cannot start or go on; the message is one line."""


class ExperimentInterrupted(ExperimentError):
    """Ctrl-C during a training; its checkpoint is saved."""


# --- runs: one keras_impl.train run per folder, reused or resumed ---------------------


def epoch_history(logdir) -> list[dict]:
    """Per epoch {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"} from a run's
    TensorBoard events (train/ and validation/, tags epoch_loss and epoch_accuracy at
    step = epoch - 1). A resumed run's repeated epoch counts once, with its last value."""
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    epochs: dict[int, dict] = {}
    for folder, prefix in (("train", ""), ("validation", "val_")):
        events = EventAccumulator(str(Path(logdir) / folder), size_guidance={TENSORS: 0})
        events.Reload()
        for tag in ("epoch_loss", "epoch_accuracy"):
            if tag in events.Tags()[TENSORS]:
                for event in events.Tensors(tag):
                    record = epochs.setdefault(event.step, {"epoch": event.step + 1})
                    record[prefix + tag.removeprefix("epoch_")] = float(
                        make_ndarray(event.tensor_proto))
    return [epochs[step] for step in sorted(epochs)]


def run_training(logdir: Path, model: str, args, *, epochs: int, seed: int = 0,
                 l2: float = 0.0, limit: int | None = None, console=None) -> dict:
    """Train zoo model `model` in `logdir` with keras_impl.train, or reuse/resume that run.

    Returns {"logdir", "model_path", "history" (every epoch), "seconds_per_epoch"}.
    """
    import keras

    from keras_impl import train

    argv = ["--model", model, "--loop", args.loop, "--epochs", str(epochs), "--seed", str(seed),
            "--l2", repr(l2), "--logdir", str(logdir), "--json", str(logdir / "result.json")]
    argv += ["--limit", str(limit)] if limit else []
    argv += ["--data-dir", args.data_dir] if args.data_dir else []
    settings = train.parse_args(argv)
    wanted = {key: getattr(settings, key) for key in ("model", "loop", "optimizer", "lr", "l2",
                                                        "batch_size", "seed", "limit")}
    previous = _read_json(logdir / "run.json")
    if previous is not None and {key: previous.get(key) for key in wanted} != wanted:
        raise ExperimentError(f"{logdir}: holds a run with other settings ({previous}); "
                              "choose another --out or delete the folder")
    result = _read_json(logdir / "result.json")
    done = result is not None and result["status"] == "completed"
    if done and result["epoch"] > epochs:
        raise ExperimentError(f"{logdir}: already trained for {result['epoch']} epochs, "
                              f"more than the {epochs} asked for; choose another --out")
    if not (done and result["epoch"] == epochs):
        settings.resume = (logdir / "checkpoints" / "checkpoint").exists()
        try:
            result = train.train(settings, console)
        except train.TrainError as err:
            raise ExperimentError(str(err)) from None
        keras.backend.clear_session()  # each run's graphs go; the process runs many
        if result["status"] == "interrupted":
            raise ExperimentInterrupted(f"{logdir}: interrupted in epoch {result['epoch']}; "
                                        "run the same command again to continue")
        if result["status"] == "diverged":
            raise ExperimentError(f"{logdir}: loss became {result['bad_loss']} in epoch "
                                  f"{result['epoch']}; try a smaller learning rate")
    history = epoch_history(logdir)
    if [record["epoch"] for record in history] != list(range(1, epochs + 1)):
        raise ExperimentError(f"{logdir}: TensorBoard events hold epochs "
                              f"{[r['epoch'] for r in history]}, expected 1..{epochs}")
    return {"logdir": str(logdir), "model_path": str(logdir / "model.keras"),
            "history": history, "seconds_per_epoch": result["seconds_per_epoch"]}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise ExperimentError(f"{path}: not valid JSON ({err})") from None


def mnist_test_accuracy(model_path, data_dir=None) -> float:
    """Accuracy of a saved model on the 10,000 official test images (keras_impl.test)."""
    from keras_impl import test
    from keras_impl.data import load_mnist

    images, labels = load_mnist("test", data_dir)
    model = test.load_model(model_path)
    return test.evaluate(test.log_probabilities(model, images / 255.0), labels)["accuracy"]


def training_settings(args, settings: dict) -> dict:
    """What a reader needs to reproduce (or explain the difference from) a result."""
    from keras_impl.data import SPLIT_SEED, VAL_SIZE
    from keras_impl.train import parse_args

    defaults = parse_args(["--model", "fc128"])  # the runs leave these at train's defaults
    limit = settings["limit"]
    return {
        "loop": args.loop, "optimizer": defaults.optimizer, "learning_rate": defaults.lr,
        "schedule": "constant learning rate, no decay, no warm-up, no early stopping",
        "batch_size": defaults.batch_size, "epochs": settings["epochs"],
        "init": "Keras defaults: glorot_uniform kernels, zero biases",
        "split": (f"first {limit:,} training and first {limit:,} validation images"
                  if limit else
                  f"55,000 train / {VAL_SIZE:,} validation (500 per class, seed {SPLIT_SEED}) "
                  "from the official 60,000; the official 10,000 test images untouched"),
        "preprocessing": "pixels / 255, no augmentation, no dropout unless the model has it",
    }


# --- figures -----------------------------------------------------------------------


def _figure(*args, **kwargs):
    from matplotlib.figure import Figure

    return Figure(*args, layout="constrained", **kwargs)


def plot_epochs(models: dict, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    fig = _figure(figsize=(5.5 * len(models), 7.5))
    axes = fig.subplots(2, len(models), squeeze=False)
    for column, (name, result) in zip(axes.T, models.items()):
        history = result["history"]
        epochs = [r["epoch"] for r in history]
        for row, key, label in ((0, "accuracy", "accuracy"), (1, "loss", "loss")):
            ax = column[row]
            ax.plot(epochs, [r[key] for r in history], "o--", label=f"training {label}")
            ax.plot(epochs, [r[f"val_{key}"] for r in history], "o-",
                    label=f"validation {label}")
            ax.axvline(result["chosen_epoch"], color="grey", linestyle=":",
                       label=f"chosen: epoch {result['chosen_epoch']}")
            ax.set(xlabel="epoch", ylabel=label, title=f"{name}: {label} per epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=8)
        column[0].plot(result["chosen_epoch"], result["chosen_val_accuracy"], "r*",
                       markersize=14)
    fig.savefig(path, dpi=100)


def plot_l2(result: dict, path: Path) -> None:
    fig = _figure(figsize=(13, 5))
    left, right = fig.subplots(1, 2)
    factors = [f["factor"] for f in result["factors"]]
    left.errorbar(factors, [f["mean_val_accuracy"] for f in result["factors"]],
                  yerr=[f["std_val_accuracy"] or 0 for f in result["factors"]], fmt="o-",
                  capsize=4, label="final validation accuracy, mean ± std")
    for f in result["factors"]:
        left.plot([f["factor"]] * len(f["runs"]), [r["final_val_accuracy"] for r in f["runs"]],
                  "k.", alpha=0.4)
    left.axhline(HINTON_ACCURACY, color="tab:red", linestyle="--",
                 label=f"Hinton's {HINTON_ACCURACY:.2%} (test error 1.53%)")
    best = result["best_run"]
    left.plot(best["factor"], best["test_accuracy"], "r*", markersize=14,
              label=f"best run's test accuracy {best['test_accuracy']:.2%}")
    left.set(xscale="log", xlabel="L2 factor", ylabel="accuracy",
             title=f"{L2_MODEL}, {result['settings']['epochs']} epochs, "
                   f"{result['replicates']} seeds per factor")
    left.legend(fontsize=8)
    for f in result["factors"]:
        curves = np.array([[r["val_accuracy"] for r in run["history"]] for run in f["runs"]])
        right.plot(range(1, curves.shape[1] + 1), curves.mean(axis=0), label=f"{f['factor']:.1e}")
    right.set(xlabel="epoch", ylabel="validation accuracy (mean over seeds)",
              title="validation accuracy per epoch, by L2 factor")
    right.legend(title="L2 factor", fontsize=8)
    fig.savefig(path, dpi=100)


def plot_own_digits(result: dict, path: Path) -> None:
    groups = [("font", result["by_font"]), ("variant", result["by_variant"]),
              ("digit", result["by_digit"])]
    fig = _figure(figsize=(16, 4.8))
    for ax, (title, accuracies) in zip(fig.subplots(1, 3), groups):
        ax.bar(list(accuracies), list(accuracies.values()), color="tab:blue")
        ax.axhline(result["mnist_test_accuracy"], color="tab:red", linestyle="--",
                   label=f"MNIST test {result['mnist_test_accuracy']:.1%}")
        ax.set(ylim=(0, 1.05), ylabel="accuracy", title=f"drawn digits by {title}")
        ax.tick_params(axis="x", labelrotation=60 if title == "font" else 0, labelsize=8)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{result['model_path']}: {result['accuracy']:.1%} of "
                 f"{result['count']} drawn digits right")
    fig.savefig(path, dpi=100)


def plot_complexity(models: dict, path: Path) -> None:
    fig = _figure(figsize=(7, 5))
    ax = fig.subplots()
    for name, r in models.items():
        ax.plot(r["params"], r["test_accuracy"], "o", markersize=9)
        ax.annotate(f"{name}\n{r['params']:,}", (r["params"], r["test_accuracy"]),
                    textcoords="offset points", xytext=(6, -10), fontsize=8)
    epochs = sorted({r["epochs"] for r in models.values()})
    ax.set(xscale="log", xlabel="trainable parameters (log scale)", ylabel="test accuracy",
           title=f"zoo models after {'/'.join(map(str, epochs))} epochs")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)


# --- the experiments ---------------------------------------------------------------------


def epochs_experiment(args, settings, console) -> dict:
    models = {}
    for name in settings["models"]:
        run = run_training(args.out / "runs" / f"epochs-{name}", name, args,
                           epochs=settings["epochs"], seed=args.seed, limit=settings["limit"],
                           console=console)
        val = [r["val_accuracy"] for r in run["history"]]
        best = int(np.argmax(val))  # the first epoch with the best validation accuracy
        models[name] = {**run, "params": zoo.count_params(name), "chosen_epoch": best + 1,
                        "chosen_val_accuracy": val[best], "final_val_accuracy": val[-1]}
        console.print(f"{name}: best validation accuracy {val[best]:.2%} after epoch {best + 1} "
                      f"of {len(val)}")
    plot_epochs(models, args.out / "epochs.png")
    return {"models": models, "settings": training_settings(args, settings),
            "chosen_by": "highest validation accuracy (the first such epoch)"}


def l2_sweep_experiment(args, settings, console) -> dict:
    factors = []
    for factor in settings["factors"]:
        runs = []
        for replicate in range(settings["replicates"]):
            seed = args.seed + replicate
            run = run_training(args.out / "runs" / f"l2-{factor:.2e}-seed{seed}", L2_MODEL, args,
                               epochs=settings["epochs"], seed=seed, l2=factor,
                               limit=settings["limit"], console=console)
            runs.append({**run, "factor": factor, "seed": seed,
                         "final_val_accuracy": run["history"][-1]["val_accuracy"]})
        finals = [r["final_val_accuracy"] for r in runs]
        factors.append({"factor": factor, "runs": runs,
                        "mean_val_accuracy": float(np.mean(finals)),
                        "std_val_accuracy": (float(np.std(finals, ddof=1)) if len(finals) > 1
                                             else None)})
        console.print(f"L2 {factor:.1e}: final validation accuracy {np.mean(finals):.2%} "
                      f"(runs: {', '.join(f'{a:.2%}' for a in finals)})")
    best = max((run for f in factors for run in f["runs"]),
               key=lambda run: run["final_val_accuracy"])
    best_factor = best["factor"]
    result = {
        "model": L2_MODEL, "architecture": "784-500-300-10, ReLU",
        "replicates": settings["replicates"],
        "regularised": "the two hidden Dense kernels (not the output layer's, not biases; "
                       "scratch.zoo's `regularize`); loss += factor * sum(kernel**2)",
        "settings": training_settings(args, settings), "factors": factors,
        "best_run": {"factor": best_factor, "seed": best["seed"], "logdir": best["logdir"],
                     "final_val_accuracy": best["final_val_accuracy"],
                     "test_accuracy": mnist_test_accuracy(best["model_path"], args.data_dir)},
        "reference": {"accuracy": HINTON_ACCURACY, "measured_on": "the 10,000 test images",
                      "source": HINTON_SOURCE, "unstated": HINTON_UNSTATED},
    }
    console.print(f"best run: L2 {best_factor:.1e}, seed {best['seed']}: validation "
                  f"{best['final_val_accuracy']:.2%}, "
                  f"test {result['best_run']['test_accuracy']:.2%} "
                  f"(Hinton: {HINTON_ACCURACY:.2%} test)")
    plot_l2(result, args.out / "l2-sweep.png")
    return result


def available_fonts(count: int | None = None) -> dict:
    """{name: FreeTypeFont} for the fonts found (matplotlib's bundled ones, PIL's default)."""
    import matplotlib
    from PIL import ImageFont

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = {name: ImageFont.truetype(str(folder / f"{name}.ttf"), FONT_SIZE)
             for name in FONT_FILES if (folder / f"{name}.ttf").is_file()}
    default = ImageFont.load_default(size=FONT_SIZE)
    if isinstance(default, ImageFont.FreeTypeFont):  # a bitmap font when FreeType is missing
        fonts[PIL_DEFAULT] = default
    return dict(list(fonts.items())[:count])


def draw_digits(folder, fonts: dict) -> list[Path]:
    """Every digit in every font and VARIANT, black on white like a drawing, as
    <digit>_<font>_<variant>.png in `folder`; returns the paths."""
    from PIL import Image, ImageDraw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for digit in range(10):
        for font_name, font in fonts.items():
            for variant, (angle, stroke) in VARIANTS.items():
                image = Image.new("L", (CANVAS, CANVAS), 255)
                draw = ImageDraw.Draw(image)
                left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font,
                                                         stroke_width=stroke)
                origin = ((CANVAS - right - left) / 2, (CANVAS - bottom - top) / 2)
                draw.text(origin, str(digit), fill=0, font=font, stroke_width=stroke,
                          stroke_fill=0)
                image = image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)
                path = folder / f"{digit}_{font_name}_{variant}.png"
                image.save(path)
                paths.append(path)
    return paths


def label_of(path: Path) -> int:
    """The true digit of an own-digits file, from its name <digit>_<anything>.png."""
    name = Path(path).name
    if len(name) < 3 or not name[0].isdigit() or name[1] != "_":
        raise ExperimentError(f"{path}: name it <digit>_<anything>.png so its label is known")
    return int(name[0])


def _accuracy_by(rows: list[dict], key: str) -> dict:
    groups: dict[str, list[bool]] = {}
    for row in rows:
        groups.setdefault(str(row[key]), []).append(row["correct"])
    return {group: float(np.mean(hits)) for group, hits in groups.items()}


def own_digits_experiment(args, settings, console) -> dict:
    from rich.console import Console

    from keras_impl import test
    from keras_impl.digits import DigitImageError, collect_images, preprocess_file

    if args.model_path:
        model_path = Path(args.model_path)
    else:
        name = settings["model"]
        model_path = Path(run_training(args.out / "runs" / f"own-digits-{name}", name, args,
                                       epochs=settings["epochs"], seed=args.seed,
                                       limit=settings["limit"], console=console)["model_path"])
    work = args.out / "runs" / "own-digits"
    if args.images:
        folder = Path(args.images)
        try:
            files = collect_images([folder])
        except DigitImageError as err:
            raise ExperimentError(f"--images: {err}") from None
    else:
        folder = work / "images"
        for stale in folder.glob("*.png"):  # from an earlier run with other fonts
            stale.unlink()
        files = draw_digits(folder, available_fonts(settings["fonts"]))
    labels = {path.name: label_of(path) for path in files}
    predictions_json = work / "predictions.json"
    try:
        model = test.load_model(model_path)
    except test.ModelFileError as err:
        raise ExperimentError(f"--model-path: {err}") from None
    # What `python -m keras_impl.test --model-path M --apply DIR --json J --plots P` runs,
    # without its line per image (hundreds here; they are all in the JSON).
    apply = argparse.Namespace(model_path=str(model_path), apply=[str(folder)],
                               json=str(predictions_json), plots=str(work))
    code = test.run_apply(model, apply, Console(quiet=True))
    if code != 0:
        raise ExperimentError(f"python -m keras_impl.test --apply {folder} failed (exit {code})")
    rows = []
    for prediction in json.loads(predictions_json.read_text())["predictions"]:
        name = Path(prediction["file"]).name
        # drawn files are <digit>_<font>_<variant>.png; your own ones have no such parts
        _, font, variant = (Path(name).stem.split("_") if not args.images
                            else (None, "own", "own"))
        rows.append({"file": name, "digit": labels[name], "predicted": prediction["digit"],
                     "confidence": prediction["confidence"],
                     "correct": prediction["digit"] == labels[name], "font": font,
                     "variant": variant, "probabilities": prediction["probabilities"]})
    wrong = [row for row in rows if not row["correct"]]
    result = {"model_path": str(model_path), "images": str(folder), "count": len(rows),
              "network_input": str(work / "apply.png"),
              "accuracy": float(np.mean([row["correct"] for row in rows])),
              "mnist_test_accuracy": mnist_test_accuracy(model_path, args.data_dir),
              "by_font": _accuracy_by(rows, "font"), "by_variant": _accuracy_by(rows, "variant"),
              "by_digit": _accuracy_by(rows, "digit"), "variants": VARIANTS,
              "mistakes": [{key: row[key] for key in ("file", "digit", "predicted", "confidence")}
                           for row in wrong]}
    console.print(f"{result['accuracy']:.1%} of {len(rows)} drawn digits right; the same model "
                  f"gets {result['mnist_test_accuracy']:.2%} of MNIST's test digits")
    plot_own_digits(result, args.out / "own-digits.png")
    if wrong:
        shown = wrong[:test.GRID_SIDE ** 2]
        test.plot_predictions(np.stack([preprocess_file(folder / row["file"]) for row in shown]),
                              np.array([row["digit"] for row in shown]),
                              np.array([row["probabilities"] for row in shown]),
                              args.out / "own-digits-mistakes.png",
                              title="drawn digits the network got wrong, as it sees them")
    return result


def complexity_experiment(args, settings, console) -> dict:
    if args.from_json:
        source = _read_json(Path(args.from_json))
        if source is None:
            raise ExperimentError(f"--from-json {args.from_json}: no such file")
        models = source.get("models") if isinstance(source, dict) else None
        if not isinstance(models, dict) or not all(
                isinstance(m, dict) and {"params", "test_accuracy", "epochs"} <= set(m)
                for m in models.values()):
            raise ExperimentError(f"--from-json {args.from_json}: expected a complexity.json "
                                  "with models: {name: {params, test_accuracy, epochs}}")
        settings = source.get("settings")
    else:
        models = {}
        for name in settings["models"]:
            run = run_training(args.out / "runs" / f"complexity-{name}", name, args,
                               epochs=settings["epochs"], seed=args.seed,
                               limit=settings["limit"], console=console)
            models[name] = {"params": zoo.count_params(name), "epochs": settings["epochs"],
                            "final_val_accuracy": run["history"][-1]["val_accuracy"],
                            "test_accuracy": mnist_test_accuracy(run["model_path"], args.data_dir),
                            "seconds_per_epoch": run["seconds_per_epoch"],
                            "logdir": run["logdir"]}
            console.print(f"{name}: {models[name]['params']:,} parameters, test accuracy "
                          f"{models[name]['test_accuracy']:.2%}")
        settings = training_settings(args, settings)
    plot_complexity(models, args.out / "complexity.png")
    return {"models": models, "settings": settings, "source": args.from_json or "trained here"}


EXPERIMENTS = {"epochs": epochs_experiment, "l2-sweep": l2_sweep_experiment,
               "own-digits": own_digits_experiment, "complexity": complexity_experiment}


# --- command line ------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _l2_factor(text: str) -> float:
    value = float(text)
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected an L2 factor > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m keras_impl.experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    helps = {"epochs": "training and validation accuracy per epoch, the chosen epoch marked",
             "l2-sweep": "mlp500 with L2 factors 1e-6..1e-3, several seeds, against Hinton",
             "own-digits": "classify digits drawn with pillow (or your own PNGs)",
             "complexity": "parameters against test accuracy of zoo models"}
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text)
        full, fast = FULL[name], FAST[name]
        sub.add_argument("--out", type=Path, default=Path("runs") / "experiments",
                         help="where the JSON, the figure and the runs go "
                              "(default runs/experiments)")
        sub.add_argument("--fast", action="store_true",
                         help="smoke-test size: " + ", ".join(f"{k} {v}" for k, v in fast.items()))
        sub.add_argument("--epochs", type=_positive_int,
                         help=f"epochs per training (default {full['epochs']})")
        sub.add_argument("--limit", type=_positive_int,
                         help="use only the first N training and N validation images")
        sub.add_argument("--loop", choices=("custom", "fit"), default="custom",
                         help="keras_impl.train's loop (default custom)")
        sub.add_argument("--seed", type=int, default=0, help="seed of the (first) run")
        add_data_dir_arg(sub)
        if "models" in full:
            sub.add_argument("--models", nargs="+", type=zoo.name_argument,
                             help=f"zoo models (default {' '.join(full['models'])})")
        if name == "l2-sweep":
            sub.add_argument("--factors", nargs="+", type=_l2_factor,
                             help="L2 factors (default 5 log-spaced from 1e-6 to 1e-3)")
            sub.add_argument("--replicates", type=_positive_int,
                             help="seeds per factor (default 3)")
        if name == "own-digits":
            sub.add_argument("--model-path", help="a trained .keras or .h5 model "
                                                  "(default: train --model here)")
            sub.add_argument("--model", type=zoo.name_argument,
                             help="zoo model to train (default convnet)")
            sub.add_argument("--fonts", type=_positive_int,
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
    from rich.console import Console

    from keras_impl.train import write_json

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    console = console or Console()
    settings = resolve_settings(args)
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
              "command": "python -m keras_impl.experiments " + shlex.join(argv), **result}
    name = args.experiment
    write_json(args.out / f"{name}.json", result)
    console.print(f"wrote {args.out / f'{name}.json'} and {args.out / f'{name}.png'}",
                  soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
