"""How many epochs? Training and validation accuracy per epoch, the chosen epoch marked.

    python -m comparison.experiments epochs [--models fc128 convnet] [--epochs 30]

The chosen epoch is the first one with the best validation accuracy; the test set is
not looked at.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from comparison.experiments.runs import run_training, training_settings
from plumbing.files import write_figure
from scratch import zoo


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


def plot_epochs(models: dict, path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.5 * len(models), 7.5), layout="constrained")
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
    write_figure(fig, path, dpi=100)
