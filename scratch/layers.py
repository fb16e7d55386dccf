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
`grads` around these functions are in `scratch.layer_classes`. The padding,
stride and window-view helpers conv2d and pooling share are in `scratch.windows`;
the residual block, a composition of these pairs, is in `scratch.residual`.
"""
from __future__ import annotations

import numpy as np

from scratch.windows import (conv_pads, pad_input, pair, pool_geometry, tap, unpad,
                             windows_last, windows_to_image)

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


def conv2d_forward(x, params, padding="valid", strides=1):
    """2-d cross-correlation (no kernel flip, as in Keras) with strides (sh, sw):

        out[n, h, w, f] = bias[f] + sum_{i, j, c} xp[n, sh*h + i, sw*w + j, c] kernel[i, j, c, f]

    with xp the zero-padded input. x: (N, H, W, C); params["kernel"]: (KH, KW, C, F),
    params["bias"]: (F,). padding: "valid", "same" (TensorFlow's rule, Ho = ceil(H / sh))
    or explicit numbers (see conv_pads); strides: an int or (sh, sw).
    Ho = (Hp - KH) // sh + 1 and Wo = (Wp - KW) // sw + 1 for the padded size Hp x Wp.
    Kernel tap (i, j) sees the input shifted by (i, j) and subsampled by the strides:
    the (N, Ho, Wo, C) view tap(xp, i, j) times the (C, F) matrix kernel[i, j] is its
    whole contribution, so the sum over c is one matmul per tap.
    Returns out (N, Ho, Wo, F) and cache (xp (N, Hp, Wp, C), x's shape, kernel, pads, strides).
    """
    kernel = params["kernel"]
    kh, kw, c, f = kernel.shape
    if x.shape[-1] != c:
        raise ValueError(f"conv2d input has {x.shape[-1]} channels, kernel expects {c}")
    strides = pair(strides)
    pads = conv_pads(x.shape, kh, kw, strides, padding)
    xp = pad_input(x, pads)
    n, hp, wp, _ = xp.shape
    ho, wo = (hp - kh) // strides[0] + 1, (wp - kw) // strides[1] + 1
    out = np.zeros((n, ho, wo, f), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += tap(xp, i, j, (ho, wo), strides) @ kernel[i, j]
    out += params["bias"]
    return out, (xp, x.shape, kernel, pads, strides)


def conv2d_backward(dout, cache):
    """dout: (N, Ho, Wo, F). Returns {"x": (N, H, W, C), "kernel": (KH, KW, C, F), "bias": (F,)}.

    Tap (i, j) of the forward pass was out += xp_ij @ kernel[i, j], with
    xp_ij = tap(xp, i, j) (N, Ho, Wo, C): the dense layer's rule per tap.
    dkernel[i, j] = sum over (n, h, w) of xp_ij^T dout, a (C, F) matrix;
    dxp at the positions of xp_ij += dout @ kernel[i, j]^T, added because a pixel is
    seen by several taps (with a stride, only the pixels a tap saw get its share;
    those no window reached get 0); dbias = dout summed over (n, h, w).
    """
    xp, x_shape, kernel, pads, strides = cache
    kh, kw, _, _ = kernel.shape
    _, ho, wo, _ = dout.shape
    dxp = np.zeros_like(xp)
    dkernel = np.zeros_like(kernel)
    for i in range(kh):
        for j in range(kw):
            window = tap(xp, i, j, (ho, wo), strides)
            dkernel[i, j] = np.tensordot(window, dout, axes=([0, 1, 2], [0, 1, 2]))
            tap(dxp, i, j, (ho, wo), strides)[...] += dout @ kernel[i, j].T
    return {"x": unpad(dxp, pads), "kernel": dkernel, "bias": dout.sum(axis=(0, 1, 2))}


# --- pooling (maxpool2d, avgpool2d, globalavgpool2d) -------------------------------------


def maxpool2d_forward(x, pool_size=2, strides=None, padding="valid"):
    """Max over pool_size windows moved by strides (Keras MaxPooling2D).

    x: (N, H, W, C). Returns out (N, Ho, Wo, C) and cache (x, geometry), see
    pool_geometry: windows overlap when strides < pool_size. 'same' padding holds -inf,
    so a window's maximum is always one of its real values (Keras ignores the padding).
    """
    geometry = pool_geometry(x.shape, pool_size, strides, padding)
    return windows_last(x, geometry, -np.inf).max(axis=-1), (x, geometry)


def maxpool2d_backward(dout, cache):
    """dout: (N, Ho, Wo, C). Returns {"x": (N, H, W, C)}.

    out is one of the window's values, so its gradient goes to that value and
    the others get 0. If several values tie for the maximum (blank image
    regions, a ReLU's zeros), only the FIRST in row-major order gets it, as in
    TensorFlow's MaxPoolGrad: np.argmax returns exactly that one. A pixel in
    several overlapping windows adds what each of them gives it.
    """
    x, geometry = cache
    windows = windows_last(x, geometry, -np.inf)  # (N, Ho, Wo, C, ph*pw)
    first_max = windows.argmax(axis=-1)  # (N, Ho, Wo, C)
    is_first_max = first_max[..., None] == np.arange(windows.shape[-1])
    return {"x": windows_to_image(is_first_max * dout[..., None], x.shape, geometry)}


def avgpool2d_forward(x, pool_size=2, strides=None, padding="valid"):
    """Mean over pool_size windows moved by strides (Keras AveragePooling2D).

    x: (N, H, W, C). Returns out (N, Ho, Wo, C) and cache (x's shape, geometry, count):
    count (1, Ho, Wo, 1) is how many real values each window holds, ph*pw except at
    a 'same' border, where Keras averages over the real values only.
    """
    geometry = pool_geometry(x.shape, pool_size, strides, padding)
    count = windows_last(np.ones((1, *x.shape[1:3], 1), x.dtype), geometry).sum(axis=-1)
    return windows_last(x, geometry).sum(axis=-1) / count, (x.shape, geometry, count)


def avgpool2d_backward(dout, cache):
    """dout: (N, Ho, Wo, C). Returns {"x": (N, H, W, C)}: each of a window's count real
    values contributed 1 / count of its mean, so each gets dout / count (added up over
    the windows it is in); leftover rows and columns get 0."""
    x_shape, geometry, count = cache
    share = np.repeat((dout / count)[..., None], np.prod(geometry[0]), axis=-1)
    return {"x": windows_to_image(share, x_shape, geometry)}


def globalavgpool2d_forward(x):
    """Mean over all positions of each channel (Keras GlobalAveragePooling2D).

    x: (N, H, W, C). Returns out (N, C) and cache x's shape.
    """
    return x.mean(axis=(1, 2)), x.shape


def globalavgpool2d_backward(dout, cache):
    """dout: (N, C). Returns {"x": (N, H, W, C)}: every one of the H*W values of a
    channel gets dout / (H*W), as in avgpool2d with one window the size of the image."""
    n, h, w, c = cache
    return {"x": np.broadcast_to(dout[:, None, None, :] / (h * w), cache).copy()}


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


# --- layernorm and groupnorm -------------------------------------------------

# keras.layers.LayerNormalization's and GroupNormalization's default epsilon.
NORM_EPSILON = 1e-3


def normalize_forward(x, axes):
    """xhat = (x - mean) / sqrt(var + eps), mean and (biased) var over `axes` of x, one
    pair of statistics per index of the other axes. Returns xhat (shaped like x) and
    std = sqrt(var + eps) (x's shape with `axes` of length 1)."""
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    std = np.sqrt(var + NORM_EPSILON)
    return (x - mean) / std, std


def normalize_backward(dxhat, xhat, std, axes):
    """dL/dx of normalize_forward, given dL/dxhat. With M values in each group:
        dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / std,
    the means over `axes`: batchnorm_backward's derivation with the sums taken over a
    group's values (the last two terms are what the group's mean and var pass back)."""
    return (dxhat - dxhat.mean(axis=axes, keepdims=True)
            - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)) / std


def layernorm_forward(x, params):
    """Layer normalisation over the channels (keras.layers.LayerNormalization, axis=-1).

    x: (..., C), e.g. (N, H, W, C): every position (n, h, w) is normalised over its C
    channels alone, so nothing depends on the other examples of the batch (training and
    inference are the same). params["gamma"], params["beta"]: (C,).
        mean = sum_c x[..., c] / C,  var = sum_c (x[..., c] - mean)^2 / C,
        xhat = (x - mean) / sqrt(var + eps),  out = gamma * xhat + beta,  eps = 1e-3.
    Returns out (shaped like x) and cache (xhat (..., C), gamma (C,), std (..., 1)).
    """
    xhat, std = normalize_forward(x, -1)
    return params["gamma"] * xhat + params["beta"], (xhat, params["gamma"], std)


def layernorm_backward(dout, cache):
    """dout: (..., C). Returns {"x": (..., C), "gamma": (C,), "beta": (C,)}.

    dbeta = dout summed over every axis but C, dgamma = (dout * xhat) likewise,
    dxhat = gamma * dout. Each position's mean and var depend on its own C values:
        dvar  = -sum_c(dxhat * xhat) / (2 (var + eps)),   dmean = -sum_c(dxhat) / std
        dx    = dxhat / std + dvar * 2 (x - mean) / C + dmean / C
              = (dxhat - mean_c(dxhat) - xhat * mean_c(dxhat * xhat)) / std.
    """
    xhat, gamma, std = cache
    axes = tuple(range(dout.ndim - 1))
    dx = normalize_backward(gamma * dout, xhat, std, -1)
    return {"x": dx, "gamma": (dout * xhat).sum(axis=axes), "beta": dout.sum(axis=axes)}


def groupnorm_forward(x, params, groups=2):
    """Group normalisation (keras.layers.GroupNormalization, axis=-1, Wu & He 2018).

    x: (N, H, W, C), C divisible by `groups` G: the channels are split into G groups of
    C/G neighbours, and each example's group is normalised over its H*W*C/G values
    (G = 1: the whole example, G = C: each channel alone, instance normalisation).
    Viewed as xg (N, H, W, G, C/G), the statistics are over axes (1, 2, 4), then
    out = gamma * xhat + beta per channel, eps = 1e-3. params["gamma"], params["beta"]: (C,).
    Returns out (N, H, W, C) and cache (xhat (N, H, W, G, C/G), gamma (C,), std (N, 1, 1, G, 1)).
    """
    n, h, w, c = x.shape
    if c % groups:
        raise ValueError(f"groupnorm: {c} channels do not split into {groups} groups")
    xhat, std = normalize_forward(x.reshape(n, h, w, groups, c // groups), (1, 2, 4))
    return (params["gamma"] * xhat.reshape(x.shape) + params["beta"],
            (xhat, params["gamma"], std))


def groupnorm_backward(dout, cache):
    """dout: (N, H, W, C). Returns {"x": (N, H, W, C), "gamma": (C,), "beta": (C,)}.

    As layernorm_backward with each (example, group) for a position: dxhat = gamma * dout,
    viewed (N, H, W, G, C/G), goes through normalize_backward over axes (1, 2, 4)."""
    xhat, gamma, std = cache
    xhat_flat = xhat.reshape(dout.shape)
    dxhat = (gamma * dout).reshape(xhat.shape)
    dx = normalize_backward(dxhat, xhat, std, (1, 2, 4)).reshape(dout.shape)
    return {"x": dx, "gamma": (dout * xhat_flat).sum(axis=(0, 1, 2)),
            "beta": dout.sum(axis=(0, 1, 2))}
