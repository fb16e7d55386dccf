"""The curriculum's layers: strided and padded conv2d, overlapping and 'same' pooling,
LayerNorm, GroupNorm and the residual block, beyond what tests/test_registry.py checks
for every kind (its example against Keras and central differences).

Measures, all float64: the largest elementwise relative error |a - b| / max(|a|, |b|)
(`grad_rel_error`) against central differences with step H = 1e-4 (<= GRAD_TOLERANCE =
1e-7; h^2 truncation and 1e-16 |loss| / h round-off, as in tests/test_registry.py), against the Keras twin's forward pass and GradientTape gradients (<= TWIN_TOLERANCE
= 1e-10: the same sums in another order), and fast against readable (<= FAST_TOLERANCE =
1e-12, norm-wise as tests/test_fast_layers.py measures it; pooling selects values, so
there the two are equal to the bit).
"""
import numpy as np
import pytest
import tensorflow as tf

from comparison.twin import keras_floatx
from keras_impl.zoo_model import keras_layer, weight_key
from scratch import fast_layers as F
from scratch import layers as L
from scratch import residual as R
from scratch import windows as W
from scratch.gradcheck import grad_rel_error, numeric_gradient
from scratch.layer_classes import MaxPool2D, ResidualBlock
from scratch.registry import KINDS, BuildContext, LayerSpec
from scratch.initializers import INITIALIZERS

H = 1e-4
GRAD_TOLERANCE = 1e-7
TWIN_TOLERANCE = 1e-10
FAST_TOLERANCE = 1e-12


def central_difference_errors(forward, backward, inputs, seed=0):
    """{name: relative error} of backward against central differences of sum(out * R)."""
    out, cache = forward(**inputs)
    weights = np.random.default_rng(seed).standard_normal(out.shape)
    grads = backward(weights, cache)

    def objective():
        return float(np.sum(forward(**inputs)[0] * weights))

    return {name: grad_rel_error(grads[name], numeric_gradient(objective, array, H))
            for name, array in inputs.items() if name in grads}


def keras_twin_errors(spec, x, params, forward_out, backward, cache, training=False):
    """Forward and gradient errors of our layer against the registry's Keras twin of spec."""
    with keras_floatx("float64"):
        layer = keras_layer(spec, name="twin")
        layer.build((None, *x.shape[1:]))
    for variable in layer.weights:
        variable.assign(params[weight_key(layer, variable)])
    dout = np.random.default_rng(5).standard_normal(forward_out.shape)
    x_tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tensor)
        out = layer(x_tensor, training=training)
        loss = tf.reduce_sum(out * dout)
    dx, *weight_grads = tape.gradient(loss, [x_tensor, *layer.trainable_weights])
    ours = backward(dout, cache)
    errors = {"out": grad_rel_error(forward_out, out.numpy()), "x": grad_rel_error(ours["x"],
                                                                                 dx.numpy())}
    for variable, grad in zip(layer.trainable_weights, weight_grads):
        key = weight_key(layer, variable)
        errors[key] = grad_rel_error(ours[key], grad.numpy())
    return errors


def normwise(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# --- conv2d with strides and padding --------------------------------------------------

CONV_CASES = [  # (strides, padding, kernel size, input H x W)
    (2, "valid", 3, (7, 8)), (2, "same", 3, (7, 8)), ((1, 2), "same", 4, (6, 7)),
    ((2, 1), "valid", 2, (9, 5)), (2, 1, 3, (7, 7)), (2, ((0, 1), (2, 1)), 3, (6, 5)),
    (1, 2, 3, (5, 5)), (3, "same", 3, (8, 7)),
]


def conv_inputs(seed, hw, k, c=3, f=4):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, *hw, c)),
            {"kernel": rng.standard_normal((k, k, c, f)), "bias": rng.standard_normal(f)})


def conv2d_naive(x, params, strides, pads):
    """out[n, h, w, f] = bias[f] + sum xp[n, sh*h + i, sw*w + j, c] kernel[i, j, c, f],
    one output value at a time."""
    kernel, bias = params["kernel"], params["bias"]
    kh, kw, _, f = kernel.shape
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    sh, sw = strides
    ho, wo = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    out = np.zeros((len(x), ho, wo, f))
    for n, h, w, o in np.ndindex(out.shape):
        out[n, h, w, o] = np.sum(xp[n, sh * h:sh * h + kh, sw * w:sw * w + kw] * kernel[..., o]) \
            + bias[o]
    return out


