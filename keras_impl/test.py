"""Evaluate a trained model on the MNIST test set, or classify your own digit images.

    python -m keras_impl.test --model-path runs/fc128-custom/model.keras --plots figures/
    python -m keras_impl.test --model-path model.h5 --json test.json
    python -m keras_impl.test --model-path model.keras --apply my_digits/ seven.jpg

Loads `.keras` (Sequential or the subclassed TwinNet) and `.h5` files. Reports test
loss (mean cross-entropy, without any L2 penalty), accuracy, per-class precision and
recall and the confusion matrix (rows: true digit, columns: prediction). --plots DIR
writes confusion_matrix.png, misclassified.pdf/.png (each digit above a bar chart of
its class probabilities) and predictions.png (titles blue when right, red when wrong).

Logits or probabilities? Decided from the model's structure, not from its numbers:
a model whose last layer is a Softmax layer or has activation="softmax" (the graders'
.h5 export) outputs probabilities; anything else (TwinNet, the fit() Sequential)
outputs logits, and softmax is applied here. Summing outputs to test for 1 would be
fooled by a logit vector that happens to sum to 1.

--shifted is the robustness check: accuracy on the untransformed test set and on
deterministic transformed copies of it (rotated +-15 degrees, shifted 3 px left, right,
up and down, scaled 0.8 and 1.2, thicker and thinner strokes; see keras_impl.augment),
and the mean over the transformed sets. `--split val` runs it on the validation split
instead: choose augmentation settings there, not on the test set.

    python -m keras_impl.test --model-path runs/best/model.keras --shifted --json robust.json

--apply FILE_OR_DIR ... classifies image files (PNG/JPG/..., any size, colour or grey)
after MNIST-style preprocessing (see keras_impl.digits) and needs no MNIST data; with
--plots it also saves apply.png, showing what the network saw.

--explain adds explanations.png (in the --plots DIR, else the current folder): saliency and
integrated-gradients maps (keras_impl.explain) of misclassified test digits for their true
and predicted class, or with --apply of your digits for their predicted class.

TensorFlow is imported where a model is loaded or run, after the arguments, the model
file's kind and the test data have been checked: bad input is reported at once.
"""
from __future__ import annotations

import plumbing.quiet  # noqa: F401  first: quiets TensorFlow's start-up (see there)
import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from rich import box
from rich.console import Console
from rich.table import Table

from keras_impl.data import add_data_dir_arg, load_split, run_cli
from keras_impl.digits import DigitImageError, collect_images, preprocess_file
from keras_impl.model_files import ModelFileError, check_model_file, load_model
from scratch import zoo
from plumbing.args import output_file, output_folder
from plumbing.files import write_figure, write_json

PROB_EPSILON = 1e-7  # Keras's clip for cross-entropy on probabilities
MISCLASSIFIED_SHOWN = 12
GRID_SIDE = 5
RIGHT, WRONG = "tab:blue", "tab:red"


def outputs_probabilities(model) -> bool:
    """True when the model ends in softmax (a Softmax layer or activation="softmax")."""
    import keras

    from keras_impl.zoo_model import TwinNet

    if isinstance(model, TwinNet) or not getattr(model, "layers", None):
        return False
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    return getattr(getattr(last, "activation", None), "__name__", "") == "softmax"


def log_probabilities(model, images: np.ndarray) -> np.ndarray:
    """Log class probabilities (N, 10) for images (N, 28, 28) float in [0, 1]."""
    from keras_impl.zoo_model import batch_input_shape

    x = np.asarray(images, np.float32).reshape((-1, *batch_input_shape(model)[1:]))
    out = np.asarray(model.predict(x, batch_size=1000, verbose=0), np.float64)
    if outputs_probabilities(model):
        return np.log(np.clip(out, PROB_EPSILON, 1.0))
    shifted = out - out.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int = 10):
    """(classes, classes) counts: row = true class, column = predicted class."""
    return np.bincount(np.asarray(labels, np.int64) * classes + predictions,
                       minlength=classes * classes).reshape(classes, classes)


def evaluate(log_probs: np.ndarray, labels: np.ndarray) -> dict:
    """Loss, accuracy, per-class precision/recall and the confusion matrix."""
    labels = np.asarray(labels, np.int64)
    predictions = log_probs.argmax(axis=1)
    cm = confusion_matrix(labels, predictions)
    hits = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    per_class = [{"digit": d,
                  "precision": hits[d] / predicted[d] if predicted[d] else None,
                  "recall": hits[d] / actual[d] if actual[d] else None,
                  "support": int(actual[d])} for d in range(len(cm))]
    return {"loss": float(-log_probs[np.arange(len(labels)), labels].mean()),
            "accuracy": float((predictions == labels).mean()),
            "count": int(len(labels)), "per_class": per_class,
            "confusion_matrix": cm.tolist()}


