"""scratch.layers (the readable pairs), scratch.layer_classes and scratch.losses: analytic
gradients against central differences, the definitions as naive loops, and TensorFlow's
conventions. (scratch.fast_layers against these: tests/test_fast_layers.py.)

Gradient checks run in float64 with h = 1e-5 and require the largest elementwise
relative error |a - b| / max(|a|, |b|, 1e-12) to be below GRAD_TOLERANCE = 1e-7.
Each layer is checked through the scalar sum(out * R) for a fixed random R, which
is linear in every single input entry away from kinks (ReLU inputs are kept away
from 0 and pooling inputs have no ties), so central differences are exact up to
round-off there.
"""
import numpy as np
import pytest

from scratch import fast_layers
from scratch import layers as L
from scratch import windows as W
from scratch.gradcheck import grad_rel_error, numeric_gradient
from scratch.layer_classes import (BatchNorm, Conv2D, Dense, Dropout, MaxPool2D, PairLayer,
                                   ReLU)
from scratch.losses import l2_penalty, softmax_cross_entropy

GRAD_TOLERANCE = 1e-7


def check_layer(forward, backward, inputs: dict, seed=0):
    """forward(**inputs) -> (out, cache); backward(dout, cache) -> grads keyed like inputs.

    Every array in `inputs` is differentiated numerically through sum(out * R).
    Returns {name: relative error}.
    """
    out, cache = forward(**inputs)
    weights = np.random.default_rng(seed).standard_normal(out.shape)
    grads = backward(weights, cache)

    def objective():
        return float(np.sum(forward(**inputs)[0] * weights))

    return {name: grad_rel_error(grads[name], numeric_gradient(objective, array))
            for name, array in inputs.items()}


def rand(rng, *shape):
    return rng.standard_normal(shape)


def distinct(rng, *shape):
    """Values 0.01 apart in random order: no ties, and +-1e-5 never reorders them."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01


def assert_small(errors):
    assert max(errors.values()) < GRAD_TOLERANCE, errors


# --- the definitions, one output value at a time (independent of scratch.layers) -----


def conv2d_naive(x, kernel, bias, padding="valid"):
    """out[n, i, j, f] = bias[f] + sum_{a, b, c} xp[n, i+a, j+b, c] * kernel[a, b, c, f]."""
    kh, kw, _, f = kernel.shape
    if padding == "same":
        x = np.pad(x, ((0, 0), W.same_padding(kh), W.same_padding(kw), (0, 0)))
    n, h, w, _ = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, f), dtype=x.dtype)
    for s, i, j, k in np.ndindex(out.shape):
        out[s, i, j, k] = np.sum(x[s, i:i + kh, j:j + kw, :] * kernel[:, :, :, k]) + bias[k]
    return out


def maxpool2d_backward_naive(dout, x, p):
    """dx: each window's gradient to its first maximum, found by scanning the window."""
    dx = np.zeros_like(x)
    for s, i, j, c in np.ndindex(dout.shape):
        window = x[s, i * p:(i + 1) * p, j * p:(j + 1) * p, c]
        best = (0, 0)
        for a, b in np.ndindex(p, p):  # row-major; a later tie never wins
            if window[a, b] > window[best]:
                best = (a, b)
        dx[s, i * p + best[0], j * p + best[1], c] += dout[s, i, j, c]
    return dx


def batchnorm_naive(x, gamma, beta, epsilon=1e-3):
    """Training mode one channel at a time, Ioffe & Szegedy's Algorithm 1."""
    out = np.empty_like(x)
    for c in range(x.shape[-1]):
        values = x[..., c]
        mean = values.sum() / values.size
        var = ((values - mean) ** 2).sum() / values.size
        out[..., c] = gamma[c] * (values - mean) / np.sqrt(var + epsilon) + beta[c]
    return out


