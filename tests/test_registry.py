"""scratch.registry: each layer kind's declaration against its NumPy and Keras layers, and
the avgpool2d kind and lenet model added through it (CONTRIBUTING.md's recipe).

Every test over KINDS runs for a new kind without being edited: its declared shapes,
its NumPy layer against central differences, and against its Keras layer.
"""
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from comparison import params, twin
from keras_impl.zoo_model import keras_layer, weight_key
from scratch import famous, layers, zoo
from scratch.gradcheck import grad_rel_error, numeric_gradient
from scratch.initializers import INITIALIZERS
from scratch.registry import KINDS, BuildContext, LayerSpec, kind_of

ROOT = Path(__file__).resolve().parents[1]
# float64, NumPy against TensorFlow: the same sums in another order, so round-off only.
TWIN_TOLERANCE = 1e-10
# float64 central differences with step H: h^2 truncation plus round-off 1e-16 |loss| / h,
# which dominates below 1e-4 (the loss sums some 400 terms); measured worst 1e-8.
H = 1e-4
GRADCHECK_TOLERANCE = 1e-7
BATCH = 4
# Odd sizes, so pooling leaves a row and a column out and must give them zero gradient.
IMAGE_SHAPE, FLAT_SHAPE = (7, 5, 3), (12,)
# Dropout's training pass draws a random mask per call: it agrees with neither Keras's
# mask nor its own next call, so it is checked at inference only here (its training
# pass: tests/test_scratch_layers.py).
CASES = [(name, training) for name in KINDS for training in (False, True)
         if not (training and name == "dropout")]
# Normalising a handful of values per group (layernorm: the 3 channels of a position;
# groupnorm's example: 35 values) is sharply curved where the values nearly coincide, and
# its input gradient has entries near 0 beside entries near 10: central differences then
# carry 1e-5 of error at any step. Their gradients are checked on 16 channels in
# tests/test_scratch_layers.py instead (both against Keras here as well).
# The residual block in training: two batch statistics on 140 values between x and the
# loss, central differences 5e-7 (tests/test_curriculum_layers.py checks it at inference).
ILL_CONDITIONED_HERE = {("layernorm", False), ("layernorm", True), ("groupnorm", False),
                        ("groupnorm", True), ("residual", True)}


def input_shape(kind) -> tuple:
    return FLAT_SHAPE if kind.flat_input else IMAGE_SHAPE


def numpy_layer(name, fast=True, seed=0):
    """The kind's example as a float64 NumPy layer, every array random in [0.5, 1.5]
    (positive, so BatchNorm's moving variance is valid), and its input shape."""
    kind = KINDS[name]
    shape = input_shape(kind)
    _, params, _ = kind.describe(kind.example, shape)
    rng = np.random.default_rng(seed)
    ctx = BuildContext(f"{name}_0", np.float64, INITIALIZERS["glorot_uniform"], rng, rng)
    layer = kind.make_numpy(kind.example, params, ctx)
    layer.fast = fast
    for key, value in layer.params.items():
        layer.params[key] = rng.uniform(0.5, 1.5, value.shape)
    return layer, shape


