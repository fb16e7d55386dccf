"""Trainable parameters against test accuracy, for zoo models trained alike.

    python -m comparison.experiments complexity [--models ...] [--epochs 5] [--from-json FILE]

Without --models it trains MODELS, the zoo models of results/complexity.json, so the
command still reproduces that file when the zoo grows. --from-json plots an earlier
complexity.json instead of training.
"""
from __future__ import annotations

from pathlib import Path

from comparison.experiments.runs import (ExperimentError, mnist_test_accuracy, read_json,
                                         run_training, training_settings)
from plumbing.files import write_figure
from scratch import zoo

# The models results/complexity.json records (a new zoo model joins through --models).
MODELS = ["fc128", "mlp500", "tiny", "convnet", "cnn3"]


def complexity_experiment(args, settings, console) -> dict:
    if args.from_json:
        source = read_json(Path(args.from_json))
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


def plot_complexity(models: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    for name, r in models.items():
        ax.plot(r["params"], r["test_accuracy"], "o", markersize=9)
        ax.annotate(f"{name}\n{r['params']:,}", (r["params"], r["test_accuracy"]),
                    textcoords="offset points", xytext=(6, -10), fontsize=8)
    epochs = sorted({r["epochs"] for r in models.values()})
    ax.set(xscale="log", xlabel="trainable parameters (log scale)", ylabel="test accuracy",
           title=f"zoo models after {'/'.join(map(str, epochs))} epochs")
    ax.grid(alpha=0.3)
    write_figure(fig, path, dpi=100)