def batchnorm_backward_naive(dout, x, gamma, epsilon=1e-3):
    """(dx, dgamma, dbeta) of batchnorm_naive, backpropagated one node of the computational
    graph at a time (mean -> centred -> variance -> std -> xhat -> out)."""
    dx = np.empty_like(x)
    dgamma, dbeta = np.empty(x.shape[-1]), np.empty(x.shape[-1])
    for c in range(x.shape[-1]):
        values, grad = x[..., c], dout[..., c]
        m = values.size
        mean = values.sum() / m
        centred = values - mean
        var = (centred ** 2).sum() / m
        std = np.sqrt(var + epsilon)
        xhat = centred / std
        dbeta[c] = grad.sum()
        dgamma[c] = (grad * xhat).sum()
        dxhat = grad * gamma[c]
        dcentred = dxhat / std  # xhat = centred / std, through the numerator
        dstd = -(dxhat * centred).sum() / std ** 2  # ... and through the denominator
        dvar = dstd / (2 * std)  # std = sqrt(var + epsilon)
        dcentred += dvar * 2 * centred / m  # var = sum(centred**2) / m
        dmean = -dcentred.sum()  # centred = values - mean
        dx[..., c] = dcentred + dmean / m  # mean = sum(values) / m
    return dx, dgamma, dbeta


# --- gradients vs central differences ----------------------------------------------


def test_dense_gradients():
    rng = np.random.default_rng(1)
    params = {"kernel": rand(rng, 6, 4), "bias": rand(rng, 4)}
    x = rand(rng, 3, 6)
    errors = check_layer(
        lambda x, kernel, bias: L.dense_forward(x, {"kernel": kernel, "bias": bias}),
        L.dense_backward, {"x": x, **params})
    assert set(errors) == {"x", "kernel", "bias"}
    assert_small(errors)


def test_relu_gradient_away_from_zero():
    rng = np.random.default_rng(2)
    x = rng.choice([-1, 1], (4, 5, 3)) * (0.1 + rng.random((4, 5, 3)))
    assert_small(check_layer(L.relu_forward, L.relu_backward, {"x": x}))


def test_relu_gradient_is_zero_at_zero_like_tensorflow():
    x = np.array([-1.0, 0.0, 2.0])
    out, cache = L.relu_forward(x)
    assert out.tolist() == [0.0, 0.0, 2.0] and x.tolist() == [-1.0, 0.0, 2.0]  # x untouched
    assert np.array_equal(L.relu_backward(np.ones(3), cache)["x"], [0.0, 0.0, 1.0])


def test_flatten_gradient_and_order():
    rng = np.random.default_rng(3)
    x = rand(rng, 2, 3, 4, 5)
    out, _ = L.flatten_forward(x)
    assert np.array_equal(out[1], x[1].reshape(-1))  # C order over (H, W, C), as Keras
    assert_small(check_layer(L.flatten_forward, L.flatten_backward, {"x": x}))


def test_dropout_gradient_with_a_fixed_mask():
    rng = np.random.default_rng(4)
    x = rand(rng, 6, 7)
    errors = check_layer(
        lambda x: L.dropout_forward(x, 0.4, True, np.random.default_rng(9)),  # same mask each call
        L.dropout_backward, {"x": x})
    assert_small(errors)


def test_dropout_is_inverted_and_off_at_inference():
    x = np.ones((200, 500))
    out, mask = L.dropout_forward(x, 0.25, True, np.random.default_rng(0))
    assert set(np.unique(out)) == {0.0, 1 / 0.75}
    assert abs((out == 0).mean() - 0.25) < 0.01
    assert abs(out.mean() - 1) < 0.01  # expectation preserved
    same, cache = L.dropout_forward(x, 0.25, False, np.random.default_rng(0))
    assert same is x and cache is None


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_gradients(kernel_size, padding):
    rng = np.random.default_rng(kernel_size)
    x = rand(rng, 2, 5, 6, 3)
    inputs = {"x": x, "kernel": rand(rng, kernel_size, kernel_size, 3, 4), "bias": rand(rng, 4)}
    errors = check_layer(
        lambda x, kernel, bias: L.conv2d_forward(x, {"kernel": kernel, "bias": bias}, padding),
        L.conv2d_backward, inputs)
    assert set(errors) == {"x", "kernel", "bias"}
    assert_small(errors)


POOL_CASES = [(2, (2, 4, 6, 3)), (2, (2, 5, 7, 2)), (3, (1, 7, 6, 2)), (1, (1, 3, 3, 2))]


@pytest.mark.parametrize("pool_size, shape", POOL_CASES)
def test_maxpool2d_gradients_without_ties(pool_size, shape):
    rng = np.random.default_rng(pool_size)
    errors = check_layer(lambda x: L.maxpool2d_forward(x, pool_size), L.maxpool2d_backward,
                         {"x": distinct(rng, *shape)})
    assert_small(errors)