def _percent(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def print_report(result: dict, console: Console) -> None:
    table = Table(title=f"confusion matrix, {result['count']:,} test images",
                  caption="rows: true digit, columns: predicted digit",
                  box=box.SIMPLE_HEAD, padding=0)  # the box spaces columns: fits 80
    table.add_column("true", justify="right", style="bold")
    for digit in range(10):
        table.add_column(str(digit), justify="right")
    table.add_column("prec.", justify="right")
    table.add_column("recall", justify="right")
    for digit, (row, cls) in enumerate(zip(result["confusion_matrix"], result["per_class"])):
        cells = [f"[bold green]{n}[/]" if j == digit else (str(n) if n else "[dim]0[/]")
                 for j, n in enumerate(row)]
        table.add_row(str(digit), *cells, _percent(cls["precision"]), _percent(cls["recall"]))
    console.print(table)
    console.print(f"test loss {result['loss']:.4f}   test accuracy {result['accuracy']:.2%}")


def plot_confusion(cm, path) -> None:
    cm = np.asarray(cm)
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    shown = ax.imshow(cm, cmap="Blues")
    fig.colorbar(shown, ax=ax, label="images")
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if count > cm.max() / 2 else "black")
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted digit", ylabel="true digit",
           title="confusion matrix")
    write_figure(fig, path, dpi=120)


