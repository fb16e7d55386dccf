"""The layers of `scratch.layers`, rewritten only for speed: same numbers, less time.

Read `scratch.layers` first; this file holds what exists only because NumPy
is slow at the readable version (as CS231n keeps fast_layers.py apart from
layers.py). The layer classes use these functions by default (`fast=True`),
and tests/test_fast_layers.py proves each one equal to its readable twin,
values and gradients, ties included. The tricks:

- conv2d: im2col, every patch as one row, so the forward pass and the kernel
  gradient are one big matmul each, the bias folded in as a column of ones;
  the rows built and multiplied one cache-sized chunk of images at a time,
  into the buffer of the layer's previous step.
- maxpool2d: maxima by elementwise passes, the first-maximum rule by bit masks.
- batchnorm: per-channel sums as BLAS products, per-channel steps along whole
  rows, arithmetic in place.
- fusion and skipping, chosen by the layer classes: a ReLU applied after
  max-pooling (`relu=True`), a ReLU applied in place on a fresh pre-activation,
  no input gradient for a network's first layer (`input_grad=False`).

Same names as the readable ones (`scratch.layers`, `scratch.residual`), and the same positional arguments; the
speed-only flags are keywords whose defaults give the readable behaviour.
Functions without a fast twin (flatten, dropout, dense_forward, relu_backward,
avgpool2d) are used from `scratch.layers` directly.
"""
from __future__ import annotations

import sys

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from scratch import layers, residual
from scratch.layers import BN_EPSILON
from scratch.windows import conv_pads, pad_input, pair, pool_geometry, tap, unpad

# --- dense ---------------------------------------------------------------


def dense_backward(dout, cache, input_grad=True):
    """layers.dense_backward; input_grad=False skips dL/dx (a first layer needs none)."""
    x, kernel = cache
    grads = {"kernel": x.T @ dout, "bias": dout.sum(axis=0)}
    if input_grad:
        grads["x"] = dout @ kernel.T
    return grads


# --- relu ----------------------------------------------------------------


def relu_forward(x):
    """layers.relu_forward IN PLACE: x is overwritten with max(x, 0), saving an array
    the size of the layer's output. Only for a fresh pre-activation nobody else holds.
    The cache (x, now the output) is positive exactly where x was, so
    layers.relu_backward applies unchanged."""
    np.maximum(x, 0, out=x)
    return x, x


# --- conv2d --------------------------------------------------------------

# How many bytes of im2col rows are built and multiplied at a time: a chunk of
# images whose rows fit in the CPU's cache (32 MB of L3 here) is copied, then
# multiplied while still there; a batch-sized copy goes out to main memory and
# comes back for the matmul (a fifth slower for best's second layer, 85 MB of rows).
# Larger than needed for that, so that there are few BLAS calls to share out among
# threads.
CHUNK_BYTES = 2 ** 23