def batch_and_dout(layer, shape, training, seed=1):
    """A random batch and a random upstream gradient shaped like the layer's output."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (BATCH, *shape))
    out = layer.forward(x, training)
    return x, rng.uniform(-1, 1, out.shape)


@pytest.mark.parametrize("name", KINDS)
def test_declared_shapes_are_both_layers_arrays(name):
    kind = KINDS[name]
    shape = input_shape(kind)
    out_shape, params, _ = kind.describe(kind.example, shape)
    ours, _ = numpy_layer(name)
    trained = {key: value.shape for key, value in ours.params.items()
               if key not in ours.non_trainable}
    assert trained == params
    assert ours.forward(np.zeros((BATCH, *shape))).shape == (BATCH, *out_shape)

    theirs = keras_layer(kind.example, name=f"{name}_0")
    theirs.build((None, *shape))
    assert {weight_key(theirs, v): tuple(v.shape) for v in theirs.trainable_weights} == params
    assert theirs.compute_output_shape((None, *shape)) == (None, *out_shape)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
@pytest.mark.parametrize("name, training", [case for case in CASES
                                            if case not in ILL_CONDITIONED_HERE])
def test_numpy_layer_passes_central_differences(name, training, fast):
    layer, shape = numpy_layer(name, fast)
    x, dout = batch_and_dout(layer, shape, training)

    def loss():
        return float(np.sum(layer.forward(x, training) * dout))

    loss()
    dx = layer.backward(dout)
    assert grad_rel_error(dx, numeric_gradient(loss, x, H)) <= GRADCHECK_TOLERANCE
    for key, grad in dict(layer.grads).items():
        numeric = numeric_gradient(loss, layer.params[key], H)
        assert grad_rel_error(grad, numeric) <= GRADCHECK_TOLERANCE, key


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
@pytest.mark.parametrize("name, training", CASES)
def test_numpy_layer_twins_its_keras_layer(name, training, fast):
    """Forward pass, and the GradientTape gradients of sum(out * dout) for the input and
    every trainable weight, float64."""
    kind = KINDS[name]
    ours, shape = numpy_layer(name, fast)
    with twin.keras_floatx("float64"):
        theirs = keras_layer(kind.example, name=f"{name}_0")
        theirs.build((None, *shape))
    for variable in theirs.weights:
        variable.assign(ours.params[weight_key(theirs, variable)])
    x, dout = batch_and_dout(ours, shape, training)

    x_tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tensor)
        out = theirs(x_tensor, training=training)
        loss = tf.reduce_sum(out * dout)
    dx, *weight_grads = tape.gradient(loss, [x_tensor, *theirs.trainable_weights])

    assert grad_rel_error(ours.forward(x, training), out.numpy()) <= TWIN_TOLERANCE
    assert grad_rel_error(ours.backward(dout), dx.numpy()) <= TWIN_TOLERANCE
    for variable, grad in zip(theirs.trainable_weights, weight_grads):
        assert grad_rel_error(ours.grads[weight_key(theirs, variable)],
                              grad.numpy()) <= TWIN_TOLERANCE


def test_unknown_kind_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown layer kind 'conv3d': expected one of dense"):
        kind_of(LayerSpec("conv3d"))
    with pytest.raises(ValueError, match="dense_1: dense needs a flat input"):
        zoo.param_rows([LayerSpec("conv2d", filters=2, kernel_size=3), LayerSpec("dense")])


def test_registry_and_zoo_stay_pure_numpy():
    code = ("import sys, scratch.registry, scratch.zoo, scratch.model; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --- the recipe's proof: avgpool2d, and lenet built with it -----------------------------------


def test_avgpool2d_readable_pair_passes_central_differences():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (2, 7, 5, 3))  # a row and a column left out
    out, cache = layers.avgpool2d_forward(x, 2)
    dout = rng.uniform(-1, 1, out.shape)
    dx = layers.avgpool2d_backward(dout, cache)["x"]
    numeric = numeric_gradient(lambda: float(np.sum(layers.avgpool2d_forward(x, 2)[0] * dout)),
                               x, H)
    assert grad_rel_error(dx, numeric) <= GRADCHECK_TOLERANCE
    assert not dx[:, 6].any() and not dx[:, :, 4].any()


def test_avgpool2d_twins_keras_average_pooling():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (2, 7, 5, 3))
    theirs = keras.layers.AveragePooling2D(2, dtype="float64")
    x_tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tensor)
        out = theirs(x_tensor)
        dout = rng.uniform(-1, 1, out.shape)
        loss = tf.reduce_sum(out * dout)
    ours, cache = layers.avgpool2d_forward(x, 2)
    assert ours.shape == (2, 3, 2, 3)
    assert grad_rel_error(ours, out.numpy()) <= TWIN_TOLERANCE
    assert grad_rel_error(layers.avgpool2d_backward(dout, cache)["x"],
                          tape.gradient(loss, x_tensor).numpy()) <= TWIN_TOLERANCE


def test_lenet_parameter_table_numpy_keras_and_declared():
    table = params.param_comparison("lenet")
    # LeNet-5's published layer sizes, counted by hand: C1 6 maps of 5x5 on 1 channel,
    # C3 16 maps of 5x5 on all 6, then 16*5*5 = 400 -> 120 -> 84 -> 10.
    by_hand = {"conv2d_0": 5 * 5 * 1 * 6 + 6, "avgpool2d_1": 0, "conv2d_2": 5 * 5 * 6 * 16 + 16,
               "avgpool2d_3": 0, "flatten_4": 0, "dense_5": 400 * 120 + 120,
               "dense_6": 120 * 84 + 84, "dense_7": 84 * 10 + 10}
    assert [row["layer"] for row in table["rows"]] == list(by_hand)
    for row in table["rows"]:
        assert row["declared"] == row["numpy"] == row["keras"] == by_hand[row["layer"]], row
    assert table["rows"][1]["output_shape"] == [14, 14, 6]
    assert table["rows"][1]["formula"] == "0 (no weights)"
    assert table["totals"] == {"numpy": 61_706, "keras": 61_706}
    # The same network declared with scratch.famous's building blocks (32x32 input, C5 as a
    # convolution) has the same count.
    modern = [famous.Input((32, 32, 1)), famous.Conv(6, 5), famous.Pool("avg"),
              famous.Conv(16, 5), famous.Pool("avg"), famous.Conv(120, 5), famous.Flatten(),
              famous.Dense(84), famous.Dense(10)]
    assert famous.famous_total(modern) == table["totals"]["numpy"]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
def test_lenet_gradients_agree_with_keras(fast):
    pair = twin.twin_pair("lenet", "float64", seed=0)
    pair.numpy_model.fast = fast
    rng = np.random.default_rng(4)
    x, y = rng.uniform(size=(8, 28, 28, 1)), rng.integers(0, 10, size=8)
    report = twin.gradient_agreement(pair, x, y)
    assert len(report.errors) == 10  # kernel and bias of 2 conv and 3 dense layers
    assert report.passed, report.errors
    assert abs(report.loss_numpy - report.loss_keras) <= 1e-12 * abs(report.loss_keras)
