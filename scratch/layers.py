"""NumPy layers with hand-written backward passes and Keras's semantics: the readable version.

Every layer is a pair of functions, in the style of CS231n's layers.py:

    <layer>_forward(x, params, ...) -> (out, cache)
    <layer>_backward(dout, cache) -> grads

`cache` is whatever the backward pass needs from the forward pass. `dout` is
dL/dout, and `grads["x"]` is dL/dx; every other key is dL/d(parameter) under the
Keras variable name ("kernel", "bias", "gamma", "beta"). Layouts as in Keras:
activations NHWC (N, H, W, C), convolution kernels HWIO (KH, KW, C, F), dense
kernels (D, M). The docstrings give every array's shape in these letters.

This file is written to be read: each backward pass is the chain rule applied
to its forward pass, line by line. `scratch.fast_layers` computes the same
numbers with tricks that exist only for speed (im2col, bit masks, fused ReLU);
the tests prove the two equal. The layer objects that hold `params` and
`grads` around these functions are in `scratch.layer_classes`.
"""
from __future__ import annotations

import numpy as np

# --- dense ---------------------------------------------------------------


def dense_forward(x, params):
    """Affine map out = x @ kernel + bias.

    x: (N, D); params["kernel"]: (D, M), params["bias"]: (M,).
    Returns out (N, M) and cache (x, kernel).
    """
    return x @ params["kernel"] + params["bias"], (x, params["kernel"])


def dense_backward(dout, cache):
    """dout: (N, M). Returns {"x": (N, D), "kernel": (D, M), "bias": (M,)}.

    out[n, m] = sum_d x[n, d] kernel[d, m] + bias[m], so
    dkernel[d, m] = sum_n x[n, d] dout[n, m], dbias[m] = sum_n dout[n, m] and
    dx[n, d] = sum_m dout[n, m] kernel[d, m].
    """
    x, kernel = cache
    return {"x": dout @ kernel.T, "kernel": x.T @ dout, "bias": dout.sum(axis=0)}


# --- relu ----------------------------------------------------------------


def relu_forward(x):
    """out = max(x, 0) elementwise. x: any shape. Returns out (same shape) and cache x."""
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    """dout: same shape as x. Returns {"x": dout where x > 0, else 0}.

    At exactly 0 the gradient is 0, as in TensorFlow's ReluGrad.
    """
    x = cache
    return {"x": dout * (x > 0)}


# --- flatten -------------------------------------------------------------


def flatten_forward(x):
    """x: (N, ...) -> out (N, prod(...)) in row-major (NHWC) order, like keras Flatten.
    The cache is x's shape."""
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


def unpad(dxp, x_shape, kh, kw, padding):
    """The gradient of the padded input (N, Hp, Wp, C) cut back to x_shape (N, H, W, C):
    the zeros that padding added are constants, their gradient is dropped."""
    if padding == "valid":
        return dxp
    (top, _), (left, _) = same_padding(kh), same_padding(kw)
    return dxp[:, top:top + x_shape[1], left:left + x_shape[2]]