@pytest.mark.parametrize("pool_size, shape", POOL_CASES)
def test_avgpool2d_gradients(pool_size, shape):
    rng = np.random.default_rng(pool_size)
    errors = check_layer(lambda x: L.avgpool2d_forward(x, pool_size), L.avgpool2d_backward,
                         {"x": rand(rng, *shape)})
    assert_small(errors)


def test_avgpool2d_is_the_window_mean_and_drops_leftovers():
    x = np.arange(1.0, 26.0).reshape(1, 5, 5, 1)
    out, cache = L.avgpool2d_forward(x, 2)
    assert out.reshape(2, 2).tolist() == [[4.0, 6.0], [14.0, 16.0]]  # (1+2+6+7)/4, ...
    dx = L.avgpool2d_backward(np.array([4.0, 8.0, 12.0, 16.0]).reshape(1, 2, 2, 1), cache)["x"]
    assert dx.reshape(5, 5).tolist() == [[1, 1, 2, 2, 0], [1, 1, 2, 2, 0], [3, 3, 4, 4, 0],
                                         [3, 3, 4, 4, 0], [0, 0, 0, 0, 0]]


def batchnorm_inputs(rng, shape):
    """x, gamma and beta for a batchnorm check, with moving statistics. gamma keeps away
    from 0: dx is proportional to it, and an entry of 1e-4 would drown in the
    objective's round-off (see test_softmax_cross_entropy_gradient)."""
    c = shape[-1]
    moving = {"moving_mean": rand(rng, c), "moving_variance": 0.5 + rng.random(c)}
    inputs = {"x": rand(rng, *shape), "gamma": rng.choice([-1, 1], c) * (0.5 + rng.random(c)),
              "beta": rand(rng, c)}
    return inputs, moving


@pytest.mark.parametrize("shape", [(6, 5), (4, 3), (2, 2, 3, 3)])  # (N, C) and (N, H, W, C)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_batchnorm_gradients(shape, training, seed):
    """Training mode: the batch statistics depend on x, and dx has to carry that."""
    inputs, moving = batchnorm_inputs(np.random.default_rng(seed), shape)
    errors = check_layer(
        lambda x, gamma, beta: L.batchnorm_forward(x, {"gamma": gamma, "beta": beta, **moving},
                                                   training),
        L.batchnorm_backward, inputs, seed)
    assert set(errors) == {"x", "gamma", "beta"}
    assert_small(errors)


def test_batchnorm_check_catches_a_backward_that_ignores_the_batch_statistics():
    inputs, moving = batchnorm_inputs(np.random.default_rng(0), (6, 5))

    def forward(x, gamma, beta):
        return L.batchnorm_forward(x, {"gamma": gamma, "beta": beta, **moving}, True)

    def backward_as_if_constant(dout, cache):  # the classic mistake: inference's formula
        xhat, gamma, std, _ = cache
        return L.batchnorm_backward(dout, (xhat, gamma, std, None))

    assert check_layer(forward, backward_as_if_constant, inputs)["x"] > 1e-2


