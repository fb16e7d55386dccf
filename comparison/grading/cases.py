"""The inputs each layer is graded on, and its Keras twin on the same numbers.

`cases(layer)` gives one `Case` per setting worth checking apart: conv2d with 'valid'
padding and with 'same' (an even kernel, so TensorFlow pads one more row at the bottom
than on top), with stride 2 and with explicit padding and strides (2, 1); pooling that
tiles, overlaps, pads ('same') and slides by 1; batchnorm, dropout and the residual block
in training and at inference (the block with both kinds of skip); groupnorm with 1 and 3
groups; the loss with and without label smoothing; one case for every other kind. Every kind of the registry
gets a case from its `example` spec, so a new kind is checked without an edit here
(when its forward pass takes nothing but x and its params).

Inputs are float64 with sizes chosen to catch the classic slips: images 7 x 9 (not
square, odd: pooling leaves a row and a column over), exact zeros for ReLU, tied maxima
for max pooling, random gamma, beta and moving statistics for batchnorm.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from comparison.grading.exercise import LOSS, reference_functions
from scratch.registry import KINDS, LayerSpec

SEED = 0
IMAGE = (2, 7, 9, 3)  # N, H, W, C
FLAT = (4, 5)  # N, D
CLASSES = 10


@dataclass
class Case:
    """One setting of a layer: its inputs, how to call its functions, and its Keras twin.

    inputs: "x" (the loss: "logits") and the params by Keras variable name, float64.
    wrt: the arrays backward differentiates, in the order of its result.
    forward(functions, inputs) -> (out, cache) and backward(functions, dout, cache) ->
    grads call the layer's functions (a dict by name, the student's or the reference's).
    keras(x, student_out) -> the Keras layer's output for the tf.Variable x, using
    `variables` ({name: tf.Variable}) for the params; student_out is only read by
    dropout, whose Keras twin applies the student's own mask.
    """

    label: str
    inputs: dict[str, np.ndarray]
    wrt: tuple[str, ...]
    forward: Callable
    backward: Callable
    keras: Callable
    variables: dict
    keras_name: str
    image: bool  # x and out are (N, H, W, C): wrong border pixels can be recognised

    @property
    def batch(self) -> int:
        return len(self.inputs["logits" if "logits" in self.inputs else "x"])


def keras_twin(spec, inputs: dict, **call_kwargs):
    """(keras(x, student_out), variables, class name) of the registry's Keras layer for
    `spec`, built in float64 with the params of `inputs` assigned to its variables."""
    from comparison.twin import keras_floatx
    from keras_impl.zoo_model import keras_layer, weight_key

    with keras_floatx("float64"):
        layer = keras_layer(spec)
        layer.build(inputs["x"].shape)
    variables = {}
    for variable in layer.weights:
        key = weight_key(layer, variable)
        variable.assign(inputs[key])
        variables[key] = variable
    return (lambda x, student_out: layer(x, **call_kwargs)), variables, type(layer).__name__


def layer_case(kind: str, x, spec=None, label: str = "", keras_call=None, rng_seed=None,
               **options) -> Case:
    """A case of registry kind `kind` on input x: params drawn for the kind's parameter
    shapes, forward(x, [params,] **options), the Keras twin called with `keras_call`.
    rng_seed: forward also gets rng=np.random.default_rng(rng_seed), a fresh one at every
    call, so that every call draws the same random numbers."""
    rng = np.random.default_rng(SEED + 1)
    spec = spec or KINDS[kind].example
    if spec.activation:  # forward is the layer alone; the layer class adds the ReLU
        spec = dataclasses.replace(spec, activation=None)
    params = {name: rng.standard_normal(shape)
              for name, shape in KINDS[kind].param_shapes(spec, x.shape[1:]).items()}
    for gamma in [name for name in params if name.endswith("gamma")]:
        if kind in ("batchnorm", "residual"):  # BatchNorms: moving statistics too
            prefix, size = gamma[:-len("gamma")], params[gamma].shape
            params[prefix + "moving_mean"] = rng.standard_normal(size)
            params[prefix + "moving_variance"] = rng.uniform(0.5, 2.0, size)
    trainable = tuple(name for name in params if "moving_" not in name)
    forward_name, backward_name = reference_functions(kind)

    def forward(functions, inputs):
        given = {name: inputs[name] for name in params}
        fresh = {} if rng_seed is None else {"rng": np.random.default_rng(rng_seed)}
        return functions[forward_name](inputs["x"], *([given] if params else []), **options,
                                       **fresh)

    def backward(functions, dout, cache):
        return functions[backward_name](dout, cache)

    keras, variables, keras_name = keras_twin(spec, {"x": x, **params}, **(keras_call or {}))
    return Case(label, {"x": x, **params}, ("x", *trainable), forward, backward, keras,
                variables, keras_name, image=x.ndim == 4 and kind != "flatten")


def dropout_cases(x) -> list[Case]:
    """Training and inference. In training the Keras twin is Dropout's formula on the
    student's own mask, x / (1 - rate) where the student kept x and 0 elsewhere: masks are
    random draws, so only the reference, drawing from the same seed, has the same one."""
    import tensorflow as tf

    rate = KINDS["dropout"].example.rate
    training_case, inference_case = (
        layer_case("dropout", x, label=label, keras_call={"training": False}, rng_seed=SEED + 2,
                   rate=rate, training=training)
        for label, training in (("training", True), ("inference", False)))
    training_case.keras = lambda x, student_out: tf.where(
        tf.constant(np.asarray(student_out) != 0), x / (1 - rate), tf.zeros_like(x))
    return [training_case, inference_case]


def loss_cases() -> list[Case]:
    """softmax_cross_entropy without and with label smoothing. Its "forward" returns
    (loss, dlogits) and its "backward" scales the dlogits it returned."""
    from comparison.twin import keras_floatx
    from keras_impl.train import make_loss_fn

    rng = np.random.default_rng(SEED + 3)
    logits = 2 * rng.standard_normal((6, CLASSES))
    labels = rng.integers(0, CLASSES, len(logits))
    found = []
    for smoothing in (0.0, 0.1):
        with keras_floatx("float64"):
            loss_fn = make_loss_fn(smoothing)

        def forward(functions, inputs, smoothing=smoothing):
            result = functions[LOSS](inputs["logits"], labels.copy(), smoothing)
            if not (isinstance(result, tuple) and len(result) == 2):
                return result  # the caller reports what came back instead
            return np.asarray(result[0]), result[1]

        found.append(Case(f"smoothing {smoothing:g}" if smoothing else "", {"logits": logits},
                          ("logits",), forward,
                          lambda functions, dout, cache: {"logits": dout * np.asarray(cache)},
                          lambda x, student_out, loss_fn=loss_fn: loss_fn(labels, x), {},
                          "cross-entropy", image=False))
    return found


def cases(layer: str) -> list[Case]:
    """Every case `layer` is checked on (see the module docstring)."""
    if layer == LOSS:
        return loss_cases()
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal(FLAT if KINDS[layer].flat_input else IMAGE)
    if layer == "relu":
        x.reshape(-1)[::5] = 0.0  # at exactly 0 the gradient is 0, as in TensorFlow
    if layer == "maxpool2d":
        x[0, :2, :2, 0] = 0.5  # a window of four tied maxima
        x[1, 2:4, :, 1] = 0.0  # a row of windows of zeros, as after a ReLU
    if layer == "conv2d":
        example = KINDS["conv2d"].example
        same = dataclasses.replace(example, padding="same", kernel_size=4)
        strided = dataclasses.replace(example, padding="same", strides=2)
        padded = dataclasses.replace(example, padding=1, strides=(2, 1))
        return [layer_case("conv2d", x, example, "valid", padding="valid"),
                layer_case("conv2d", x, same, "same", padding="same"),
                layer_case("conv2d", x, strided, "same, stride 2", padding="same", strides=2),
                layer_case("conv2d", x, padded, "pad 1, strides (2, 1)", padding=1,
                           strides=(2, 1))]
    if layer in ("maxpool2d", "avgpool2d"):
        settings = [("", 2, None, "valid"), ("3x3 stride 2, overlapping", 3, 2, "valid"),
                    ("3x3 stride 2, same", 3, 2, "same"), ("2x2 stride 1", 2, 1, "valid")]
        return [layer_case(layer, x, dataclasses.replace(KINDS[layer].example, pool_size=p,
                                                          strides=s, padding=pad),
                           label, pool_size=p, strides=s, padding=pad)
                for label, p, s, pad in settings]
    if layer == "groupnorm":
        return [layer_case("groupnorm", x, LayerSpec("groupnorm", groups=groups),
                           f"{groups} groups", groups=groups) for groups in (1, 3)]
    if layer == "residual":
        return [layer_case("residual", x, LayerSpec("residual", filters=f, strides=s),
                           f"{label}, {mode}", keras_call={"training": training}, strides=s,
                           training=training)
                for label, f, s in (("identity skip", 3, 1), ("projection skip", 4, 2))
                for mode, training in (("training", True), ("inference", False))]
    if layer == "batchnorm":
        return [layer_case("batchnorm", x, label=label, keras_call={"training": training},
                           training=training)
                for label, training in (("training", True), ("inference", False))]
    if layer == "dropout":
        return dropout_cases(x)
    return [layer_case(layer, x)]