def conv2d_forward(x, params, padding="valid"):
    """2-d cross-correlation (no kernel flip, as in Keras), stride 1:

        out[n, h, w, f] = bias[f] + sum_{i, j, c} xp[n, h+i, w+j, c] kernel[i, j, c, f]

    with xp the zero-padded input. x: (N, H, W, C); params["kernel"]: (KH, KW, C, F),
    params["bias"]: (F,). padding: "valid" (Ho = H-KH+1, Wo = W-KW+1) or "same"
    (Ho = H, Wo = W, TensorFlow's padding rule).
    Kernel tap (i, j) sees the input shifted by (i, j): the (N, Ho, Wo, C) block
    xp[:, i:i+Ho, j:j+Wo] times the (C, F) matrix kernel[i, j] is its whole
    contribution, so the sum over c is one matmul per tap.
    Returns out (N, Ho, Wo, F) and cache (xp (N, Hp, Wp, C), x's shape, kernel, padding).
    """
    kernel = params["kernel"]
    kh, kw, c, f = kernel.shape
    if x.shape[-1] != c:
        raise ValueError(f"conv2d input has {x.shape[-1]} channels, kernel expects {c}")
    xp = pad_input(x, kh, kw, padding)
    n, hp, wp, _ = xp.shape
    ho, wo = hp - kh + 1, wp - kw + 1
    out = np.zeros((n, ho, wo, f), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += xp[:, i:i + ho, j:j + wo] @ kernel[i, j]
    out += params["bias"]
    return out, (xp, x.shape, kernel, padding)


def conv2d_backward(dout, cache):
    """dout: (N, Ho, Wo, F). Returns {"x": (N, H, W, C), "kernel": (KH, KW, C, F), "bias": (F,)}.

    Tap (i, j) of the forward pass was out += xp_ij @ kernel[i, j], with
    xp_ij = xp[:, i:i+Ho, j:j+Wo] (N, Ho, Wo, C): the dense layer's rule per tap.
    dkernel[i, j] = sum over (n, h, w) of xp_ij^T dout, a (C, F) matrix;
    dxp[:, i:i+Ho, j:j+Wo] += dout @ kernel[i, j]^T, added because a pixel is
    seen by several taps; dbias = dout summed over (n, h, w).
    """
    xp, x_shape, kernel, padding = cache
    kh, kw, _, _ = kernel.shape
    _, ho, wo, _ = dout.shape
    dxp = np.zeros_like(xp)
    dkernel = np.zeros_like(kernel)
    for i in range(kh):
        for j in range(kw):
            window = xp[:, i:i + ho, j:j + wo]
            dkernel[i, j] = np.tensordot(window, dout, axes=([0, 1, 2], [0, 1, 2]))
            dxp[:, i:i + ho, j:j + wo] += dout @ kernel[i, j].T
    return {"x": unpad(dxp, x_shape, kh, kw, padding), "kernel": dkernel,
            "bias": dout.sum(axis=(0, 1, 2))}


# --- pooling (maxpool2d, avgpool2d) ----------------------------------------


def pool_windows(x, pool_size):
    """x (N, H, W, C) as a view (N, Ho, p, Wo, p, C) of its p x p pool windows,
    Ho = H // p, Wo = W // p: [n, i, a, j, b, c] = x[n, i*p + a, j*p + b, c].
    Rows and columns that do not fill a window are left out (Keras's 'valid')."""
    p = pool_size
    n, h, w, c = x.shape
    return x[:, :h // p * p, :w // p * p].reshape(n, h // p, p, w // p, p, c)


def windows_last(x, pool_size):
    """x (N, H, W, C) -> (N, Ho, Wo, C, p*p): each window's p*p values on the last
    axis, in row-major order (a*p + b for window row a, column b)."""
    windows = pool_windows(x, pool_size).transpose(0, 1, 3, 5, 2, 4)
    return windows.reshape(*windows.shape[:4], pool_size * pool_size)


def windows_to_image(dwindows, x_shape, pool_size):
    """The inverse of windows_last for gradients: (N, Ho, Wo, C, p*p) -> (N, H, W, C),
    zero in the leftover rows and columns that no window covered."""
    p = pool_size
    n, ho, wo, c, _ = dwindows.shape
    dx = np.zeros(x_shape, dtype=dwindows.dtype)
    dx[:, :ho * p, :wo * p] = (dwindows.reshape(n, ho, wo, c, p, p)
                               .transpose(0, 1, 4, 2, 5, 3).reshape(n, ho * p, wo * p, c))
    return dx


def maxpool2d_forward(x, pool_size=2):
    """Max over non-overlapping p x p windows, stride p (Keras MaxPooling2D, 'valid').

    x: (N, H, W, C). Returns out (N, H//p, W//p, C) and cache (x, pool_size).
    Leftover rows and columns are dropped.
    """
    return windows_last(x, pool_size).max(axis=-1), (x, pool_size)


def maxpool2d_backward(dout, cache):
    """dout: (N, Ho, Wo, C). Returns {"x": (N, H, W, C)}.

    out is one of the window's values, so its gradient goes to that value and
    the others get 0. If several values tie for the maximum (blank image
    regions, a ReLU's zeros), only the FIRST in row-major order gets it, as in
    TensorFlow's MaxPoolGrad: np.argmax returns exactly that one.
    """
    x, p = cache
    first_max = windows_last(x, p).argmax(axis=-1)  # (N, Ho, Wo, C), in 0 .. p*p-1
    is_first_max = first_max[..., None] == np.arange(p * p)  # (N, Ho, Wo, C, p*p)
    return {"x": windows_to_image(is_first_max * dout[..., None], x.shape, p)}


def avgpool2d_forward(x, pool_size=2):
    """Mean over non-overlapping p x p windows, stride p (Keras AveragePooling2D, 'valid').

    x: (N, H, W, C). Returns out (N, H//p, W//p, C) and cache (x's shape, pool_size).
    Leftover rows and columns are dropped.
    """
    return pool_windows(x, pool_size).mean(axis=(2, 4)), (x.shape, pool_size)


def avgpool2d_backward(dout, cache):
    """dout: (N, Ho, Wo, C). Returns {"x": (N, H, W, C)}: each of a window's p*p
    values contributed 1 / p^2 of its mean, so each gets dout / p^2; leftover rows
    and columns get 0."""
    x_shape, p = cache
    dx = np.zeros(x_shape, dtype=dout.dtype)
    pool_windows(dx, p)[...] = dout[:, :, None, :, None, :] / (p * p)  # a view of dx
    return {"x": dx}


# --- batchnorm -----------------------------------------------------------

# keras.layers.BatchNormalization's defaults.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


def batchnorm_forward(x, params, training):
    """Per-channel batch normalisation, keras.layers.BatchNormalization's forward pass.

    x: (N, C) or (N, H, W, C), any shape (..., C): each channel is normalised over
    all other axes, M = x.size // C values. params: "gamma", "beta",
    "moving_mean", "moving_variance", each (C,).
    training=True: the mean and variance of this batch, the variance biased
    (divided by M, not M - 1) as tf.nn.moments computes it; training=False: the
    moving statistics. Then
        xhat = (x - mean) / sqrt(var + eps),   out = gamma * xhat + beta,
    eps = 1e-3 (Keras's default). Nothing in params changes here (see
    `moving_average_update`).
    Returns out (shaped like x) and cache (xhat (..., C), gamma (C,), std (C,),
    batch_stats): std = sqrt(var + eps); batch_stats is (mean (C,), var (C,)) in
    training, None at inference.
    """
    axes = tuple(range(x.ndim - 1))  # every axis but the channels
    if training:
        mean = x.mean(axis=axes)
        var = ((x - mean) ** 2).mean(axis=axes)
        batch_stats = mean, var
    else:
        mean, var = params["moving_mean"], params["moving_variance"]
        batch_stats = None
    std = np.sqrt(var + BN_EPSILON)
    xhat = (x - mean) / std
    return params["gamma"] * xhat + params["beta"], (xhat, params["gamma"], std, batch_stats)


def moving_average_update(params, batch_stats, momentum=BN_MOMENTUM):
    """Keras's update after a training-mode forward, in place on params:
    moving = moving * momentum + batch * (1 - momentum), for the mean and the
    (biased) variance. batch_stats: (mean (C,), var (C,)) from batchnorm_forward."""
    for key, batch in zip(("moving_mean", "moving_variance"), batch_stats):
        moving = params[key]
        moving *= moving.dtype.type(momentum)
        moving += batch * moving.dtype.type(1 - momentum)


def batchnorm_backward(dout, cache):
    """dout: shaped like x (..., C). Returns {"x": like x, "gamma": (C,), "beta": (C,)}.

    Per channel, with sums over the M values of the channel:
        dbeta = sum(dout),  dgamma = sum(dout * xhat),  dxhat = gamma * dout.
    At inference mean and var are constants: dx = dxhat / std.
    In training they are functions of x too. From xhat = (x - mean) / std,
    mean = sum(x) / M and var = sum((x - mean)^2) / M:
        dvar  = sum(dxhat * (x - mean)) * (-1/2) std^-3 = -sum(dxhat * xhat) / (2 var + 2 eps)
        dmean = -sum(dxhat) / std      (var's term sum(-2 (x - mean)) / M is 0)
        dx    = dxhat / std + dvar * 2 (x - mean) / M + dmean / M
    and with x - mean = xhat * std this collapses to
        dx = gamma / std * (dout - dbeta / M - xhat * dgamma / M).
    """
    xhat, gamma, std, batch_stats = cache
    axes = tuple(range(dout.ndim - 1))
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    if batch_stats is None:
        dx = gamma / std * dout
    else:
        m = xhat.size // xhat.shape[-1]
        dx = gamma / std * (dout - dbeta / m - xhat * dgamma / m)
    return {"x": dx, "gamma": dgamma, "beta": dbeta}
