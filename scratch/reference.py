"""Naive loop versions of convolution, max pooling and batch normalisation, for the tests
(and for reading).

They follow the textbook definitions one output value (batch normalisation: one
channel) at a time, so they are easy to check by eye and far too slow to train
with; `scratch.layers` must agree with them exactly (convolution and pooling
forward) or to rounding. Same layouts as there: x (N, H, W, C), kernel (KH, KW, C, F).
"""
from __future__ import annotations

import numpy as np

from scratch.layers import same_padding


def conv2d_naive(x, kernel, bias, padding="valid"):
    """out[n, i, j, f] = bias[f] + sum_{a, b, c} xp[n, i+a, j+b, c] * kernel[a, b, c, f].

    Returns out (N, Ho, Wo, F); xp is x zero-padded by TensorFlow's rule for "same".
    """
    kh, kw, _, f = kernel.shape
    if padding == "same":
        x = np.pad(x, ((0, 0), same_padding(kh), same_padding(kw), (0, 0)))
    n, h, w, _ = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, f), dtype=x.dtype)
    for s in range(n):
        for i in range(h - kh + 1):
            for j in range(w - kw + 1):
                patch = x[s, i:i + kh, j:j + kw, :]
                for k in range(f):
                    out[s, i, j, k] = np.sum(patch * kernel[:, :, :, k]) + bias[k]
    return out


def conv2d_backward_naive(dout, x, kernel, padding="valid"):
    """(dx (N, H, W, C), dkernel (KH, KW, C, F), dbias (F,)) by looping over every output value."""
    kh, kw, _, f = kernel.shape
    (top, bottom), (left, right) = ((0, 0), (0, 0))
    if padding == "same":
        (top, bottom), (left, right) = same_padding(kh), same_padding(kw)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    dxp = np.zeros_like(xp)
    dkernel = np.zeros_like(kernel)
    n, ho, wo, _ = dout.shape
    for s in range(n):
        for i in range(ho):
            for j in range(wo):
                for k in range(f):
                    g = dout[s, i, j, k]
                    dkernel[:, :, :, k] += g * xp[s, i:i + kh, j:j + kw, :]
                    dxp[s, i:i + kh, j:j + kw, :] += g * kernel[:, :, :, k]
    dx = dxp[:, top:top + x.shape[1], left:left + x.shape[2], :]
    return dx, dkernel, dout.sum(axis=(0, 1, 2))


def maxpool2d_naive(x, pool_size=2):
    """out[n, i, j, c] = max of the window starting at (i*p, j*p); (N, H//p, W//p, C)."""
    p = pool_size
    n, h, w, c = x.shape
    out = np.zeros((n, h // p, w // p, c), dtype=x.dtype)
    for s in range(n):
        for i in range(h // p):
            for j in range(w // p):
                for ch in range(c):
                    out[s, i, j, ch] = x[s, i * p:(i + 1) * p, j * p:(j + 1) * p, ch].max()
    return out


def maxpool2d_backward_naive(dout, x, pool_size=2):
    """dx (N, H, W, C): each window's gradient to its first maximum in row-major order."""
    p = pool_size
    dx = np.zeros_like(x)
    n, ho, wo, c = dout.shape
    for s in range(n):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    window = x[s, i * p:(i + 1) * p, j * p:(j + 1) * p, ch]
                    a, b = np.unravel_index(np.argmax(window), window.shape)  # first max
                    dx[s, i * p + a, j * p + b, ch] += dout[s, i, j, ch]
    return dx


def batchnorm_naive(x, gamma, beta, epsilon=1e-3):
    """Training-mode batch normalisation one channel at a time, as in Ioffe & Szegedy's
    Algorithm 1: batch mean, biased batch variance, normalise, scale and shift.

    x: (..., C), every axis but the last normalised over; gamma, beta: (C,).
    Returns out, shaped like x.
    """
    out = np.empty_like(x)
    for c in range(x.shape[-1]):
        values = x[..., c]
        mean = values.sum() / values.size
        var = ((values - mean) ** 2).sum() / values.size
        out[..., c] = gamma[c] * (values - mean) / np.sqrt(var + epsilon) + beta[c]
    return out


def batchnorm_backward_naive(dout, x, gamma, epsilon=1e-3):
    """(dx (..., C), dgamma (C,), dbeta (C,)) of batchnorm_naive, backpropagated one node of
    the computational graph at a time (mean -> centred -> variance -> std -> xhat -> out)."""
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
