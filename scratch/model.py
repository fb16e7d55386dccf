"""The NumPy network: built from a `scratch.zoo` architecture, trained with hand-written backprop.

    model = build_model("convnet", seed=0)
    loss, logits = model.loss_and_grads(x, y)   # forward, loss (+ L2), backward
    model.apply_gradients(Adam())                # one optimizer step on every parameter
    save_npz(model, "convnet.npz"); model = load_npz("convnet.npz")

`model.layers[i]` is zoo spec i and Keras layer i (named `<kind>_<i>`, as in
`keras_impl.zoo_model`). `model.parameters()` lists the trained arrays in the order
of Keras's `trainable_variables`; `model.weights()` adds BatchNorm's moving
statistics (trained by no optimizer), in the order of Keras's `weights`.

    python -m scratch.model fc128 convnet        # parameter tables
    python -m scratch.model --file convnet.npz   # the table of a saved model
"""
from __future__ import annotations

import argparse
import copy
import zipfile
from pathlib import Path

import numpy as np

from scratch import zoo
from plumbing.args import input_file
from plumbing.files import atomic_write
from scratch.cli import model_name
from scratch.initializers import INITIALIZERS, weight_and_dropout_generators
from scratch.layer_classes import BatchNorm, Dropout, MaxPool2D
from scratch.losses import l2_penalty, softmax_cross_entropy
from scratch.registry import BuildContext, LayerSpec, kind_of

NPZ_FORMAT = "twinnet-scratch-v1"


# --- the model -------------------------------------------------------------