def plot_misclassified(images, labels, probs, base: Path) -> list[Path]:
    """Up to 12 misclassified digits, each above its class-probability bars: PDF and PNG."""
    wrong = np.flatnonzero(probs.argmax(axis=1) != labels)[:MISCLASSIFIED_SHOWN]
    cols = 6
    rows = max(1, -(-len(wrong) // cols))
    fig = Figure(figsize=(2 * cols, 4 * rows), layout="constrained")
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[1.3, 1] * rows)
    for k, i in enumerate(wrong):
        r, c = 2 * (k // cols), k % cols
        ax = fig.add_subplot(grid[r, c])
        ax.imshow(images[i].reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"true {labels[i]}, predicted {probs[i].argmax()}", fontsize=8)
        ax.axis("off")
        bars = fig.add_subplot(grid[r + 1, c])
        colours = ["lightgrey"] * 10
        colours[int(labels[i])], colours[int(probs[i].argmax())] = RIGHT, WRONG
        bars.bar(range(10), probs[i], color=colours)
        bars.set(xticks=range(10), ylim=(0, 1), yticks=[0, 0.5, 1])
        bars.tick_params(labelsize=7)
    fig.suptitle("misclassified test digits: probability of each class "
                 "(blue: true, red: predicted)")
    paths = [base.with_suffix(".pdf"), base.with_suffix(".png")]
    for path in paths:
        write_figure(fig, path, dpi=120)
    return paths


def plot_predictions(images, labels, probs, path, title="test digits") -> None:
    """A grid of digits titled with prediction and confidence, blue if right, red if wrong.

    labels may be None (own images: no truth known, titles in black).
    """
    count = min(len(images), GRID_SIDE * GRID_SIDE)
    cols = min(count, GRID_SIDE)
    rows = max(1, -(-count // cols))
    fig = Figure(figsize=(1.8 * cols, 2 * rows), layout="constrained")
    for k in range(count):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(images[k].reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
        guess = int(probs[k].argmax())
        text = f"{guess} ({probs[k, guess]:.0%})"
        colour = "black"
        if labels is not None:
            right = guess == labels[k]
            colour = RIGHT if right else WRONG
            text += "" if right else f", true {labels[k]}"
        ax.set_title(text, color=colour, fontsize=9)
        ax.axis("off")
    fig.suptitle(title)
    write_figure(fig, path, dpi=120)


def run_test(args, console: Console) -> int:
    images, labels = load_split("test", args.data_dir)
    images = images.astype(np.float32) / 255.0
    model = load_model(args.model_path)
    log_probs = log_probabilities(model, images)
    result = evaluate(log_probs, labels)
    result.update(model_path=str(args.model_path),
                  output="probabilities" if outputs_probabilities(model) else "logits")
    print_report(result, console)
    if args.plots:
        plots = Path(args.plots)  # made by the first figure written into it
        probs = np.exp(log_probs)
        plot_confusion(result["confusion_matrix"], plots / "confusion_matrix.png")
        written = plot_misclassified(images, labels, probs, plots / "misclassified")
        plot_predictions(images, labels, probs, plots / "predictions.png")
        result["plots"] = [str(p) for p in [plots / "confusion_matrix.png", *written,
                                            plots / "predictions.png"]]
        console.print(f"figures in {plots}/", soft_wrap=True)
    if args.explain:
        from keras_impl.explain import plot_misclassified_explanations

        result["explanations"] = str(plot_misclassified_explanations(
            model, images, labels, np.exp(log_probs), args.plots or "."))
    if args.json:
        write_json(args.json, result)
    return 0


def robustness(model, images: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, errors and loss on images (N, 28, 28) and on each TEST_TRANSFORMS copy.

    Also the mean accuracy over the transformed copies (not counting the original).
    """
    from keras_impl.augment import TEST_TRANSFORMS

    sets = {}
    for name, transform in [("original", None), *TEST_TRANSFORMS.items()]:
        shown = images if transform is None else transform(images[..., None]).numpy()
        result = evaluate(log_probabilities(model, shown), labels)
        sets[name] = {"accuracy": result["accuracy"], "loss": result["loss"],
                      "errors": result["count"] - int(np.trace(result["confusion_matrix"]))}
    mean = float(np.mean([sets[name]["accuracy"] for name in TEST_TRANSFORMS]))
    return {"count": int(len(labels)), "sets": sets, "mean_transformed_accuracy": mean}


def print_robustness(result: dict, split: str, console: Console) -> None:
    table = Table(title=f"robustness: {result['count']:,} {split} images per set",
                  box=box.SIMPLE_HEAD)
    for name in ("transform", "accuracy", "errors", "loss"):
        table.add_column(name, justify="left" if name == "transform" else "right")
    for name, row in result["sets"].items():
        table.add_row(name, f"{row['accuracy']:.2%}", f"{row['errors']:,}", f"{row['loss']:.4f}",
                      style="bold" if name == "original" else None,
                      end_section=name == "original")
    table.add_section()
    table.add_row(f"mean of {len(result['sets']) - 1} transforms",
                  f"{result['mean_transformed_accuracy']:.2%}", "", "", style="bold")
    console.print(table)


def run_shifted(args, console: Console) -> int:
    images, labels = load_split(args.split, args.data_dir)
    model = load_model(args.model_path)
    result = robustness(model, images.astype(np.float32) / 255.0, labels)
    result.update(model_path=str(args.model_path), split=args.split)
    print_robustness(result, args.split, console)
    if args.json:
        write_json(args.json, result)
    return 0


def run_apply(model, args, console: Console) -> int:
    """Classify each image; bad paths get one error line each and exit code 2."""
    errors, files = [], []
    for given in args.apply:
        try:
            files.extend(collect_images([given]))
        except DigitImageError as err:
            errors.append(str(err))
    inputs, names = [], []
    for path in files:
        try:
            inputs.append(preprocess_file(path))
            names.append(str(path))
        except DigitImageError as err:
            errors.append(str(err))
    results = []
    if inputs:
        probs = np.exp(log_probabilities(model, np.stack(inputs)))
        for name, p in zip(names, probs):
            results.append({"file": name, "digit": int(p.argmax()),
                            "confidence": float(p.max()), "probabilities": p.tolist()})
            console.print(f"{name}  {int(p.argmax())}  {p.max():.1%}", soft_wrap=True,
                          highlight=False)
        if args.plots:
            plot_predictions(np.stack(inputs), None, probs, Path(args.plots) / "apply.png",
                             title="your digits as the network sees them")
        if args.explain:
            from keras_impl.explain import plot_own_explanations

            plot_own_explanations(model, np.stack(inputs), names, probs, args.plots or ".")
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if args.json:
        write_json(args.json, {"model_path": str(args.model_path), "predictions": results,
                               "errors": errors})
    return 2 if errors else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keras_impl.test", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", required=True, help="a .keras or .h5 model file")
    parser.add_argument("--json", metavar="FILE", type=output_file,
                        help="write the results as JSON")
    parser.add_argument("--plots", metavar="DIR", type=output_folder,
                        help="write the figures into DIR")
    parser.add_argument("--apply", nargs="+", metavar="FILE_OR_DIR",
                        help="classify these image files (or the images in these folders)")
    parser.add_argument("--shifted", action="store_true",
                        help="accuracy on rotated, shifted, scaled, thick and thin test digits")
    parser.add_argument("--explain", action="store_true",
                        help="explanations.png: saliency and integrated gradients of digits")
    parser.add_argument("--split", choices=("test", "val"),
                        help="with --shifted: the split to transform (default test)")
    add_data_dir_arg(parser)
    args = parser.parse_args(argv)
    if args.shifted and (args.apply or args.plots):
        parser.error("--shifted cannot be combined with --apply or --plots")
    if args.shifted and args.explain:
        parser.error("--explain cannot be combined with --shifted")
    if args.split and not args.shifted:
        parser.error("--split is only used with --shifted")
    args.split = args.split or "test"
    console = plumbing.quiet.make_console()
    try:
        check_model_file(args.model_path)  # said before the data is read
        if args.shifted:
            return run_shifted(args, console)
        if args.apply:
            return run_apply(load_model(args.model_path), args, console)
        return run_test(args, console)
    except ModelFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run_cli(main))