def image_chunks(n, bytes_per_image):
    """Slices of the batch axis 0..n of about CHUNK_BYTES each, their sizes equal to
    within one image (no small last chunk: BLAS may round a small product differently)."""
    count = max(1, min(n, n * bytes_per_image // CHUNK_BYTES))
    bounds = [n * i // count for i in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


def im2col(xp, kh, kw, ones=False, out=None, strides=(1, 1)):
    """Every KH x KW patch of xp, moved by strides (sh, sw), as one row.

    xp: (N, Hp, Wp, C). Returns cols (N*Ho*Wo, KH*KW*C), Ho = (Hp-KH)//sh + 1,
    Wo = (Wp-KW)//sw + 1, each row ordered (kh, kw, c) like a HWIO kernel reshaped to
    (KH*KW*C, F).
    ones=True appends a column of ones (N*Ho*Wo, KH*KW*C + 1): the "bias trick",
    [patch, 1] @ [kernel; bias] = patch @ kernel + bias in one matmul.
    out: an array of that shape to fill instead of a new one.
    The copies go one kernel row at a time (KW*C contiguous values per patch
    row) or, for a single channel, one kernel tap at a time (Wo contiguous
    values): long contiguous runs are what make NumPy copy fast.
    """
    n, hp, wp, c = xp.shape
    sh, sw = strides
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    k = kh * kw * c
    cols = np.empty((n * ho * wo, k + ones), dtype=xp.dtype) if out is None else out
    patches = cols[:, :k].reshape(n, ho, wo, kh, kw, c)  # a view: splitting axes never copies
    for i in range(kh):
        if c == 1:
            for j in range(kw):
                patches[:, :, :, i, j] = tap(xp, i, j, (ho, wo), strides)
        else:  # (N, Ho, Wp-KW+1, C, KW) window view, every sw-th column -> (N, Ho, Wo, KW, C)
            rows = xp[:, i:i + sh * (ho - 1) + 1:sh]
            window = sliding_window_view(rows, kw, axis=2)[:, :, ::sw]
            patches[:, :, :, i] = window.transpose(0, 1, 2, 4, 3)
    if ones:
        cols[:, k] = 1
    return cols


def col2im(dcols, xp_shape, kh, kw, strides=(1, 1)):
    """The adjoint of im2col: add every row's patch back where it came from.

    dcols: (N*Ho*Wo, KH*KW*C). Returns dxp (N, Hp, Wp, C) of the padded input's shape.
    The textbook backward of im2col (tutorial 04); conv2d_backward computes the
    same sum tap by tap without ever building dcols.
    """
    n, hp, wp, c = xp_shape
    ho, wo = (hp - kh) // strides[0] + 1, (wp - kw) // strides[1] + 1
    patches = dcols.reshape(n, ho, wo, kh, kw, c)
    dxp = np.zeros(xp_shape, dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            tap(dxp, i, j, (ho, wo), strides)[...] += patches[:, :, :, i, j]
    return dxp


def conv2d_forward(x, params, padding="valid", strides=1, reuse=None):
    """layers.conv2d_forward as out = [cols, 1] @ [kernel; bias], one matmul per chunk.

    x: (N, H, W, C); params["kernel"]: (KH, KW, C, F), params["bias"]: (F,).
    Returns out (N, Ho, Wo, F) and cache (cols with their ones column, padded
    input shape, kernel, pads, strides). The rows of a chunk of images are built and
    multiplied together (see CHUNK_BYTES); each output row is the same dot
    product whichever chunk it is in (OpenBLAS gives the same bits for all but
    tiny chunks), so the numbers do not depend on the chunking.
    reuse: a cache of this function that nobody needs any more (the layer's
    previous one): its cols are refilled when the shapes match. Fresh memory
    comes from the operating system page by page, and filling a new 85 MB cols
    (best's second layer) took longer than the matmul.
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
    weights = np.vstack([kernel.reshape(kh * kw * c, f), params["bias"]])
    shape = (n * ho * wo, kh * kw * c + 1)
    if reuse is not None and reuse[0].shape == shape and reuse[0].dtype == xp.dtype:
        cols = reuse[0]
    else:
        cols = np.empty(shape, dtype=xp.dtype)
    out = np.empty((n * ho * wo, f), dtype=np.result_type(cols, weights))
    for images in image_chunks(n, cols[:ho * wo].nbytes):
        rows = slice(images.start * ho * wo, images.stop * ho * wo)
        im2col(xp[images], kh, kw, ones=True, out=cols[rows], strides=strides)
        np.matmul(cols[rows], weights, out=out[rows])
    return out.reshape(n, ho, wo, f), (cols, xp.shape, kernel, pads, strides)


def conv2d_backward(dout, cache, input_grad=True):
    """dout: (N, Ho, Wo, F). Returns {"x": (N, H, W, C), "kernel": (KH, KW, C, F), "bias": (F,)}.

    [dkernel; dbias] = [cols, 1]^T @ dout: the forward matmul, transposed (the
    ones column sums dout over all positions for the bias), one product over all
    N*Ho*Wo rows (summed in chunks, the float32 rounding would change). dx as in
    layers.conv2d_backward, one (rows, F) @ (F, C) product and one shifted add
    per tap, for one chunk of images at a time so that the adds stay in cache:
    adding whole contiguous (Wo, C) rows is several times faster than col2im of
    one big product. input_grad=False skips dL/dx.
    """
    cols, xp_shape, kernel, pads, strides = cache
    kh, kw, c, f = kernel.shape
    n, ho, wo, _ = dout.shape
    dout2d = dout.reshape(-1, f)
    # (KH*KW*C + 1, F): the same sums either way round, and BLAS is faster with the
    # wider of the two matrices as its right operand
    dparams = (dout2d.T @ cols).T if cols.shape[1] > f else cols.T @ dout2d
    grads = {"kernel": dparams[:-1].reshape(kernel.shape), "bias": dparams[-1]}
    if input_grad:
        dxp = np.zeros(xp_shape, dtype=dout.dtype)
        for images in image_chunks(n, cols[:ho * wo].nbytes):
            part_dout, part_dxp = dout[images].reshape(-1, f), dxp[images]
            for i in range(kh):
                for j in range(kw):
                    tap(part_dxp, i, j, (ho, wo), strides)[...] += (
                        part_dout @ kernel[i, j].T).reshape(len(part_dxp), ho, wo, c)
        grads["x"] = unpad(dxp, pads)
    return grads


# --- pooling (maxpool2d, avgpool2d) --------------------------------------------


def tiles(geometry) -> bool:
    """True when a pooling layer's windows tile the image: stride = window, no padding
    (Keras's default). Only then do the fast pooling functions below apply; overlapping
    or padded windows use the readable functions."""
    window, strides, pads, _ = geometry
    return window == strides and window[0] == window[1] and pads == ((0, 0), (0, 0))


def pool_windows(x, pool_size):
    """x (N, H, W, C) as a view (N, Ho, p, Wo, p, C) of its p x p pool windows,
    Ho = H // p, Wo = W // p: [n, i, a, j, b, c] = x[n, i*p + a, j*p + b, c].
    Rows and columns that do not fill a window are left out (Keras's 'valid')."""
    p = pool_size
    n, h, w, c = x.shape
    return x[:, :h // p * p, :w // p * p].reshape(n, h // p, p, w // p, p, c)


def _max_of(arrays):
    """Elementwise maximum of same-shape arrays, as a new array."""
    result = np.maximum(arrays[0], arrays[1]) if len(arrays) > 1 else arrays[0].copy()
    for array in arrays[2:]:
        np.maximum(result, array, out=result)
    return result


def maxpool2d_forward(x, pool_size=2, relu=False):
    """layers.maxpool2d_forward for windows that tile the image (stride = pool_size,
    'valid'); relu=True returns max(out, 0) instead.

    x: (N, H, W, C). Returns out (N, H//p, W//p, C) and cache (x, window maxima,
    pool_size, relu). relu=True gives the same numbers as pooling a ReLU's output
    (max and ReLU commute) for a quarter of the ReLU's work. The maximum is
    taken over window rows, then window columns: elementwise passes, not a slow
    reduction over two non-adjacent axes.
    """
    windows = pool_windows(x, pool_size)
    rows_max = _max_of([windows[:, :, a] for a in range(pool_size)])  # (N, Ho, Wo, p, C)
    maxima = _max_of([rows_max[:, :, :, b] for b in range(pool_size)])  # (N, Ho, Wo, C)
    out = np.maximum(maxima, 0) if relu else maxima
    return out, (x, maxima, pool_size, relu)


def maxpool2d_backward(dout, cache):
    """dout: (N, Ho, Wo, C). Returns {"x": (N, H, W, C)}.

    The first maximum in row-major order gets the gradient, as in
    layers.maxpool2d_backward, found without argmax: a boolean mask of every
    maximum (one elementwise pass), turned into 0.0 / 1.0 and multiplied by dout.
    Only when some window holds its maximum twice (a tie: blank image regions) or
    not at all (NaN) does the mask need the first-maximum rule; counting its ones
    tells, since a mask with exactly one per window has as many ones as windows.
    With the fused ReLU, windows whose maximum is <= 0 pass no gradient (ReLU's
    backward).
    """
    x, maxima, p, relu = cache
    if relu:
        dout = dout * (maxima > 0)
    is_max = pool_windows(x, p) == maxima[:, :, None, :, None, :]  # (N, Ho, p, Wo, p, C)
    if np.count_nonzero(is_max) != maxima.size or np.isnan(maxima).any():
        keep_first_maximum(is_max)
    dwindows = is_max.astype(x.dtype)
    dwindows *= dout[:, :, None, :, None, :]
    if x.shape[1] % p == 0 and x.shape[2] % p == 0:
        return {"x": dwindows.reshape(x.shape)}
    dx = np.zeros_like(x)
    pool_windows(dx, p)[...] = dwindows
    return {"x": dx}


def keep_first_maximum(is_max):
    """is_max (N, Ho, p, Wo, p, C), True at every maximum of each window: keep, in
    place, only the first True of each window in row-major order, by bit masks (each
    position keeps its bit only if no earlier position already claimed the window)."""
    p = is_max.shape[2]
    taken = is_max[:, :, 0, :, 0].copy()  # window's maximum already claimed
    for a in range(p):
        for b in range(p):
            if a or b:
                here = is_max[:, :, a, :, b]
                here &= ~taken
                taken |= here


def avgpool2d_forward(x, pool_size=2, strides=None, padding="valid"):
    """layers.avgpool2d_forward; for windows that tile the image, the mean over the
    window axes of pool_windows' view (no copy of x), else the readable function."""
    geometry = pool_geometry(x.shape, pool_size, strides, padding)
    if not tiles(geometry):
        return layers.avgpool2d_forward(x, pool_size, strides, padding)
    return pool_windows(x, geometry[0][0]).mean(axis=(2, 4)), (x.shape, geometry, None)


def avgpool2d_backward(dout, cache):
    """layers.avgpool2d_backward; for tiling windows dout / p^2 written through
    pool_windows' view of dx in one assignment."""
    x_shape, geometry, _ = cache
    if not tiles(geometry):
        return layers.avgpool2d_backward(dout, cache)
    p = geometry[0][0]
    dx = np.zeros(x_shape, dtype=dout.dtype)
    pool_windows(dx, p)[...] = dout[:, :, None, :, None, :] / (p * p)  # a view of dx
    return {"x": dx}


# --- batchnorm -----------------------------------------------------------


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


def along_rows(vector, rows):
    """vector (C,) repeated along one row of rows (N, R*C), the (..., C) array viewed as
    one row per example: an elementwise step of rows with it gives every value its
    channel's number, and NumPy's inner loop runs over whole rows, not C values
    (three times faster for C = 32)."""
    return np.tile(vector, rows.shape[1] // len(vector))


def batchnorm_forward(x, params, training):
    """layers.batchnorm_forward with BLAS sums, whole-row elementwise steps, in place
    where the array is ours.

    Two views of x (N, ..., C): (M, C) for the per-channel sums, (N, R*C) rows for
    the elementwise steps. Returns out (shaped like x) and cache (xhat (N, R*C),
    gamma (C,), rstd = 1/sqrt(var + eps) (C,), batch_stats): batch_stats is
    (mean (C,), var (C,)) in training, None at inference (for
    layers.moving_average_update).
    """
    channels = x.shape[-1]
    m = x.size // channels
    rows = x.reshape(len(x), -1)
    if training:
        mean = channel_sum(x.reshape(m, channels)) / m
        centered = rows - along_rows(mean, rows)
        var = channel_dot(centered.reshape(m, channels), centered.reshape(m, channels)) / m
        batch_stats = mean, var
    else:
        mean, var = params["moving_mean"], params["moving_variance"]
        centered = rows - along_rows(mean, rows)
        batch_stats = None
    rstd = 1 / np.sqrt(var + BN_EPSILON)
    xhat = centered
    xhat *= along_rows(rstd, xhat)  # in place: `centered` is ours
    out = xhat * along_rows(params["gamma"], xhat)
    out += along_rows(params["beta"], out)
    return out.reshape(x.shape), (xhat, params["gamma"], rstd, batch_stats)


def batchnorm_backward(dout, cache):
    """layers.batchnorm_backward's closed form, dx = gamma * rstd * (dout - dbeta / M
    - xhat * dgamma / M) in training, computed in place on one (N, R*C) buffer."""
    xhat, gamma, rstd, batch_stats = cache
    channels = len(gamma)
    m = xhat.size // channels
    dout_rows = dout.reshape(xhat.shape)
    dbeta = channel_sum(dout.reshape(m, channels))
    dgamma = channel_dot(dout.reshape(m, channels), xhat.reshape(m, channels))
    scale = gamma * rstd
    if batch_stats is None:
        dx = dout_rows * along_rows(scale, dout_rows)
    else:
        dx = xhat * along_rows(dgamma / m, xhat)
        dx += along_rows(dbeta / m, dx)
        np.subtract(dout_rows, dx, out=dx)
        dx *= along_rows(scale, dx)
    return {"x": dx.reshape(dout.shape), "gamma": dgamma, "beta": dbeta}


# --- residual block -------------------------------------------------------------


def residual_forward(x, params, strides=1, training=False):
    """residual.residual_forward with this file's conv2d and batchnorm (its backward, read
    from the cache, then uses them too)."""
    return residual.residual_forward(x, params, strides, training, sys.modules[__name__])
