"""Does MNIST accuracy carry over to digits it never saw? Drawn digits, classified.

    python -m comparison.experiments own-digits [--model-path M.keras | --model convnet]

Digits drawn with pillow (fonts, rotation, thick strokes), or your own PNGs named
<digit>_<anything>.png, classified by `python -m keras_impl.test --apply`; accuracy by
font, variant and digit next to the model's MNIST test accuracy.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from comparison.experiments.runs import ExperimentError, mnist_test_accuracy, run_training
from plumbing.files import atomic_write, write_figure

# Fonts that come with matplotlib (so every machine has them), then PIL's own.
FONT_FILES = ["DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "DejaVuSans-Bold",
              "DejaVuSerif-Italic", "DejaVuSans-Oblique", "STIXGeneral", "STIXGeneralItalic",
              "cmr10", "cmss10", "cmtt10"]
PIL_DEFAULT = "pil-default"
# name: (rotation in degrees, counter-clockwise; extra stroke width in canvas pixels)
VARIANTS = {"plain": (0, 0), "rotated+15": (15, 0), "rotated-15": (-15, 0), "thick": (0, 5)}
CANVAS = 112
FONT_SIZE = 80


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
                atomic_write(path, lambda f: image.save(f, format="PNG"))
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
                               json=str(predictions_json), plots=str(work), explain=False)
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


def plot_own_digits(result: dict, path: Path) -> None:
    groups = [("font", result["by_font"]), ("variant", result["by_variant"]),
              ("digit", result["by_digit"])]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 4.8), layout="constrained")
    for ax, (title, accuracies) in zip(fig.subplots(1, 3), groups):
        ax.bar(list(accuracies), list(accuracies.values()), color="tab:blue")
        ax.axhline(result["mnist_test_accuracy"], color="tab:red", linestyle="--",
                   label=f"MNIST test {result['mnist_test_accuracy']:.1%}")
        ax.set(ylim=(0, 1.05), ylabel="accuracy", title=f"drawn digits by {title}")
        ax.tick_params(axis="x", labelrotation=60 if title == "font" else 0, labelsize=8)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{result['model_path']}: {result['accuracy']:.1%} of "
                 f"{result['count']} drawn digits right")
    write_figure(fig, path, dpi=100)
