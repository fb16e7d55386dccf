"""scratch.layers and scratch.losses: analytic gradients against central differences,
the vectorised conv/pool against the naive loops, and TensorFlow's conventions.

Gradient checks run in float64 with h = 1e-5 and require the largest elementwise
relative error |a - b| / max(|a|, |b|, 1e-12) to be below GRAD_TOLERANCE = 1e-7.
Each layer is checked through the scalar sum(out * R) for a fixed random R, which
is linear in every single input entry away from kinks (ReLU inputs are kept away
from 0 and pooling inputs have no ties), so central differences are exact up to
round-off there.
"""
import numpy as np
import pytest

from scratch import layers as L
from scratch import reference
from scratch.gradcheck import grad_rel_error, numeric_gradient
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
    assert_small(errors)


@pytest.mark.parametrize("pool_size, shape", [(2, (2, 4, 6, 3)), (2, (2, 5, 7, 2)),
                                              (3, (1, 7, 6, 2)), (1, (1, 3, 3, 2))])
def test_maxpool2d_gradients_without_ties(pool_size, shape):
    rng = np.random.default_rng(pool_size)
    errors = check_layer(lambda x: L.maxpool2d_forward(x, pool_size), L.maxpool2d_backward,
                         {"x": distinct(rng, *shape)})
    assert_small(errors)


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
        xhat, gamma, rstd, _ = cache
        return L.batchnorm_backward(dout, (xhat, gamma, rstd, None))

    assert check_layer(forward, backward_as_if_constant, inputs)["x"] > 1e-2


@pytest.mark.parametrize("shape", [(7, 4), (3, 4, 5, 2)])
def test_batchnorm_matches_the_textbook_steps(shape):
    """The closed-form backward against node-by-node backpropagation (scratch.reference)."""
    rng = np.random.default_rng(20)
    inputs, moving = batchnorm_inputs(rng, shape)
    x, gamma, beta = inputs["x"], inputs["gamma"], inputs["beta"]
    out, cache = L.batchnorm_forward(x, {"gamma": gamma, "beta": beta, **moving}, True)
    np.testing.assert_allclose(out, reference.batchnorm_naive(x, gamma, beta),
                               rtol=1e-12, atol=1e-12)
    dout = rand(rng, *shape)
    grads = L.batchnorm_backward(dout, cache)
    dx, dgamma, dbeta = reference.batchnorm_backward_naive(dout, x, gamma)
    for ours, steps in ((grads["x"], dx), (grads["gamma"], dgamma), (grads["beta"], dbeta)):
        np.testing.assert_allclose(ours, steps, rtol=1e-10, atol=1e-12)


def test_batchnorm_statistics_and_moving_average_like_keras():
    # One channel of 0, 1, 2, 3: mean 1.5, biased variance 1.25 (unbiased would be 5/3).
    x = np.array([0.0, 1.0, 2.0, 3.0]).reshape(4, 1)
    layer = L.BatchNorm(1, np.float64)
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


def test_batchnorm_layer_grads_are_for_gamma_and_beta_only():
    rng = np.random.default_rng(21)
    layer = L.BatchNorm(3, np.float32)
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


def test_standalone_relu_can_leave_its_work_to_the_next_pooling_layer():
    x = np.array([[-1.0, 2.0]])
    relu = L.ReLU()
    assert relu.forward(x).tolist() == [[0.0, 2.0]]
    assert relu.backward(np.ones((1, 2))).tolist() == [[0.0, 1.0]]
    relu.relu_in_next_layer = True
    assert relu.forward(x) is x and relu.backward(x) is x


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


# --- vectorised == naive loops --------------------------------------------------------


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 5])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("channels", [1, 3])  # im2col copies a single channel differently
def test_conv2d_matches_naive_loops(kernel_size, padding, channels):
    rng = np.random.default_rng(10 + kernel_size)
    x = rand(rng, 2, 7, 6, channels)
    kernel, bias = rand(rng, kernel_size, kernel_size, channels, 4), rand(rng, 4)
    out, cache = L.conv2d_forward(x, {"kernel": kernel, "bias": bias}, padding)
    np.testing.assert_allclose(out, reference.conv2d_naive(x, kernel, bias, padding),
                               rtol=1e-12, atol=1e-12)
    dout = rand(rng, *out.shape)
    grads = L.conv2d_backward(dout, cache)
    dx, dkernel, dbias = reference.conv2d_backward_naive(dout, x, kernel, padding)
    for ours, loops in ((grads["x"], dx), (grads["kernel"], dkernel), (grads["bias"], dbias)):
        np.testing.assert_allclose(ours, loops, rtol=1e-12, atol=1e-12)