@pytest.mark.parametrize("strides, padding, k, hw", CONV_CASES)
def test_strided_conv2d_is_the_definition_and_passes_central_differences(strides, padding, k,
                                                                         hw):
    x, params = conv_inputs(1, hw, k)
    out, cache = L.conv2d_forward(x, params, padding, strides)
    pads = W.conv_pads(x.shape, k, k, strides, padding)
    assert np.allclose(out, conv2d_naive(x, params, W.pair(strides), pads), rtol=1e-12,
                       atol=1e-12)
    errors = central_difference_errors(
        lambda x, kernel, bias: L.conv2d_forward(x, {"kernel": kernel, "bias": bias}, padding,
                                                 strides),
        L.conv2d_backward, {"x": x, **params})
    assert max(errors.values()) <= GRAD_TOLERANCE, errors


@pytest.mark.parametrize("strides, padding, k, hw", CONV_CASES)
def test_strided_conv2d_twins_keras_conv2d(strides, padding, k, hw):
    x, params = conv_inputs(2, hw, k)
    out, cache = L.conv2d_forward(x, params, padding, strides)
    spec = LayerSpec("conv2d", filters=4, kernel_size=k, strides=strides, padding=padding)
    errors = keras_twin_errors(spec, x, params, out, L.conv2d_backward, cache)
    assert max(errors.values()) <= TWIN_TOLERANCE, errors
    assert KINDS["conv2d"].output_shape(spec, x.shape[1:]) == out.shape[1:]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("strides, padding, k, hw", CONV_CASES)
def test_strided_conv2d_fast_equals_readable(strides, padding, k, hw, channels, dtype):
    x, params = conv_inputs(3, hw, k, channels)
    x, params = x.astype(dtype), {key: v.astype(dtype) for key, v in params.items()}
    out, cache = L.conv2d_forward(x, params, padding, strides)
    fast_out, fast_cache = F.conv2d_forward(x, params, padding, strides)
    dout = np.random.default_rng(4).standard_normal(out.shape).astype(dtype)
    readable, fast = L.conv2d_backward(dout, cache), F.conv2d_backward(dout, fast_cache)
    tolerance = FAST_TOLERANCE if dtype == np.float64 else 2e-6
    assert normwise(fast_out, out) <= tolerance
    for key in ("x", "kernel", "bias"):
        assert fast[key].shape == readable[key].shape
        assert normwise(fast[key], readable[key]) <= tolerance, key


def test_same_padding_at_stride_2_puts_the_odd_row_at_the_end_like_tensorflow():
    # 28 rows, 3 taps, stride 2: 14 outputs need 13*2 + 3 = 29 rows: one, at the bottom
    assert W.axis_padding(28, 3, 2, "same") == (0, 1)
    assert W.axis_padding(7, 3, 2, "same") == (1, 1)
    assert W.axis_padding(9, 4, 2, "same") == (1, 2)
    assert W.axis_padding(6, 1, 2, "same") == (0, 0)


def test_cs231n_conv_stride_2_pad_1_shapes_and_bad_padding():
    x, params = conv_inputs(6, (4, 4), 4, c=3, f=3)
    out, _ = L.conv2d_forward(x, params, 1, 2)
    assert out.shape == (2, 2, 2, 3)
    with pytest.raises(ValueError, match="padding"):
        L.conv2d_forward(x, params, "full", 2)
    with pytest.raises(ValueError, match="strides"):
        L.conv2d_forward(x, params, "same", "2")


# --- pooling: own window and stride, 'same', global ------------------------------------

POOL_CASES = [  # (pool size, strides, padding, input H x W)
    (3, 2, "valid", (7, 9)), (3, 2, "same", (7, 8)), (2, 1, "valid", (5, 6)),
    (2, 2, "same", (5, 7)), (3, (1, 2), "same", (6, 7)), (2, None, "valid", (7, 5)),
]


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("pool, strides, padding, hw", POOL_CASES)
def test_pooling_passes_central_differences_and_twins_keras(kind, pool, strides, padding, hw):
    rng = np.random.default_rng(7)
    # distinct values 0.01 apart: no ties, and a step of 1e-5 never reorders them
    x = rng.permutation(2 * hw[0] * hw[1] * 3).reshape(2, *hw, 3) * 0.01
    forward = getattr(L, f"{kind}_forward")
    backward = getattr(L, f"{kind}_backward")
    errors = central_difference_errors(lambda x: forward(x, pool, strides, padding), backward,
                                       {"x": x})
    assert errors["x"] <= GRAD_TOLERANCE
    out, cache = forward(x, pool, strides, padding)
    spec = LayerSpec(kind, pool_size=pool, strides=strides, padding=padding)
    assert KINDS[kind].output_shape(spec, x.shape[1:]) == out.shape[1:]
    twin = keras_twin_errors(spec, x, {}, out, backward, cache)
    assert max(twin.values()) <= TWIN_TOLERANCE, twin