class Model:
    """A stack of layers; logits out, softmax cross-entropy (+ L2 on kernels) as the loss.

    layers: one layer object per zoo spec. rng: the numpy Generator the dropout
    layers draw their masks from. optimizer_states: (layer index, param name)
    -> the state `update` returned last; clear it before switching optimizers.
    """

    def __init__(self, name: str, layers: list, l2: float = 0.0, rng=None, fast: bool = True):
        if l2 < 0:
            raise ValueError(f"l2 {l2}: expected >= 0")
        self.name = name
        self.layers = layers
        self.l2 = float(l2)
        self.rng = rng
        self.optimizer_states: dict = {}
        self.conv = zoo.has_conv(name)
        self.first_trainable = next(i for i, layer in enumerate(layers) if layer.params)
        self.fast = fast

    @property
    def fast(self) -> bool:
        """True (default): the layers run `scratch.fast_layers`, and a ReLU feeding max
        pooling is applied by the pooling layer after the maxima (max and ReLU commute:
        the same numbers for a quarter of the work). False: the readable `scratch.layers`.
        Switch between training steps, never between forward and backward."""
        return self._fast

    @fast.setter
    def fast(self, fast: bool):
        self._fast = bool(fast)
        for layer in self.layers:
            layer.fast = self._fast
        for layer, following in zip(self.layers, self.layers[1:]):
            if (isinstance(following, MaxPool2D) and following.tiles
                    and getattr(layer, "activation", None) == "relu"):
                layer.relu_in_next_layer = following.relu_after_pooling = self._fast

    @property
    def dtype(self):
        return self.layers[self.first_trainable].params["kernel"].dtype

    def _check_input(self, x):
        x = np.asarray(x)
        per_example = x.shape[1:]
        ok = (per_example == zoo.INPUT_SHAPE if self.conv
              else x.ndim >= 2 and int(np.prod(per_example)) == 28 * 28)
        if not ok:
            wanted = "(N, 28, 28, 1)" if self.conv else "(N, 28, 28, 1) or (N, 784)"
            raise ValueError(f"{self.name} takes input of shape {wanted}, got {x.shape}")
        return x.astype(self.dtype, copy=False)

    def forward(self, x, training=False, dropout=True):
        """x: (N, 28, 28, 1), or (N, 784) for MLPs -> logits (N, 10).

        training=True turns dropout on and makes BatchNorm normalise with the
        batch's statistics (updating its moving ones). dropout=False keeps dropout
        off even then: the deterministic training-mode pass that the Keras
        cross-checks compare. Every layer keeps what its backward needs.
        """
        out = self._check_input(x)
        for layer in self.layers:
            out = layer.forward(out, training and (dropout or not isinstance(layer, Dropout)))
        return out

    def backward(self, dlogits, input_grad=False):
        """Backpropagate dL/dlogits (N, 10) through the last forward pass.

        Fills every layer's `grads`; returns dL/dx (shaped like the input) when
        input_grad, else None (and, when fast, skips the first layer's input gradient).
        """
        self.layers[self.first_trainable].input_grad = input_grad
        stop = 0 if input_grad else self.first_trainable
        grad = dlogits
        for layer in reversed(self.layers[stop:]):
            grad = layer.backward(grad)
        return grad if input_grad else None

    def l2_loss(self) -> float:
        """The L2 penalty l2 * sum(kernel**2) over conv and dense kernels (0 when l2 = 0)."""
        if not self.l2:
            return 0.0
        return sum(l2_penalty(layer.params["kernel"], self.l2)[0]
                   for layer in self.layers if layer.regularized)

    def loss_and_grads(self, x, y, training=True, label_smoothing=0.0, dropout=True):
        """Forward, loss and backward on one batch: x, training and dropout as for
        forward, y (N,) integer labels.

        Returns (loss, logits (N, 10)); loss = mean cross-entropy (against labels
        smoothed by `label_smoothing`) + L2 penalty, the number Keras reports. Every
        layer's `grads` then holds dL/dparam, the L2 gradient 2 * l2 * kernel included.
        """
        logits = self.forward(x, training, dropout)
        loss, dlogits = softmax_cross_entropy(logits, y, label_smoothing)
        self.backward(dlogits)
        if self.l2:
            for layer in self.layers:
                if layer.regularized:
                    penalty, grad = l2_penalty(layer.params["kernel"], self.l2)
                    loss += penalty
                    layer.grads["kernel"] += grad
        return loss, logits

    def parameters(self) -> list[tuple[int, str, np.ndarray]]:
        """[(layer index, param name, array)] of the trained arrays ("kernel", "bias",
        "gamma", "beta"), in Keras's trainable_variables order."""
        return [(i, key, value) for i, key, value in self.weights()
                if key not in self.layers[i].non_trainable]

    def weights(self) -> list[tuple[int, str, np.ndarray]]:
        """Like `parameters`, plus BatchNorm's moving statistics ("moving_mean",
        "moving_variance"): every array of the model, in Keras's `weights` order."""
        return [(i, key, value) for i, layer in enumerate(self.layers)
                for key, value in layer.params.items()]

    def apply_gradients(self, optimizer) -> None:
        """One `optimizer.update` per parameter, with the gradients of the last backward."""
        for i, key, value in self.parameters():
            layer = self.layers[i]
            state = self.optimizer_states.get((i, key))
            layer.params[key], self.optimizer_states[(i, key)] = optimizer.update(
                value, layer.grads[key], state)

    def biases_before_batchnorm(self) -> set[tuple[int, str]]:
        """{(layer index, "bias")} of the layers whose output goes straight into a BatchNorm.

        In training mode the BatchNorm subtracts the batch mean, which absorbs any
        constant shift, so the loss does not depend on such a bias: its gradient is
        exactly 0 (round-off in practice, in Keras as well). At inference the moving
        mean is subtracted instead, and the bias counts.
        """
        pairs = zip(self.layers, self.layers[1:])
        return {(i, "bias") for i, (layer, following) in enumerate(pairs)
                if "bias" in layer.params and isinstance(following, BatchNorm)}

    def count_params(self) -> int:
        """Trainable parameters (what `zoo.count_params` declares)."""
        return sum(value.size for _, _, value in self.parameters())

    def count_non_trainable(self) -> int:
        """BatchNorm's moving statistics: in Keras's `count_params()`, trained by no optimizer."""
        return sum(value.size for _, _, value in self.weights()) - self.count_params()

    def output_shapes(self) -> list[tuple]:
        """Each layer's output shape without the batch axis, from a forward pass of one image."""
        out = np.zeros((1, *zoo.INPUT_SHAPE), dtype=self.dtype)
        shapes = []
        for layer in self.layers:
            out = layer.forward(out)
            shapes.append(out.shape[1:])
        return shapes

    def param_table(self) -> list[zoo.ParamRow]:
        """Per layer: name, output shape, formula with its numbers, count, taken from
        the real arrays and a real forward pass, and checked against `zoo.param_rows`."""
        rows = []
        declared = zoo.param_rows(self.name)
        for layer, shape, expected in zip(self.layers, self.output_shapes(), declared):
            trained = {k: v for k, v in layer.params.items() if k not in layer.non_trainable}
            count = sum(value.size for value in trained.values())
            shapes = {key: value.shape for key, value in trained.items()}
            if set(trained) == {"kernel", "bias"}:
                kernel, bias = layer.params["kernel"], layer.params["bias"]
                formula = "*".join(map(str, kernel.shape)) + f" + {bias.size} = {count:,}"
            elif isinstance(layer, BatchNorm):  # gamma and beta, plus the moving statistics
                c = layer.params["gamma"].size
                formula = (f"{len(trained)}*{c} trainable (+ {len(layer.non_trainable)}*{c} "
                           "moving stats)")
            else:  # the registry's formula; the count and shapes above are the arrays'
                formula = expected.formula
            row = zoo.ParamRow(layer.name, shape, formula, count, shapes)
            if row != expected:
                raise RuntimeError(f"{self.name} layer {layer.name}: arrays give {row}, "
                                   f"scratch.zoo declares {expected}")
            rows.append(row)
        return rows

    def astype(self, dtype) -> Model:
        """A copy with every parameter in `dtype` (e.g. float64 for gradient checks)."""
        clone = copy.deepcopy(self)
        clone.optimizer_states = {}
        for layer in clone.layers:
            layer.params = {key: value.astype(dtype) for key, value in layer.params.items()}
            layer.grads, layer.cache = {}, None
        return clone


