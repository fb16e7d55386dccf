"""NumPy layers with hand-written backward passes and Keras's semantics.

Functional core, in the style of CS231n's layers.py:

    <layer>_forward(x, ...)  -> (out, cache)
    <layer>_backward(dout, cache) -> grads

`grads["x"]` is dL/dx and every other key is dL/d(parameter) under the Keras
variable name ("kernel", "bias", "gamma", "beta"). Layout as in Keras:
activations NHWC (N, H, W, C), convolution kernels HWIO (KH, KW, C_in, C_out),
dense kernels (D_in, D_out). Shapes in the docstrings use these letters.

The thin classes at the bottom (Dense, Conv2D, MaxPool2D, Flatten, ReLU,
BatchNorm, Dropout) keep `params` and `grads` dicts around the functional core.
Nothing here ever changes a trained weight: `backward` only fills `grads`, the
optimizer updates. (BatchNorm's moving statistics are not trained: its forward
pass in training mode updates them, as Keras's does.) The naive loop versions
that the tests compare against live in `scratch.reference`.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# --- dense ---------------------------------------------------------------


def dense_forward(x, params):
    """Affine map out = x @ kernel + bias.

    x: (N, D); params["kernel"]: (D, M), params["bias"]: (M,).
    Returns out (N, M) and cache (x, kernel).
    """
    out = x @ params["kernel"]
    out += params["bias"]
    return out, (x, params["kernel"])


def dense_backward(dout, cache, input_grad=True):
    """dout: (N, M). Returns {"x": (N, D), "kernel": (D, M), "bias": (M,)}.

    input_grad=False skips dL/dx (the first layer of a network needs none).
    """
    x, kernel = cache
    grads = {"kernel": x.T @ dout, "bias": dout.sum(axis=0)}
    if input_grad:
        grads["x"] = dout @ kernel.T
    return grads


# --- relu ----------------------------------------------------------------


def relu_forward(x, inplace=False):
    """out = max(x, 0) elementwise; x: any shape. Returns out (same shape) and cache out.

    inplace=True overwrites x (for a fresh pre-activation nobody else holds).
    """
    out = np.maximum(x, 0, out=x if inplace else None)
    return out, out


def relu_backward(dout, cache):
    """dout: same shape as the output. Returns {"x": dout * (out > 0)}.

    At exactly 0 the gradient is 0, as in TensorFlow's ReluGrad (which also
    multiplies by the mask; np.where would be several times slower).
    """
    return {"x": dout * (cache > 0)}


# --- flatten -------------------------------------------------------------


def flatten_forward(x):
    """x: (N, ...) -> out (N, prod(...)) in row-major (NHWC) order, like keras Flatten."""
    return x.reshape(len(x), -1), x.shape


def flatten_backward(dout, cache):
    """dout: (N, D). Returns {"x": dout reshaped to the input shape}."""
    return {"x": dout.reshape(cache)}


# --- dropout -------------------------------------------------------------


def dropout_forward(x, rate, training, rng):
    """Inverted dropout: in training, keep each value with probability 1 - rate
    and scale it by 1 / (1 - rate); at inference, the identity (like keras Dropout).

    x: any shape; rng: a numpy Generator. Returns out (same shape) and cache,
    the scaled mask (same shape, 0 or 1/(1-rate)) or None for the identity.
    """
    if not training or rate == 0:
        return x, None
    mask = rng.random(x.shape, dtype=x.dtype) >= rate
    scale = mask * x.dtype.type(1 / (1 - rate))
    return x * scale, scale


def dropout_backward(dout, cache):
    """dout: same shape as x. Returns {"x": dout * scaled mask}."""
    return {"x": dout if cache is None else dout * cache}


# --- conv2d --------------------------------------------------------------


def same_padding(kernel_size):
    """(before, after) zero padding of TensorFlow's 'same' at stride 1.

    TF pads kernel_size - 1 in total and puts the odd one at the end
    (bottom/right), so a 4x4 kernel gets 1 row above and 2 below.
    """
    total = kernel_size - 1
    return total // 2, total - total // 2


def pad_input(x, kh, kw, padding):
    """x (N, H, W, C) zero-padded for `padding` ("valid": unchanged; "same": TF's rule)."""
    if padding == "valid":
        return x
    if padding != "same":
        raise ValueError(f"padding {padding!r}: expected 'valid' or 'same'")
    return np.pad(x, ((0, 0), same_padding(kh), same_padding(kw), (0, 0)))


def im2col(xp, kh, kw, ones=False):
    """Every KH x KW patch of xp as one row.

    xp: (N, Hp, Wp, C). Returns cols (N*Ho*Wo, KH*KW*C), Ho = Hp-KH+1, Wo = Wp-KW+1,
    each row ordered (kh, kw, c) like a HWIO kernel reshaped to (KH*KW*C, C_out).
    ones=True appends a column of ones (N*Ho*Wo, KH*KW*C + 1): the "bias trick",
    [patch, 1] @ [kernel; bias] = patch @ kernel + bias in one matmul.
    The copies go one kernel row at a time (KW*C contiguous values per patch
    row) or, for a single channel, one kernel tap at a time (Wo contiguous
    values): long contiguous runs are what make NumPy copy fast.
    """
    n, hp, wp, c = xp.shape
    ho, wo = hp - kh + 1, wp - kw + 1
    k = kh * kw * c
    cols = np.empty((n * ho * wo, k + ones), dtype=xp.dtype)
    patches = cols[:, :k].reshape(n, ho, wo, kh, kw, c)  # a view: splitting axes never copies
    for i in range(kh):
        if c == 1:
            for j in range(kw):
                patches[:, :, :, i, j] = xp[:, i:i + ho, j:j + wo]
        else:  # (N, Ho, Wo, C, KW) window view -> (N, Ho, Wo, KW, C)
            window = sliding_window_view(xp[:, i:i + ho], kw, axis=2)
            patches[:, :, :, i] = window.transpose(0, 1, 2, 4, 3)
    if ones:
        cols[:, k] = 1
    return cols


def col2im(dcols, xp_shape, kh, kw):
    """The adjoint of im2col: add every row's patch back where it came from.

    dcols: (N*Ho*Wo, KH*KW*C). Returns dxp (N, Hp, Wp, C), Hp = Ho+KH-1, Wp = Wo+KW-1.
    The loop runs over the KH*KW kernel offsets, each adding one whole shifted
    (N, Ho, Wo, C) block.
    """
    n, hp, wp, c = xp_shape
    ho, wo = hp - kh + 1, wp - kw + 1
    patches = dcols.reshape(n, ho, wo, kh, kw, c)
    dxp = np.zeros(xp_shape, dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, i:i + ho, j:j + wo] += patches[:, :, :, i, j]
    return dxp


def conv2d_forward(x, params, padding="valid"):
    """2-d cross-correlation (no kernel flip, as in Keras), stride 1.

    x: (N, H, W, C); params["kernel"]: (KH, KW, C, F), params["bias"]: (F,).
    padding: "valid" (Ho = H-KH+1) or "same" (Ho = H, TensorFlow's padding rule).
    Returns out (N, Ho, Wo, F) = [cols, 1] @ [kernel; bias] and cache (cols with
    their ones column, padded input shape, kernel, padding).
    """
    kernel = params["kernel"]
    kh, kw, c, f = kernel.shape
    if x.shape[-1] != c:
        raise ValueError(f"conv2d input has {x.shape[-1]} channels, kernel expects {c}")
    xp = pad_input(x, kh, kw, padding)
    n, hp, wp, _ = xp.shape
    cols = im2col(xp, kh, kw, ones=True)
    out = cols @ np.vstack([kernel.reshape(kh * kw * c, f), params["bias"]])
    return out.reshape(n, hp - kh + 1, wp - kw + 1, f), (cols, xp.shape, kernel, padding)


def conv2d_backward(dout, cache, input_grad=True):
    """dout: (N, Ho, Wo, F). Returns {"x": (N, H, W, C), "kernel": (KH, KW, C, F), "bias": (F,)}.

    [dkernel; dbias] = [cols, 1]^T @ dout: the forward matmul, transposed (the
    ones column sums dout over all positions for the bias). For dx, kernel tap
    (i, j) read input pixel (h+i, w+j) for output (h, w), so it sends
    dout @ kernel[i, j]^T back there: one (N*Ho*Wo, F) @ (F, C) product and one
    shifted add per tap. (The same sum as col2im of dout @ kernel^T, but adding
    whole contiguous (Wo, C) rows is several times faster.) input_grad=False
    skips dL/dx.
    """
    cols, xp_shape, kernel, padding = cache
    kh, kw, c, f = kernel.shape
    n, ho, wo, _ = dout.shape
    dout2d = dout.reshape(-1, f)
    dparams = cols.T @ dout2d  # (KH*KW*C + 1, F)
    grads = {"kernel": dparams[:-1].reshape(kernel.shape), "bias": dparams[-1]}
    if input_grad:
        dxp = np.zeros(xp_shape, dtype=dout.dtype)
        for i in range(kh):
            for j in range(kw):
                dxp[:, i:i + ho, j:j + wo] += (dout2d @ kernel[i, j].T).reshape(n, ho, wo, c)
        if padding == "same":
            (top, _), (left, _) = same_padding(kh), same_padding(kw)
            dxp = dxp[:, top:top + ho, left:left + wo]
        grads["x"] = dxp
    return grads


# --- maxpool2d -----------------------------------------------------------


def pool_windows(x, pool_size):
    """x (N, H, W, C) as a view (N, Ho, p, Wo, p, C) of its pool windows:
    [n, i, a, j, b, c] = x[n, i*p + a, j*p + b, c]. Rows and columns that do not
    fill a window are left out (Keras's 'valid'); splitting axes needs no copy."""
    p = pool_size
    n, h, w, c = x.shape
    ho, wo = h // p, w // p
    return x[:, :ho * p, :wo * p].reshape(n, ho, p, wo, p, c)


def _max_of(arrays):
    """Elementwise maximum of same-shape arrays, as a new array."""
    result = np.maximum(arrays[0], arrays[1]) if len(arrays) > 1 else arrays[0].copy()
    for array in arrays[2:]:
        np.maximum(result, array, out=result)
    return result


def maxpool2d_forward(x, pool_size=2, relu=False):
    """Max over non-overlapping pool_size x pool_size windows (stride = pool_size).

    x: (N, H, W, C). Returns out (N, H//p, W//p, C) and cache (x, window maxima,
    pool_size, relu). Leftover rows and columns are dropped, like Keras's 'valid'.
    relu=True returns max(out, 0): the same numbers as pooling a ReLU's output
    (max and ReLU commute) for a quarter of the work. The maximum is taken over
    window rows, then window columns: elementwise passes, not a slow reduction
    over two non-adjacent axes.
    """
    windows = pool_windows(x, pool_size)
    rows_max = _max_of([windows[:, :, a] for a in range(pool_size)])  # (N, Ho, Wo, p, C)
    maxima = _max_of([rows_max[:, :, :, b] for b in range(pool_size)])  # (N, Ho, Wo, C)
    out = np.maximum(maxima, 0) if relu else maxima
    return out, (x, maxima, pool_size, relu)


def maxpool2d_backward(dout, cache):
    """dout: (N, Ho, Wo, C). Returns {"x": (N, H, W, C)}.

    Each window's gradient goes to its FIRST maximum in row-major order, as in
    TensorFlow's MaxPoolGrad, so ties (windows of equal values, e.g. blank
    image regions) never double it; dropped rows and columns get 0. With the
    fused ReLU, windows whose maximum is <= 0 pass no gradient (ReLU's backward).
    """
    x, maxima, p, relu = cache
    if relu:
        dout = dout * (maxima > 0)
    is_max = pool_windows(x, p) == maxima[:, :, None, :, None, :]  # (N, Ho, p, Wo, p, C)
    taken = is_max[:, :, 0, :, 0].copy()  # window's maximum already claimed
    for a in range(p):
        for b in range(p):
            if a or b:  # keep a maximum only if no earlier one in the window claimed it
                here = is_max[:, :, a, :, b]
                here &= ~taken
                taken |= here
    if x.shape[1] % p == 0 and x.shape[2] % p == 0:
        dx = np.multiply(is_max, dout[:, :, None, :, None, :], dtype=x.dtype)
        return {"x": dx.reshape(x.shape)}
    dx = np.zeros_like(x)
    np.multiply(is_max, dout[:, :, None, :, None, :], out=pool_windows(dx, p))
    return {"x": dx}


# --- batchnorm -----------------------------------------------------------

# keras.layers.BatchNormalization's defaults.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


def channel_sum(a):
    """a: (M, C) -> (C,) column sums, as the product ones(M) @ a: one BLAS call,
    several times faster than a.sum(axis=0), which walks the M rows one by one."""
    return np.ones(len(a), dtype=a.dtype) @ a


def channel_dot(a, b, block=4096):
    """a, b: (M, C) -> (C,), sum over m of a[m, c] * b[m, c].

    One einsum per block of rows, then the blocks' sums added. In float32 a single
    running sum over M = 86,528 values (a batch of 128 26x26 maps) is far less
    exact: on the first BatchNorm of `best` and an MNIST batch it got the variance
    wrong by 7e-4 (relative), the two-level sum by 4e-5 (tf.nn.moments: 2e-4).
    """
    return np.sum([np.einsum("mc,mc->c", a[k:k + block], b[k:k + block])
                   for k in range(0, len(a), block)], axis=0)


def batchnorm_forward(x, params, training, epsilon=BN_EPSILON):
    """Per-channel batch normalisation, keras.layers.BatchNormalization's forward pass.

    x: (N, C) or (N, H, W, C) -- any shape (..., C): every axis but the last is
    normalised over, M = x.size // C values per channel. params: "gamma", "beta",
    "moving_mean", "moving_variance", each (C,).
    training=True: mean and variance of this batch, the variance biased (divided
    by M, not M - 1), as tf.nn.moments computes it; training=False: the moving
    statistics. out = gamma * xhat + beta with xhat = (x - mean) / sqrt(var + eps).
    Nothing in params changes here (see `moving_average_update`).
    Returns out (shaped like x) and cache (xhat (M, C), gamma (C,), rstd =
    1/sqrt(var + eps) (C,), batch_stats): batch_stats is (mean (C,), var (C,))
    in training, None at inference.
    """
    channels = x.shape[-1]
    x2d = x.reshape(-1, channels)
    if training:
        mean = channel_sum(x2d) / len(x2d)
        centered = x2d - mean
        var = channel_dot(centered, centered) / len(x2d)
        batch_stats = mean, var
    else:
        mean, var = params["moving_mean"], params["moving_variance"]
        centered = x2d - mean
        batch_stats = None
    rstd = 1 / np.sqrt(var + epsilon)
    xhat = centered
    xhat *= rstd  # in place: `centered` is ours
    out = xhat * params["gamma"]
    out += params["beta"]
    return out.reshape(x.shape), (xhat, params["gamma"], rstd, batch_stats)


def moving_average_update(params, batch_stats, momentum=BN_MOMENTUM):
    """Keras's update after a training-mode forward, in place on params:
    moving = moving * momentum + batch * (1 - momentum), for the mean and the
    (biased) variance. batch_stats: (mean (C,), var (C,)) from batchnorm_forward."""
    for key, batch in zip(("moving_mean", "moving_variance"), batch_stats):
        moving = params[key]
        moving *= moving.dtype.type(momentum)
        moving += batch * moving.dtype.type(1 - momentum)


def batchnorm_backward(dout, cache):
    """dout: shaped like x. Returns {"x": shaped like x, "gamma": (C,), "beta": (C,)}.

    dbeta = sum(dout), dgamma = sum(dout * xhat), sums over all axes but the last.
    In training the batch mean and variance depend on x too; carrying their
    gradients through gives the closed form (M values per channel)
        dx = gamma * rstd * (dout - dbeta / M - xhat * dgamma / M).
    At inference the statistics are constants and dx = gamma * rstd * dout.
    """
    xhat, gamma, rstd, batch_stats = cache
    dout2d = dout.reshape(xhat.shape)
    dbeta = channel_sum(dout2d)
    dgamma = channel_dot(dout2d, xhat)
    scale = gamma * rstd
    if batch_stats is None:
        dx = dout2d * scale
    else:
        m = len(xhat)
        dx = xhat * (dgamma / m)
        dx += dbeta / m
        np.subtract(dout2d, dx, out=dx)
        dx *= scale
    return {"x": dx.reshape(dout.shape), "gamma": dgamma, "beta": dbeta}


# --- layer classes -------------------------------------------------------


class Layer:
    """A layer object: `params` and `grads` dicts keyed by Keras variable names.

    forward(x, training) -> out keeps what backward needs; backward(dout) -> dx
    fills `grads` (same keys and shapes as `params`, less `non_trainable`) and
    never touches `params`.
    `input_grad = False` (set on a network's first layer) lets backward skip dx.
    """

    regularized = False  # kernel takes part in the L2 penalty
    input_grad = True
    non_trainable: tuple[str, ...] = ()  # params no optimizer touches, and with no grads

    def __init__(self, name: str = ""):
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.cache = None

    def __repr__(self):
        shapes = ", ".join(f"{k}={v.shape}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.name}{': ' if shapes else ''}{shapes})"


class _Affine(Layer):
    """Shared code of Dense and Conv2D: an affine map with an optional ReLU."""

    regularized = True

    def __init__(self, kernel, bias, activation=None, name=""):
        super().__init__(name)
        if activation not in (None, "relu"):
            raise ValueError(f"activation {activation!r}: expected None or 'relu'")
        self.params = {"kernel": kernel, "bias": bias}
        self.activation = activation
        self.relu_in_next_layer = False  # a following MaxPool2D applies the ReLU (see there)
        self.relu_cache = None

    def _relu(self):
        return self.activation == "relu" and not self.relu_in_next_layer

    def forward(self, x, training=False):
        out, self.cache = self._forward(x)
        if self._relu():
            out, self.relu_cache = relu_forward(out, inplace=True)
        return out

    def backward(self, dout):
        if self._relu():
            dout = relu_backward(dout, self.relu_cache)["x"]
        grads = self._backward(dout)
        dx = grads.pop("x", None)
        self.grads = grads
        return dx


class Dense(_Affine):
    """Dense layer: kernel (D, M), bias (M,), optional ReLU; x (N, D) -> (N, M)."""

    def _forward(self, x):
        return dense_forward(x, self.params)

    def _backward(self, dout):
        return dense_backward(dout, self.cache, self.input_grad)


class Conv2D(_Affine):
    """Conv2D layer: kernel (KH, KW, C, F), bias (F,), stride 1, 'valid' or 'same',
    optional ReLU; x (N, H, W, C) -> (N, Ho, Wo, F)."""

    def __init__(self, kernel, bias, padding="valid", activation=None, name=""):
        super().__init__(kernel, bias, activation, name)
        self.padding = padding

    def _forward(self, x):
        return conv2d_forward(x, self.params, self.padding)

    def _backward(self, dout):
        return conv2d_backward(dout, self.cache, self.input_grad)


class MaxPool2D(Layer):
    """Max pooling over p x p windows, stride p: (N, H, W, C) -> (N, H//p, W//p, C).

    relu=True: also apply the previous layer's ReLU, after pooling (the model sets
    it together with that layer's `relu_in_next_layer`): same numbers, a quarter
    of the ReLU's work in both passes.
    """

    def __init__(self, pool_size=2, relu=False, name=""):
        super().__init__(name)
        self.pool_size = pool_size
        self.relu = relu

    def forward(self, x, training=False):
        out, self.cache = maxpool2d_forward(x, self.pool_size, self.relu)
        return out

    def backward(self, dout):
        return maxpool2d_backward(dout, self.cache)["x"]


class Flatten(Layer):
    """(N, ...) -> (N, D); a no-op on already flat (N, D) input."""

    def forward(self, x, training=False):
        out, self.cache = flatten_forward(x)
        return out

    def backward(self, dout):
        return flatten_backward(dout, self.cache)["x"]


class ReLU(Layer):
    """Standalone ReLU (Dense and Conv2D apply theirs themselves, like Keras).

    relu_in_next_layer=True (set by the model): a following MaxPool2D applies the
    ReLU (see there) and this layer passes values through.
    """

    activation = "relu"

    def __init__(self, name=""):
        super().__init__(name)
        self.relu_in_next_layer = False

    def forward(self, x, training=False):
        if self.relu_in_next_layer:
            return x
        out, self.cache = relu_forward(x)
        return out

    def backward(self, dout):
        if self.relu_in_next_layer:
            return dout
        return relu_backward(dout, self.cache)["x"]


class BatchNorm(Layer):
    """Batch normalisation over the last axis, keras.layers.BatchNormalization's defaults.

    params: "gamma" (C,) ones and "beta" (C,) zeros, trained; "moving_mean" (C,)
    zeros and "moving_variance" (C,) ones, non-trainable: every training-mode
    forward moves them towards the batch's statistics (`moving_average_update`),
    inference normalises with them. backward fills grads for gamma and beta only.
    """

    non_trainable = ("moving_mean", "moving_variance")

    def __init__(self, channels, dtype=np.float32, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                 name=""):
        super().__init__(name)
        self.params = {"gamma": np.ones(channels, dtype), "beta": np.zeros(channels, dtype),
                       "moving_mean": np.zeros(channels, dtype),
                       "moving_variance": np.ones(channels, dtype)}
        self.momentum = momentum
        self.epsilon = epsilon

    def forward(self, x, training=False):
        out, self.cache = batchnorm_forward(x, self.params, training, self.epsilon)
        if training:
            moving_average_update(self.params, self.cache[-1], self.momentum)
        return out

    def backward(self, dout):
        grads = batchnorm_backward(dout, self.cache)
        dx = grads.pop("x")
        self.grads = grads
        return dx


class Dropout(Layer):
    """Inverted dropout with its own numpy Generator `rng` (seeded by the model)."""

    def __init__(self, rate, rng, name=""):
        super().__init__(name)
        if not 0 <= rate < 1:
            raise ValueError(f"dropout rate {rate}: expected 0 <= rate < 1")
        self.rate = rate
        self.rng = rng

    def forward(self, x, training=False):
        out, self.cache = dropout_forward(x, self.rate, training, self.rng)
        return out

    def backward(self, dout):
        return dropout_backward(dout, self.cache)["x"]