@pytest.mark.parametrize("pool, strides, padding, hw", POOL_CASES)
def test_overlapping_maxpool_ties_go_to_the_first_maximum_like_tensorflow(pool, strides,
                                                                          padding, hw):
    rng = np.random.default_rng(8)
    x = rng.integers(0, 3, (2, *hw, 2)).astype(np.float64)  # many ties, within and across
    out, cache = L.maxpool2d_forward(x, pool, strides, padding)
    spec = LayerSpec("maxpool2d", pool_size=pool, strides=strides, padding=padding)
    twin = keras_twin_errors(spec, x, {}, out, L.maxpool2d_backward, cache)
    assert twin["out"] == 0 and twin["x"] <= TWIN_TOLERANCE


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiling_pooling_fast_equals_readable(kind, dtype):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 7, 5, 3)).astype(dtype)
    readable, cache = getattr(L, f"{kind}_forward")(x, 2)
    fast, fast_cache = getattr(F, f"{kind}_forward")(x, 2)
    dout = rng.standard_normal(readable.shape).astype(dtype)
    dx = getattr(L, f"{kind}_backward")(dout, cache)["x"]
    fast_dx = getattr(F, f"{kind}_backward")(dout, fast_cache)["x"]
    tolerance = 0 if kind == "maxpool2d" else (FAST_TOLERANCE if dtype == np.float64 else 2e-7)
    assert normwise(fast, readable) <= tolerance and normwise(fast_dx, dx) <= tolerance


def test_overlapping_maxpool_layer_runs_the_readable_pair_even_when_fast():
    layer = MaxPool2D(3, strides=2, padding="same")
    assert not layer.tiles and MaxPool2D(2).tiles
    x = np.random.default_rng(10).standard_normal((2, 7, 7, 2))
    assert np.array_equal(layer.forward(x), L.maxpool2d_forward(x, 3, 2, "same")[0])


def test_avgpool_same_averages_only_the_real_values_at_the_border():
    x = np.ones((1, 3, 3, 1))
    out, _ = L.avgpool2d_forward(x, 2, 2, "same")
    assert out.shape == (1, 2, 2, 1) and np.all(out == 1.0)  # not 0.5 or 0.25


# --- layernorm and groupnorm ----------------------------------------------------------


@pytest.mark.parametrize("kind, options", [("layernorm", {}), ("groupnorm", {"groups": 4}),
                                           ("groupnorm", {"groups": 1})])
def test_normalization_passes_central_differences_on_16_channels(kind, options):
    rng = np.random.default_rng(11)
    inputs = {"x": rng.standard_normal((2, 3, 4, 16)), "gamma": rng.uniform(0.5, 1.5, 16),
              "beta": rng.standard_normal(16)}
    forward, backward = getattr(L, f"{kind}_forward"), getattr(L, f"{kind}_backward")
    errors = central_difference_errors(
        lambda x, gamma, beta: forward(x, {"gamma": gamma, "beta": beta}, **options), backward,
        inputs)
    assert max(errors.values()) <= GRAD_TOLERANCE, errors
    out, cache = forward(inputs["x"], {"gamma": inputs["gamma"], "beta": inputs["beta"]},
                         **options)
    spec = LayerSpec(kind, groups=options.get("groups", 0))
    twin = keras_twin_errors(spec, inputs["x"], inputs, out, backward, cache)
    assert max(twin.values()) <= TWIN_TOLERANCE, twin


def test_layernorm_normalises_each_position_and_groupnorm_each_group():
    rng = np.random.default_rng(12)
    x = 3 + 2 * rng.standard_normal((2, 3, 3, 8))
    ones = {"gamma": np.ones(8), "beta": np.zeros(8)}
    out, _ = L.layernorm_forward(x, ones)
    var = x.var(axis=-1)
    assert np.allclose(out.mean(axis=-1), 0) and np.allclose(out.var(axis=-1), var / (var + 1e-3))
    out, _ = L.groupnorm_forward(x, ones, groups=2)
    first_group = out[..., :4].reshape(2, -1)
    assert np.allclose(first_group.mean(axis=1), 0)
    with pytest.raises(ValueError, match="groups"):
        L.groupnorm_forward(x, ones, groups=3)


# --- residual block -----------------------------------------------------------------