def make_layer(spec: LayerSpec, row: zoo.ParamRow, ctx: BuildContext):
    """The layer object for one zoo spec, as its registry entry builds it; row gives its
    name and parameter shapes."""
    kind = kind_of(spec)
    layer = kind.make_numpy(spec, row.shapes, ctx)
    # L2 on hidden kernels, not the output layer's
    layer.regularized = kind.regularizable and spec.regularize
    return layer


def build_model(name: str, *, l2: float = 0.0, seed: int = 0, dtype=np.float32,
                init: str = "glorot_uniform", fast: bool = True) -> Model:
    """The zoo architecture `name` with fresh weights.

    Kernels from `init` ("glorot_uniform", Keras's default; "he_uniform" or
    "he_normal"), biases zero. `seed` fixes the weights and, through a second
    independent stream, the dropout masks. l2 > 0 adds L2 on every hidden kernel.
    fast=False trains with the readable layers of `scratch.layers` (see Model.fast).
    """
    if init not in INITIALIZERS:
        raise ValueError(f"init {init!r}: expected one of {', '.join(INITIALIZERS)}")
    specs = zoo.architecture(name)
    init_rng, rng = weight_and_dropout_generators(seed)
    layers = [make_layer(spec, row, BuildContext(row.layer, dtype, INITIALIZERS[init],
                                                 init_rng, rng))
              for spec, row in zip(specs, zoo.param_rows(specs))]
    return Model(name, layers, l2, rng, fast=fast)


# --- saving and loading ------------------------------------------------------