@pytest.mark.parametrize("shape", [(7, 4), (3, 4, 5, 2)])
def test_batchnorm_matches_the_textbook_steps(shape):
    """The closed-form backward against node-by-node backpropagation."""
    rng = np.random.default_rng(20)
    inputs, moving = batchnorm_inputs(rng, shape)
    x, gamma, beta = inputs["x"], inputs["gamma"], inputs["beta"]
    out, cache = L.batchnorm_forward(x, {"gamma": gamma, "beta": beta, **moving}, True)
    np.testing.assert_allclose(out, batchnorm_naive(x, gamma, beta), rtol=1e-12, atol=1e-12)
    dout = rand(rng, *shape)
    grads = L.batchnorm_backward(dout, cache)
    dx, dgamma, dbeta = batchnorm_backward_naive(dout, x, gamma)
    for ours, steps in ((grads["x"], dx), (grads["gamma"], dgamma), (grads["beta"], dbeta)):
        np.testing.assert_allclose(ours, steps, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fast", [True, False])
def test_batchnorm_statistics_and_moving_average_like_keras(fast):
    # One channel of 0, 1, 2, 3: mean 1.5, biased variance 1.25 (unbiased would be 5/3).
    x = np.array([0.0, 1.0, 2.0, 3.0]).reshape(4, 1)
    layer = BatchNorm(1, np.float64)
    layer.fast = fast
    out = layer.forward(x, training=True)
    np.testing.assert_allclose(out.ravel(), (x.ravel() - 1.5) / np.sqrt(1.25 + 1e-3), rtol=1e-14)
    # moving = moving * 0.99 + batch * 0.01, from the initial mean 0 and variance 1
    np.testing.assert_allclose(layer.params["moving_mean"], [0.01 * 1.5], rtol=1e-14)
    np.testing.assert_allclose(layer.params["moving_variance"], [0.99 + 0.01 * 1.25], rtol=1e-14)
    moved = {key: value.copy() for key, value in layer.params.items()}
    inference = layer.forward(x, training=False)  # the moving statistics, and no update
    np.testing.assert_allclose(inference.ravel(), (x.ravel() - 0.015) / np.sqrt(1.0025 + 1e-3),
                               rtol=1e-14)
    layer.backward(np.ones_like(x))
    for key, value in layer.params.items():
        assert np.array_equal(value, moved[key]), key


@pytest.mark.parametrize("fast", [True, False])
def test_batchnorm_layer_grads_are_for_gamma_and_beta_only(fast):
    rng = np.random.default_rng(21)
    layer = BatchNorm(3, np.float32)
    layer.fast = fast
    assert {k: (v.dtype, v.tolist()) for k, v in layer.params.items()} == {
        "gamma": (np.float32, [1, 1, 1]), "beta": (np.float32, [0, 0, 0]),
        "moving_mean": (np.float32, [0, 0, 0]), "moving_variance": (np.float32, [1, 1, 1])}
    assert layer.non_trainable == ("moving_mean", "moving_variance")
    x = rng.standard_normal((4, 5, 5, 3)).astype(np.float32)
    out = layer.forward(x, training=True)
    assert out.dtype == np.float32 and out.shape == x.shape
    dx = layer.backward(rng.standard_normal(x.shape).astype(np.float32))
    assert dx.dtype == np.float32 and dx.shape == x.shape
    assert set(layer.grads) == {"gamma", "beta"}
    assert all(g.dtype == np.float32 and g.shape == (3,) for g in layer.grads.values())


def test_softmax_cross_entropy_gradient():
    # Logits of scale 1 keep every probability above ~1e-3: an entry of 1e-6 would
    # drown in the loss's round-off (1e-16 * |loss| / h), whatever the backward pass.
    rng = np.random.default_rng(5)
    logits = rand(rng, 4, 10)
    labels = rng.integers(0, 10, 4)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    numeric = numeric_gradient(lambda: softmax_cross_entropy(logits, labels)[0], logits)
    assert grad_rel_error(dlogits, numeric) < GRAD_TOLERANCE
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(4), labels])), rel=1e-12)
    onehot = np.eye(10)[labels]
    np.testing.assert_allclose(dlogits, (probs - onehot) / 4, rtol=1e-12, atol=1e-15)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [5e3, 5e3, 0.0]])
    loss, dlogits = softmax_cross_entropy(logits, np.array([1, 0]))
    # Row 0: the right class is 1e4 below the top: loss 1e4. Row 1: a tie, loss log 2.
    assert loss == pytest.approx((1e4 + np.log(2)) / 2)
    assert np.all(np.isfinite(dlogits))
    np.testing.assert_allclose(dlogits, [[0.5, -0.5, 0.0], [-0.25, 0.25, 0.0]],
                               atol=1e-12)


@pytest.mark.parametrize("labels", [np.array([0, 10]), np.array([0.0, 1.0]), np.array([1])])
def test_softmax_cross_entropy_rejects_bad_labels(labels):
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(np.zeros((2, 10)), labels)


def test_l2_penalty_matches_keras_definition_and_gradient():
    rng = np.random.default_rng(6)
    kernel = rand(rng, 4, 3)
    loss, grad = l2_penalty(kernel, 0.01)
    assert loss == pytest.approx(0.01 * np.sum(kernel ** 2), rel=1e-14)  # no factor 1/2
    numeric = numeric_gradient(lambda: l2_penalty(kernel, 0.01)[0], kernel)
    assert grad_rel_error(grad, numeric) < GRAD_TOLERANCE