def residual_layer(filters, strides, c, seed=13):
    spec = LayerSpec("residual", filters=filters, strides=strides)
    _, shapes, _ = KINDS["residual"].describe(spec, (6, 6, c))
    rng = np.random.default_rng(seed)
    ctx = BuildContext("residual_0", np.float64, INITIALIZERS["glorot_uniform"], rng, rng)
    layer = KINDS["residual"].make_numpy(spec, shapes, ctx)
    for key, value in layer.params.items():
        layer.params[key] = rng.uniform(0.5, 1.5, value.shape)
    return spec, layer


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
@pytest.mark.parametrize("filters, strides, c", [(3, 1, 3), (4, 2, 3)],
                         ids=["identity skip", "projection skip"])
@pytest.mark.parametrize("training", [False, True])
def test_residual_block_passes_central_differences_and_twins_keras(filters, strides, c,
                                                                   training, fast):
    spec, layer = residual_layer(filters, strides, c)
    layer.fast = fast
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 6, 6, c))
    params = {key: value.copy() for key, value in layer.params.items()}

    def forward(x, **trainable):
        return (F if fast else R).residual_forward(x, {**params, **trainable}, strides, training)

    trainable = {key: value for key, value in params.items() if "moving" not in key}
    if not training:
        # In training, two batch statistics lie between x and the loss: central differences
        # measured 2e-7 on x there (the entries that cancel to near 0), above GRAD_TOLERANCE;
        # those gradients are held to Keras's at TWIN_TOLERANCE below.
        errors = central_difference_errors(forward, R.residual_backward, {"x": x, **trainable})
        assert max(errors.values()) <= GRAD_TOLERANCE, errors
    out, cache = forward(x)
    twin = keras_twin_errors(spec, x, params, out, R.residual_backward, cache, training)
    assert max(twin.values()) <= TWIN_TOLERANCE, twin
    assert ("shortcut_conv/kernel" in params) == (strides != 1 or c != filters)


def test_residual_block_fast_equals_readable_and_moves_its_moving_statistics():
    _, layer = residual_layer(4, 2, 3)
    x = np.random.default_rng(15).standard_normal((4, 6, 6, 3))
    before = layer.params["bn_a/moving_mean"].copy()
    fast_out = layer.forward(x, training=True)
    assert not np.array_equal(layer.params["bn_a/moving_mean"], before)
    layer_readable = residual_layer(4, 2, 3)[1]
    layer_readable.fast = False
    readable_out = layer_readable.forward(x, training=True)
    dout = np.random.default_rng(16).standard_normal(fast_out.shape)
    assert normwise(fast_out, readable_out) <= FAST_TOLERANCE
    assert normwise(layer.backward(dout), layer_readable.backward(dout)) <= FAST_TOLERANCE
    for key, grad in layer.grads.items():
        assert normwise(grad, layer_readable.grads[key]) <= FAST_TOLERANCE, key
    assert isinstance(layer, ResidualBlock) and set(layer.grads) == {
        key for key in layer.params if key not in layer.non_trainable}


def test_residual_skip_gradient_is_the_upstream_gradient_where_the_relu_passes():
    """With an identity skip, dx = d_sum + (the main path's share): zeroing the main path's
    kernels leaves exactly the skip's share, dout where the output is positive."""
    _, layer = residual_layer(3, 1, 3)
    layer.params["conv_b/kernel"][...] = 0  # main = bn_b's beta, a constant
    x = np.random.default_rng(17).standard_normal((2, 6, 6, 3))
    out = layer.forward(x)
    dout = np.random.default_rng(18).standard_normal(out.shape)
    assert np.allclose(layer.backward(dout), dout * (out > 0), rtol=0, atol=1e-15)


# --- grading: central differences through the residual block in training -----------------


def test_residual_central_differences_in_training_check_entries():
    """The block in training is curved (its BatchNorms) between its ReLU kinks: the
    graders' central differences (Richardson, fourth-difference kink rule) must check most
    entries and pass, not leave every step out as crossing a kink. Then every other
    layer check of the residual block (its network check is left out: see
    tests/test_exercises.py)."""
    from comparison.grading import exercise
    from comparison.grading.checks import layer_checks

    rows = [row for row in layer_checks("residual", exercise.reference_functions("residual"),
                                        network=False)
            if "central diff." in row.check and "training" in row.check]
    # identity skip: x, conv_a, bn_a's gamma and beta, conv_b, bn_b's; projection: + 3
    assert len(rows) == 7 + 10
    assert all(row.passed for row in rows), [row for row in rows if not row.passed]
    for row in rows:  # "k of n entries at a kink, left out": k at most a quarter of n
        left_out, total = (map(int, row.detail.split(" entries")[0].split(" of "))
                           if row.detail else (0, 1))
        assert left_out <= total / 4, row
    rows = layer_checks("residual", exercise.reference_functions("residual"), network=False)
    assert all(row.passed for row in rows), [row for row in rows if not row.passed]