class CheckpointError(ValueError):
    """A saved model that cannot be used; the message is one line naming the file."""


def read_npz(path) -> dict[str, np.ndarray]:
    """Every array of an .npz file, or a one-line CheckpointError."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: a single .npy array, expected an .npz archive")
        with data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, expected an .npz file") from None
    except CheckpointError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        # NumPy takes any file it does not recognise for "pickled (object) data"
        reason = (str(err).split(". ")[0] if zipfile.is_zipfile(path)
                  else "not a zip archive, as every .npz is")
        raise CheckpointError(f"{path}: not a valid .npz file ({reason})") from None


def model_arrays(model: Model) -> dict[str, np.ndarray]:
    """What save_npz writes: format, arch name, l2 and "<layer name>/<param>" arrays
    (every weight, BatchNorm's moving statistics included)."""
    arrays = {"format": np.array(NPZ_FORMAT), "arch": np.array(model.name),
              "l2": np.array(model.l2)}
    for i, key, value in model.weights():
        arrays[f"{model.layers[i].name}/{key}"] = value
    return arrays


def model_from_arrays(arrays: dict, source) -> Model:
    """Rebuild the model saved in `arrays` (read from `source`, named in errors)."""
    if str(arrays.get("format", "")) != NPZ_FORMAT:
        raise CheckpointError(f"{source}: not a twinnet NumPy model (no format {NPZ_FORMAT!r})")
    try:
        model = build_model(str(arrays["arch"]), l2=float(arrays["l2"]))
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{source}: bad architecture or l2 ({err})") from None
    for i, key, value in model.weights():
        name = f"{model.layers[i].name}/{key}"
        if name not in arrays:
            raise CheckpointError(f"{source}: missing {name} for model {model.name}")
        saved = arrays[name]
        if saved.shape != value.shape or not np.issubdtype(saved.dtype, np.floating):
            raise CheckpointError(f"{source}: {name} is {saved.dtype} {saved.shape}, "
                                  f"{model.name} needs floats of shape {value.shape}")
        model.layers[i].params[key] = saved
    return model


def save_npz(model: Model, path, extras: dict | None = None) -> None:
    """Save model (architecture name, l2, weights) atomically; `extras` adds more arrays
    (the training CLI's optimizer state and history)."""
    atomic_write(path, lambda f: np.savez(f, **model_arrays(model), **(extras or {})))


def load_npz(path) -> Model:
    """The model saved by save_npz; CheckpointError (one line) for a wrong or corrupt file."""
    return model_from_arrays(read_npz(path), path)


# --- command line: parameter tables ------------------------------------------


def print_param_table(model: Model, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{model.name}: trainable parameters")
    for column in ("layer", "output shape", "formula", "count"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for row in model.param_table():
        table.add_row(row.layer, str(row.output_shape), row.formula, f"{row.count:,}")
    table.add_row("total", "", "", f"{model.count_params():,}", style="bold")
    if moving := model.count_non_trainable():
        table.add_row("non-trainable", "", "BatchNorm moving mean and variance "
                      "(Keras's count_params() adds them)", f"{moving:,}")
    (console or Console()).print(table)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scratch.model",
                                     description="Print the parameter table of zoo models.")
    parser.add_argument("names", nargs="*", metavar="NAME", type=model_name,
                        help=f"zoo model: {', '.join(zoo.model_names())} or fc<n>")
    parser.add_argument("--file", action="append", default=[], metavar="NPZ", type=input_file,
                        help="a model saved by `python -m comparison.scratch_train --save`")
    args = parser.parse_args(argv)
    if not (args.names or args.file):
        parser.error("nothing to show: give a model NAME or --file NPZ")
    models = [build_model(name) for name in args.names]
    for path in args.file:
        try:
            models.append(load_npz(path))
        except CheckpointError as err:
            parser.error(str(err))
    for model in models:
        print_param_table(model)


if __name__ == "__main__":
    main()