# --- the readable layers against their definitions -----------------------------------


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 5])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_matches_the_definition(kernel_size, padding):
    rng = np.random.default_rng(10 + kernel_size)
    x = rand(rng, 2, 7, 6, 3)
    kernel, bias = rand(rng, kernel_size, kernel_size, 3, 4), rand(rng, 4)
    out, _ = L.conv2d_forward(x, {"kernel": kernel, "bias": bias}, padding)
    np.testing.assert_allclose(out, conv2d_naive(x, kernel, bias, padding),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pool_size, shape", [(2, (3, 6, 8, 4)), (2, (2, 7, 5, 3)),
                                              (3, (2, 8, 7, 2)), (4, (1, 9, 9, 1))])
def test_maxpool2d_with_ties_gives_the_first_maximum_the_gradient(pool_size, shape):
    rng = np.random.default_rng(pool_size)
    x = rng.integers(0, 3, shape).astype(np.float64)  # many ties, as after a ReLU
    out, cache = L.maxpool2d_forward(x, pool_size)
    ho, wo = shape[1] // pool_size, shape[2] // pool_size
    windows = x[:, :ho * pool_size, :wo * pool_size].reshape(
        shape[0], ho, pool_size, wo, pool_size, shape[3])
    assert np.array_equal(out, windows.max(axis=(2, 4)))
    dout = rand(rng, *out.shape)
    dx = L.maxpool2d_backward(dout, cache)["x"]
    assert np.array_equal(dx, maxpool2d_backward_naive(dout, x, pool_size))


def test_maxpool2d_gradient_goes_to_the_first_maximum_only():
    x = np.array([[1.0, 3.0, 0.0, 0.0],
                  [3.0, 2.0, 0.0, 0.0]]).reshape(1, 2, 4, 1)
    out, cache = L.maxpool2d_forward(x, 2)
    assert out.ravel().tolist() == [3.0, 0.0]
    dx = L.maxpool2d_backward(np.array([5.0, 7.0]).reshape(1, 1, 2, 1), cache)["x"]
    assert dx.reshape(2, 4).tolist() == [[0.0, 5.0, 7.0, 0.0],
                                         [0.0, 0.0, 0.0, 0.0]]


def test_maxpool2d_drops_leftover_rows_and_columns():
    x = np.arange(1.0, 26.0).reshape(1, 5, 5, 1)
    out, cache = L.maxpool2d_forward(x, 2)
    assert out.reshape(2, 2).tolist() == [[7.0, 9.0], [17.0, 19.0]]
    dx = L.maxpool2d_backward(np.ones((1, 2, 2, 1)), cache)["x"].reshape(5, 5)
    assert dx[4].sum() == 0 and dx[:, 4].sum() == 0 and dx.sum() == 4


# --- TensorFlow's conventions -----------------------------------------------------


def test_same_padding_puts_the_extra_row_at_the_end_like_tensorflow():
    assert [W.same_padding(k) for k in (1, 2, 3, 4, 5)] == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2)]
    x = np.ones((1, 5, 5, 1))
    out, _ = L.conv2d_forward(x, {"kernel": np.ones((4, 4, 1, 1)), "bias": np.zeros(1)}, "same")
    # top-left output sees rows/cols -1..2 (1 padded), bottom-right rows/cols 3..6 (2 padded)
    assert out.shape == (1, 5, 5, 1)
    assert out[0, 0, 0, 0] == 9 and out[0, 4, 4, 0] == 4


def test_conv2d_is_cross_correlation_without_kernel_flip():
    x = np.arange(9.0).reshape(1, 3, 3, 1)
    kernel = np.zeros((2, 2, 1, 1))
    kernel[0, 0] = 1.0  # picks the top-left pixel of every patch
    out, _ = L.conv2d_forward(x, {"kernel": kernel, "bias": np.zeros(1)})
    assert out.reshape(2, 2).tolist() == [[0.0, 1.0], [3.0, 4.0]]


def test_conv2d_rejects_wrong_channel_count_and_padding():
    with pytest.raises(ValueError, match="channels"):
        L.conv2d_forward(np.zeros((1, 5, 5, 2)), {"kernel": np.zeros((3, 3, 1, 4)),
                                                  "bias": np.zeros(4)})
    with pytest.raises(ValueError, match="padding"):
        L.conv2d_forward(np.zeros((1, 5, 5, 1)), {"kernel": np.zeros((3, 3, 1, 4)),
                                                  "bias": np.zeros(4)}, "full")


