"""One keras_impl.train run per folder, reused when finished, resumed when interrupted.

    run = run_training(out / "runs" / "epochs-fc128", "fc128", args, epochs=30)
    run["history"]          # every epoch, read back from the run's TensorBoard events

Every experiment trains through here, with the options of the training command line
(`python -m keras_impl.train`), so each run folder is one you could have made by hand.
"""
from __future__ import annotations

import json
from pathlib import Path

from scratch.optim import DEFAULT_LR


class ExperimentError(Exception):
    """An experiment that cannot start or go on; the message is one line."""


class ExperimentInterrupted(ExperimentError):
    """Ctrl-C during a training; its checkpoint is saved."""


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

    from keras_impl import train_cli

    argv = ["--model", model, "--loop", args.loop, "--epochs", str(epochs), "--seed", str(seed),
            "--l2", repr(l2), *optimizer_argv(args), "--logdir", str(logdir),
            "--json", str(logdir / "result.json")]
    argv += ["--limit", str(limit)] if limit else []
    argv += ["--data-dir", args.data_dir] if args.data_dir else []
    settings = train_cli.parse_args(argv)
    wanted = {key: getattr(settings, key) for key in (
        "model", "loop", "optimizer", "lr", "momentum", "nesterov", "l2", "batch_size", "seed",
        "limit")}
    previous = read_json(logdir / "run.json")
    if previous is not None:
        previous = {"momentum": 0.0, "nesterov": False, **previous}  # runs from before the flags
        if {key: previous.get(key) for key in wanted} != wanted:
            raise ExperimentError(f"{logdir}: holds a run with other settings ({previous}); "
                                  "choose another --out or delete the folder")
    result = read_json(logdir / "result.json")
    done = isinstance(result, dict) and result.get("status") == "completed"
    if done and result["epoch"] > epochs:
        raise ExperimentError(f"{logdir}: already trained for {result['epoch']} epochs, "
                              f"more than the {epochs} asked for; choose another --out")
    if not (done and result["epoch"] == epochs):
        settings.resume = (logdir / "checkpoints" / "checkpoint").exists()
        try:
            result = train_cli.train(settings, console)
        except train_cli.TrainError as err:
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


def read_json(path: Path):
    """The JSON in `path`, None when there is no such file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except OSError as err:  # a folder, say
        raise ExperimentError(f"{path}: cannot read ({err.strerror})") from None
    except ValueError as err:
        raise ExperimentError(f"{path}: not valid JSON ({err})") from None


def mnist_test_accuracy(model_path, data_dir=None) -> float:
    """Accuracy of a saved model on the 10,000 official test images (keras_impl.test)."""
    from keras_impl import test
    from keras_impl.data import load_mnist

    images, labels = load_mnist("test", data_dir)
    model = test.load_model(model_path)
    return test.evaluate(test.log_probabilities(model, images / 255.0), labels)["accuracy"]


def optimizer_argv(args) -> list[str]:
    """The experiment's optimizer flags as the training command line takes them."""
    argv = ["--optimizer", args.optimizer]
    argv += ["--lr", repr(args.lr)] if args.lr is not None else []
    argv += ["--momentum", repr(args.momentum)] if args.momentum else []
    argv += ["--nesterov"] if args.nesterov else []
    return argv


def training_settings(args, settings: dict) -> dict:
    """What a reader needs to reproduce (or explain the difference from) a result."""
    from keras_impl.data import SPLIT_SEED, VAL_SIZE
    from keras_impl.train_cli import parse_args

    defaults = parse_args(["--model", "fc128"])  # the runs leave the batch size at train's
    limit = settings["limit"]
    sgd = {"momentum": args.momentum, "nesterov": args.nesterov} if args.optimizer == "sgd" else {}
    return {
        "loop": args.loop, "optimizer": args.optimizer,
        "learning_rate": DEFAULT_LR[args.optimizer] if args.lr is None else args.lr, **sgd,
        "schedule": "constant learning rate, no decay, no warm-up, no early stopping",
        "batch_size": defaults.batch_size, "epochs": settings["epochs"],
        "init": "Keras defaults: glorot_uniform kernels, zero biases",
        "split": (f"first {limit:,} training and first {limit:,} validation images"
                  if limit else
                  f"55,000 train / {VAL_SIZE:,} validation (500 per class, seed {SPLIT_SEED}) "
                  "from the official 60,000; the official 10,000 test images untouched"),
        "preprocessing": "pixels / 255, no augmentation, no dropout unless the model has it",
    }
