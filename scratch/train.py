"""The NumPy training loops and the training checkpoints (pure NumPy).

    train_epoch(model, optimizer, batches)   one optimizer step per (x, y) batch
    evaluate(model, batches)                 loss and accuracy in inference mode
    checkpoint_extras / restore_checkpoint   what --save adds to a model's .npz

The batches are any iterable of NumPy (x, y) pairs. The command line that trains on
the same tf.data batches as the Keras side is `python -m comparison.scratch_train`:
it lives outside scratch/, which never imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np

from scratch.losses import softmax_cross_entropy
from scratch.model import CheckpointError, model_from_arrays, read_npz

# --- the loops (any iterable of numpy (x, y) batches) -------------------------


def train_epoch(model, optimizer, batches, on_batch=None, *, schedule=None, first_step=0,
                label_smoothing=0.0) -> tuple[float, float]:
    """One optimizer step per batch; returns the epoch's mean (loss, accuracy).

    batches: iterable of (x (B, 28, 28, 1) or (B, 784), y (B,) integer labels).
    Loss and accuracy are those of each batch before its update, averaged over
    examples, like the running numbers Keras's fit() shows.
    on_batch(loss so far, accuracy so far) is called after every step.
    schedule(step) -> learning rate, when given, sets the rate of each step; steps
    are numbered from first_step (the number of steps taken in earlier epochs).
    """
    total_loss = correct = seen = 0
    for step, (x, y) in enumerate(batches, first_step):
        if schedule is not None:
            optimizer = dataclasses.replace(optimizer, learning_rate=schedule(step))
        loss, logits = model.loss_and_grads(x, y, training=True, label_smoothing=label_smoothing)
        model.apply_gradients(optimizer)
        seen += len(y)
        total_loss += loss * len(y)
        correct += int(np.count_nonzero(logits.argmax(axis=1) == y))
        if on_batch is not None:
            on_batch(total_loss / seen, correct / seen)
    if not seen:
        raise ValueError("no batches to train on")
    return total_loss / seen, correct / seen


def evaluate(model, batches, label_smoothing=0.0) -> tuple[float, float]:
    """(mean loss + L2 penalty, accuracy) of the model in inference mode over all batches.

    The loss is the training objective (labels smoothed by `label_smoothing`), as
    Keras reports validation loss.
    """
    total_loss = correct = seen = 0
    for x, y in batches:
        logits = model.forward(x, training=False)
        total_loss += softmax_cross_entropy(logits, y, label_smoothing)[0] * len(y)
        correct += int(np.count_nonzero(logits.argmax(axis=1) == y))
        seen += len(y)
    if not seen:
        raise ValueError("no batches to evaluate")
    return total_loss / seen + model.l2_loss(), correct / seen


# --- checkpoints: model + optimizer state + history -----------------------------

# Settings that define a run: --resume refuses a checkpoint made with other values.
RUN_SETTINGS = ("model", "batch_size", "optimizer", "lr", "momentum", "nesterov", "l2",
                "seed", "init", "limit", "schedule", "warmup_epochs", "label_smoothing",
                "augment")


def checkpoint_extras(model, settings: dict, history: list) -> dict:
    """The arrays --save adds to the model's: settings, history, dropout RNG and the
    optimizer state of every parameter ("optimizer/<layer>/<param>[/<key>]")."""
    extras = {"train/settings": np.array(json.dumps(settings)),
              "train/history": np.array(json.dumps(history)),
              "train/dropout_rng": np.array(json.dumps(model.rng.bit_generator.state))}
    for (i, key), state in model.optimizer_states.items():
        prefix = f"optimizer/{model.layers[i].name}/{key}"
        if isinstance(state, dict):
            extras.update({f"{prefix}/{k}": np.asarray(v) for k, v in state.items()})
        elif state is not None:
            extras[prefix] = state
    return extras


def restore_checkpoint(path, settings: dict):
    """(model with optimizer state and dropout RNG restored, history) from a --save file."""
    arrays = read_npz(path)
    if "train/settings" not in arrays:
        raise CheckpointError(f"{path}: a saved model without training state, cannot resume")
    try:
        saved = json.loads(str(arrays["train/settings"]))
        changed = [f"--{k.replace('_', '-')} {saved.get(k)} (now {settings[k]})"
                   for k in settings if saved.get(k) != settings[k]]
        if changed:
            raise CheckpointError(f"{path}: saved with {', '.join(changed)}; resume with the "
                                  "same arguments")
        model = model_from_arrays(arrays, path)
        model.rng.bit_generator.state = json.loads(str(arrays["train/dropout_rng"]))
        for i, key, _ in model.parameters():
            prefix = f"optimizer/{model.layers[i].name}/{key}"
            if prefix in arrays:
                model.optimizer_states[(i, key)] = arrays[prefix]
            elif fields := {k.rsplit("/", 1)[1]: v for k, v in arrays.items()
                            if k.startswith(prefix + "/")}:
                model.optimizer_states[(i, key)] = {
                    k: (v.item() if v.ndim == 0 else v) for k, v in fields.items()}
        return model, json.loads(str(arrays["train/history"]))
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: damaged training state ({type(err).__name__}: {err})") \
            from None


if __name__ == "__main__":  # the command line moved out of scratch/ (it needs tf.data)
    print("error: scratch.train has no command line; train with "
          "python -m comparison.scratch_train (same arguments)", file=sys.stderr)
    sys.exit(2)