# --- layer classes ----------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_layer_classes_fill_grads_and_never_touch_params(fast):
    rng = np.random.default_rng(7)
    conv = Conv2D(rand(rng, 3, 3, 2, 4), rand(rng, 4), "same", "relu", name="conv2d_0")
    dense = Dense(rand(rng, 9, 5), rand(rng, 5), None, name="dense_4")
    stack = [conv, MaxPool2D(2), PairLayer("avgpool2d", pool_size=1), PairLayer("flatten"),
             Dropout(0.5, np.random.default_rng(0)),
             Dense(rand(rng, 36, 9), rand(rng, 9), "relu"), dense, ReLU()]
    for layer in stack:
        layer.fast = fast
    before = [{k: v.copy() for k, v in layer.params.items()} for layer in stack]
    x = rand(rng, 2, 6, 6, 2)
    out = x
    for layer in stack:
        out = layer.forward(out, training=True)
    assert out.shape == (2, 5) and out.min() >= 0
    grad = rand(rng, *out.shape)
    for layer in reversed(stack):
        grad = layer.backward(grad)
    assert grad.shape == x.shape
    for layer, saved in zip(stack, before):
        assert layer.params.keys() == saved.keys() == layer.grads.keys()
        for key in saved:
            assert np.array_equal(layer.params[key], saved[key])
            assert layer.grads[key].shape == saved[key].shape
    # the class's ReLU matches the functional pieces
    pre, _ = L.conv2d_forward(x, conv.params, "same")
    np.testing.assert_allclose(conv.forward(x), np.maximum(pre, 0), rtol=1e-12, atol=1e-12)


def test_pair_layer_takes_each_fast_twin_only_when_fast_and_one_exists():
    rng = np.random.default_rng(8)
    dense = PairLayer("dense", {"kernel": rand(rng, 4, 3), "bias": rand(rng, 3)})
    # scratch.fast_layers has dense_backward but no dense_forward
    assert dense.function("forward") is L.dense_forward
    assert dense.function("backward") is fast_layers.dense_backward
    dense.fast = False
    assert dense.function("backward") is L.dense_backward


@pytest.mark.parametrize("fast", [True, False])
def test_pair_layer_passes_params_second_and_fills_their_grads(fast):
    rng = np.random.default_rng(9)
    params = {"kernel": rand(rng, 4, 3), "bias": rand(rng, 3)}
    saved = {key: value.copy() for key, value in params.items()}
    layer = PairLayer("dense", params, name="dense_0")
    layer.fast = fast
    x, dout = rand(rng, 5, 4), rand(rng, 5, 3)

    def loss():
        return float(np.sum(layer.forward(x) * dout))

    loss()
    dx = layer.backward(dout)
    assert layer.grads.keys() == params.keys()
    assert grad_rel_error(dx, numeric_gradient(loss, x)) < GRAD_TOLERANCE
    for key in params:
        assert grad_rel_error(layer.grads[key],
                              numeric_gradient(loss, layer.params[key])) < GRAD_TOLERANCE
        assert np.array_equal(layer.params[key], saved[key])


def test_pair_layer_passes_its_options_and_refuses_a_kind_without_a_pair():
    pool = PairLayer("avgpool2d", pool_size=3)
    out = pool.forward(np.ones((2, 7, 6, 4)))
    assert out.shape == (2, 2, 2, 4)
    assert pool.backward(np.ones_like(out)).sum() == pytest.approx(2 * 2 * 2 * 4)
    with pytest.raises(ValueError, match="layer kind 'conv3d': scratch.layers has no "
                                         "conv3d_forward"):
        PairLayer("conv3d")


def test_standalone_relu_leaves_its_work_to_the_next_pooling_layer_only_when_fast():
    x = np.array([[-1.0, 2.0]])
    relu = ReLU()
    assert relu.forward(x).tolist() == [[0.0, 2.0]]
    assert relu.backward(np.ones((1, 2))).tolist() == [[0.0, 1.0]]
    assert x.tolist() == [[-1.0, 2.0]]  # never in place: x may be another layer's cache
    relu.relu_in_next_layer = True
    assert relu.forward(x) is x and relu.backward(x) is x
    relu.fast = False
    assert relu.forward(x).tolist() == [[0.0, 2.0]]


def test_grad_rel_error_definition():
    assert grad_rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert grad_rel_error([1.0, 100.0], [1.1, 100.0]) == pytest.approx(0.1 / 1.1)
    assert grad_rel_error([0.0], [1e-13]) == pytest.approx(0.1)  # below TINY: absolute / TINY
    with pytest.raises(ValueError):
        grad_rel_error(np.zeros(2), np.zeros(3))
