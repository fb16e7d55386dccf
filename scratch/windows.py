"""Sliding-window geometry for conv2d and pooling: padding, strides and window views.

Keras's rules, shared by the readable layers (`scratch.layers`), the fast ones
(`scratch.fast_layers`) and the shape formulas (`scratch.layer_shapes`). Arrays are NHWC
(N, H, W, C); pads are ((top, bottom), (left, right)) rows and columns.

    pair            an int or a pair of ints as (rows, columns)
    axis_padding    'valid' / 'same' zeros along one axis, TensorFlow's rule
    same_padding    'same' at stride 1 for a kernel size
    conv_pads       a convolution's pads from 'valid', 'same' or explicit numbers
    pad_input       x with its pads; unpad cuts a gradient back to x's size
    tap             the strided view one window position sees at every output
    pool_geometry   a pooling layer's window, strides, pads and output size
    windows_last    every window's values on a new last axis; windows_to_image its adjoint
"""
from __future__ import annotations

import numpy as np


def pair(value, what="strides"):
    """An int n as (n, n), a pair of ints as it is: a per-axis setting (rows, columns)."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise ValueError(f"{what} {value!r}: expected an int or a pair of ints")


def axis_padding(size, window, stride, padding):
    """(before, after) zeros along one axis of length `size` for a `window` moved by `stride`.

    "valid": none. "same": TensorFlow's rule for any stride: Ho = ceil(size / stride)
    outputs need (Ho - 1) * stride + window input rows, so the total padding is
    max((Ho - 1) * stride + window - size, 0), and the odd one goes at the END
    (bottom/right): a 4-tap window at stride 1 gets 1 row above and 2 below, a 3-tap
    window at stride 2 on 28 rows gets 0 above and 1 below.
    """
    if padding == "valid":
        return 0, 0
    if padding != "same":
        raise ValueError(f"padding {padding!r}: expected 'valid', 'same' or numbers")
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def same_padding(kernel_size):
    """(before, after) zero padding of TensorFlow's 'same' at stride 1: kernel_size - 1
    in total, the odd one at the end."""
    return axis_padding(kernel_size, kernel_size, 1, "same")


def conv_pads(x_shape, kh, kw, strides=1, padding="valid"):
    """((top, bottom), (left, right)) zero rows and columns for input x_shape (N, H, W, C).

    padding: "valid", "same" (see axis_padding), or explicit numbers: p (p on every side),
    (ph, pw) (ph above and below, pw left and right) or ((top, bottom), (left, right)).
    """
    if isinstance(padding, str):
        (sh, sw) = pair(strides)
        return (axis_padding(x_shape[1], kh, sh, padding),
                axis_padding(x_shape[2], kw, sw, padding))
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(
            isinstance(p, (tuple, list)) for p in padding):
        return pair(padding[0], "padding"), pair(padding[1], "padding")
    ph, pw = pair(padding, "padding")
    if min(ph, pw) < 0:
        raise ValueError(f"padding {padding!r}: expected numbers >= 0")
    return (ph, ph), (pw, pw)


def pad_input(x, pads, fill=0.0):
    """x (N, H, W, C) with pads ((top, bottom), (left, right)) rows and columns of `fill`."""
    return np.pad(x, ((0, 0), *pads, (0, 0)), constant_values=fill)


def unpad(dxp, pads):
    """The gradient of the padded input (N, Hp, Wp, C) cut back to the input's size: the
    values that padding added are constants, their gradient is dropped."""
    (top, bottom), (left, right) = pads
    return dxp[:, top:dxp.shape[1] - bottom, left:dxp.shape[2] - right]


def tap(xp, i, j, out_hw, strides):
    """The (N, Ho, Wo, C) view of xp that window position (i, j) sees at every output:
    xp[:, i + sh*h, j + sw*w] for h < Ho, w < Wo."""
    (ho, wo), (sh, sw) = out_hw, strides
    return xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]


def pool_geometry(x_shape, pool_size, strides=None, padding="valid"):
    """(window (ph, pw), strides (sh, sw), pads, output size (Ho, Wo)) of a pooling layer
    on input x_shape (N, H, W, C), Keras's rules: strides default to the window;
    "valid" takes the windows that fit (leftover rows and columns are left out),
    "same" pads as conv2d does (axis_padding) so that Ho = ceil(H / sh)."""
    window = pair(pool_size, "pool_size")
    strides = window if strides is None else pair(strides)
    if padding not in ("valid", "same"):
        raise ValueError(f"pooling padding {padding!r}: expected 'valid' or 'same'")
    pads = conv_pads(x_shape, *window, strides, padding)
    hp, wp = x_shape[1] + sum(pads[0]), x_shape[2] + sum(pads[1])
    out_hw = (hp - window[0]) // strides[0] + 1, (wp - window[1]) // strides[1] + 1
    return window, strides, pads, out_hw


def windows_last(x, geometry, fill=0.0):
    """x (N, H, W, C) -> (N, Ho, Wo, C, ph*pw): each window's values on the last axis, in
    row-major order (a*pw + b for window row a, column b); padding holds `fill`."""
    (ph, pw), strides, pads, out_hw = geometry
    xp = pad_input(x, pads, fill)
    return np.stack([tap(xp, a, b, out_hw, strides) for a in range(ph) for b in range(pw)],
                    axis=-1)


def windows_to_image(dwindows, x_shape, geometry):
    """The adjoint of windows_last for gradients: (N, Ho, Wo, C, ph*pw) -> (N, H, W, C).
    Overlapping windows add their shares; pixels no window covered get 0."""
    (ph, pw), strides, pads, out_hw = geometry
    n, h, w, c = x_shape
    dxp = np.zeros((n, h + sum(pads[0]), w + sum(pads[1]), c), dtype=dwindows.dtype)
    for a in range(ph):
        for b in range(pw):
            tap(dxp, a, b, out_hw, strides)[...] += dwindows[..., a * pw + b]
    return unpad(dxp, pads)
