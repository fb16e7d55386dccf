"""Hinton's 784-500-300-10 net with L2 weight decay, against LeCun's table.

    python -m comparison.experiments l2-sweep [--epochs 40] [--factors F ...] [--replicates 3]

mlp500 trained with L2 factors log-spaced from 1e-6 to 1e-3, several seeds each: the
final validation accuracy (mean +- std) per factor against the 98.47% of LeCun's MNIST
table, and the test accuracy of the best run by validation accuracy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from comparison.experiments.runs import mnist_test_accuracy, run_training, training_settings
from plumbing.files import write_figure

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


def plot_l2(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5), layout="constrained")
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
    write_figure(fig, path, dpi=100)