def test_col2im_is_the_adjoint_of_im2col():
    """<im2col(x), G> == <x, col2im(G)> for every x and G: col2im is im2col transposed."""
    rng = np.random.default_rng(12)
    x = rand(rng, 2, 6, 7, 3)
    cols = L.im2col(x, 3, 2)
    assert cols.shape == (2 * 4 * 6, 3 * 2 * 3)
    assert np.array_equal(cols[7], x[0, 1:4, 1:3, :].reshape(-1))  # row 7: patch at (1, 1)
    g = rand(rng, *cols.shape)
    assert np.sum(cols * g) == pytest.approx(np.sum(x * L.col2im(g, x.shape, 3, 2)), rel=1e-12)


@pytest.mark.parametrize("pool_size, shape", [(2, (3, 6, 8, 4)), (2, (2, 7, 5, 3)),
                                              (3, (2, 8, 7, 2)), (4, (1, 9, 9, 1))])
def test_maxpool2d_matches_naive_loops_with_ties(pool_size, shape):
    rng = np.random.default_rng(pool_size)
    x = rng.integers(0, 3, shape).astype(np.float64)  # many ties, as after a ReLU
    out, cache = L.maxpool2d_forward(x, pool_size)
    assert np.array_equal(out, reference.maxpool2d_naive(x, pool_size))
    dout = rand(rng, *out.shape)
    dx = L.maxpool2d_backward(dout, cache)["x"]
    assert np.array_equal(dx, reference.maxpool2d_backward_naive(dout, x, pool_size))


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (2, 7, 5, 2)])
def test_maxpool2d_with_fused_relu_equals_relu_then_pool_exactly(shape):
    rng = np.random.default_rng(13)
    x = rng.integers(-2, 3, shape).astype(np.float64)  # negatives, zeros and ties
    relu_out, relu_cache = L.relu_forward(x)
    pooled, pool_cache = L.maxpool2d_forward(relu_out, 2)
    fused, fused_cache = L.maxpool2d_forward(x, 2, relu=True)
    assert np.array_equal(fused, pooled)
    dout = rand(rng, *pooled.shape)
    two_steps = L.relu_backward(L.maxpool2d_backward(dout, pool_cache)["x"], relu_cache)["x"]
    assert np.array_equal(L.maxpool2d_backward(dout, fused_cache)["x"], two_steps)


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
    assert [L.same_padding(k) for k in (1, 2, 3, 4, 5)] == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2)]
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


def test_layer_classes_fill_grads_and_never_touch_params():
    rng = np.random.default_rng(7)
    conv = L.Conv2D(rand(rng, 3, 3, 2, 4), rand(rng, 4), "same", "relu", name="conv2d_0")
    dense = L.Dense(rand(rng, 36, 5), rand(rng, 5), None, name="dense_3")
    stack = [conv, L.MaxPool2D(2), L.Flatten(), L.Dropout(0.5, np.random.default_rng(0)), dense,
             L.ReLU()]
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
    pre, cache = L.conv2d_forward(x, conv.params, "same")
    np.testing.assert_array_equal(conv.forward(x), np.maximum(pre, 0))


def test_dense_backward_can_skip_the_input_gradient():
    rng = np.random.default_rng(8)
    _, cache = L.dense_forward(rand(rng, 3, 4), {"kernel": rand(rng, 4, 2), "bias": rand(rng, 2)})
    assert set(L.dense_backward(rand(rng, 3, 2), cache, input_grad=False)) == {"kernel", "bias"}


def test_grad_rel_error_definition():
    assert grad_rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert grad_rel_error([1.0, 100.0], [1.1, 100.0]) == pytest.approx(0.1 / 1.1)
    assert grad_rel_error([0.0], [1e-13]) == pytest.approx(0.1)  # below TINY: absolute / TINY
    with pytest.raises(ValueError):
        grad_rel_error(np.zeros(2), np.zeros(3))
