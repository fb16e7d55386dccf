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
    # Huge logits: exp overflows unless each row's maximum is subtracted first, and a
    # probability underflows to 0 (log: -inf) unless the loss is a log-sum-exp.
    settings = [("", logits, 0.0), ("smoothing 0.1", logits, 0.1),
                ("logits + 1e4", logits + 1e4, 0.0), ("logits ±1e4", logits * 5e3, 0.0)]
    for label, values, smoothing in settings:
        with keras_floatx("float64"):
            loss_fn = make_loss_fn(smoothing)

        def forward(functions, inputs, smoothing=smoothing):
            result = functions[LOSS](inputs["logits"], labels.copy(), smoothing)
            if not (isinstance(result, tuple) and len(result) == 2):
                return result  # the caller reports what came back instead
            return np.asarray(result[0]), result[1]

        found.append(Case(label, {"logits": values},
                          ("logits",), forward,
                          lambda functions, dout, cache: {"logits": dout * np.asarray(cache)},
                          lambda x, student_out, loss_fn=loss_fn: loss_fn(labels, x), {},
                          "cross-entropy", image=False))
    return found


@dataclass(frozen=True)
class Setting:
    """One configuration of a registry kind worth checking apart.

    label: how the rows name it; spec: changes to the kind's `example` spec
    (dataclasses.replace); options: forward's keyword arguments; keras_call: the Keras
    layer's call arguments; shape: the input's shape (default IMAGE or FLAT)."""

    label: str = ""
    spec: dict = dataclasses.field(default_factory=dict)
    options: dict = dataclasses.field(default_factory=dict)
    keras_call: dict = dataclasses.field(default_factory=dict)
    shape: tuple | None = None


def pool_setting(label: str, pool_size: int, strides=None, padding: str = "valid") -> Setting:
    """Max or average pooling with its own window, stride and padding."""
    options = {"pool_size": pool_size, "strides": strides, "padding": padding}
    return Setting(label, spec=options, options=options)


POOL_SETTINGS = [pool_setting("pool 2", 2), pool_setting("pool 3", 3),
                 pool_setting("3x3 stride 2, overlapping", 3, 2),
                 pool_setting("3x3 stride 2, same", 3, 2, "same"),
                 pool_setting("2x2 stride 1", 2, 1)]

# The configurations each kind is checked on beyond its example (a kind not listed: the
# example alone). A new configuration of a kind is one more Setting here.
SETTINGS = {
    "conv2d": [
        Setting("valid", options={"padding": "valid"}),
        Setting("same, 4x4", spec={"padding": "same", "kernel_size": 4},
                options={"padding": "same"}),  # even: one more row at the bottom than on top
        Setting("same, 5x5", spec={"padding": "same", "kernel_size": 5},
                options={"padding": "same"}),
        Setting("1x1, batch 1", spec={"kernel_size": 1}, options={"padding": "valid"},
                shape=(1, *IMAGE[1:])),
        Setting("same, stride 2", spec={"padding": "same", "strides": 2},
                options={"padding": "same", "strides": 2}),
        Setting("pad 1, strides (2, 1)", spec={"padding": 1, "strides": (2, 1)},
                options={"padding": 1, "strides": (2, 1)}),
    ],
    "maxpool2d": POOL_SETTINGS,
    "avgpool2d": POOL_SETTINGS,
    "groupnorm": [Setting(f"{groups} groups", spec={"groups": groups},
                          options={"groups": groups}) for groups in (1, 3)],
    "residual": [Setting(f"{skip}, {mode}", spec={"filters": filters, "strides": strides},
                         options={"strides": strides, "training": training},
                         keras_call={"training": training})
                 for skip, filters, strides in (("identity skip", 3, 1),
                                                ("projection skip", 4, 2))
                 for mode, training in (("training", True), ("inference", False))],
    "batchnorm": [Setting("training", options={"training": True},
                          keras_call={"training": True}),
                  Setting("inference", options={"training": False},
                          keras_call={"training": False})],
    "dense": [Setting(""), Setting("batch 1", shape=(1, FLAT[1]))],
}


def plant_classic_traps(layer: str, x) -> None:
    """Values that expose classic slips: exact zeros for ReLU, tied maxima for pooling."""
    if layer == "relu":
        x.reshape(-1)[::5] = 0.0  # at exactly 0 the gradient is 0, as in TensorFlow
    if layer == "maxpool2d" and x.ndim == 4:
        x[0, :2, :2, 0] = 0.5  # a window of four tied maxima
        x[-1, 2:4, :, -1] = 0.0  # a row of windows of zeros, as after a ReLU


def cases(layer: str) -> list[Case]:
    """Every case `layer` is checked on (see the module docstring)."""
    if layer == LOSS:
        return loss_cases()
    default_shape = FLAT if KINDS[layer].flat_input else IMAGE
    if layer == "dropout":
        x = np.random.default_rng(SEED).standard_normal(default_shape)
        return dropout_cases(x)
    found = []
    for setting in SETTINGS.get(layer, [Setting()]):
        x = np.random.default_rng(SEED).standard_normal(setting.shape or default_shape)
        plant_classic_traps(layer, x)
        spec = dataclasses.replace(KINDS[layer].example, **setting.spec)
        found.append(layer_case(layer, x, spec, setting.label, keras_call=setting.keras_call,
                                **setting.options))
    return found


def float32_case(case: Case) -> Case:
    """The same case in float32: only the dtypes are checked on it (a float32 input gives
    a float32 output and float32 gradients)."""
    inputs = {name: value.astype(np.float32) for name, value in case.inputs.items()}
    return dataclasses.replace(case, label=f"{case.label}, float32".lstrip(", "), inputs=inputs)
