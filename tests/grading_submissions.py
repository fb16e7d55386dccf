"""A generated class for the grader: correct files written apart from the reference (loops,
other formulas) and files with the classic mistakes, each with the verdict it must get.

    write_class(folder, names=None) -> {student: expected}
    CORRECT[name] = (layer, source)
    MISTAKES[name] = (layer, source, words the gradebook's verdict must contain)
"""
from __future__ import annotations

import textwrap
from pathlib import Path

DENSE = """
import numpy as np


def dense_forward(x, params):
    out = np.einsum("nd,dm->nm", x, params["kernel"]) + params["bias"][None, :]
    return out, {"x": x, "kernel": params["kernel"]}


def dense_backward(dout, cache):
    x, kernel = cache["x"], cache["kernel"]
    return {"x": np.einsum("nm,dm->nd", dout, kernel),
            "kernel": np.einsum("nd,nm->dm", x, dout),
            "bias": np.einsum("nm->m", dout)}
"""

RELU = """
import numpy as np


def relu_forward(x):
    positive = x > 0
    return np.where(positive, x, 0.0 * x), positive


def relu_backward(dout, cache):
    return {"x": np.where(cache, dout, 0.0 * dout)}
"""

FLATTEN = """
import numpy as np


def flatten_forward(x):
    return np.reshape(x, (x.shape[0], -1)), x.shape


def flatten_backward(dout, cache):
    return {"x": np.reshape(dout, cache)}
"""

POOL_GEOMETRY = """
import math

import numpy as np


def geometry(h, w, pool_size, strides, padding):
    # the window, the step, and the (top, left) padding; output rows and columns
    p = pool_size
    s = p if strides is None else strides
    if padding == "same":
        ho, wo = math.ceil(h / s), math.ceil(w / s)
        top = max((ho - 1) * s + p - h, 0) // 2
        left = max((wo - 1) * s + p - w, 0) // 2
    else:
        ho, wo = (h - p) // s + 1, (w - p) // s + 1
        top = left = 0
    return p, s, top, left, ho, wo


def rows_and_columns(i, j, p, s, top, left, h, w):
    # the input rows and columns window (i, j) covers, padding left out
    r0, c0 = i * s - top, j * s - left
    return range(max(r0, 0), min(r0 + p, h)), range(max(c0, 0), min(c0 + p, w))
"""

MAXPOOL = POOL_GEOMETRY + """

def maxpool2d_forward(x, pool_size=2, strides=None, padding="valid"):
    n, h, w, c = x.shape
    p, s, top, left, ho, wo = geometry(h, w, pool_size, strides, padding)
    out = np.empty((n, ho, wo, c), dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            rows, cols = rows_and_columns(i, j, p, s, top, left, h, w)
            out[:, i, j, :] = x[:, rows.start:rows.stop, cols.start:cols.stop, :].max(axis=(1, 2))
    return out, (x, p, s, top, left)


def maxpool2d_backward(dout, cache):
    x, p, s, top, left = cache
    h, w = x.shape[1:3]
    dx = np.zeros_like(x)
    n, ho, wo, c = dout.shape
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                rows, cols = rows_and_columns(i, j, p, s, top, left, h, w)
                for k in range(c):
                    window = x[b, rows.start:rows.stop, cols.start:cols.stop, k]
                    r, q = divmod(int(np.argmax(window)), len(cols))
                    dx[b, rows.start + r, cols.start + q, k] += dout[b, i, j, k]
    return {"x": dx}
"""

AVGPOOL = POOL_GEOMETRY + """

def avgpool2d_forward(x, pool_size=2, strides=None, padding="valid"):
    n, h, w, c = x.shape
    p, s, top, left, ho, wo = geometry(h, w, pool_size, strides, padding)
    out = np.zeros((n, ho, wo, c), dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            rows, cols = rows_and_columns(i, j, p, s, top, left, h, w)
            out[:, i, j, :] = x[:, rows.start:rows.stop, cols.start:cols.stop, :].mean(axis=(1, 2))
    return out, (x.shape, p, s, top, left)


def avgpool2d_backward(dout, cache):
    shape, p, s, top, left = cache
    h, w = shape[1:3]
    dx = np.zeros(shape, dtype=dout.dtype)
    for i in range(dout.shape[1]):
        for j in range(dout.shape[2]):
            rows, cols = rows_and_columns(i, j, p, s, top, left, h, w)
            size = len(rows) * len(cols)
            dx[:, rows.start:rows.stop, cols.start:cols.stop, :] += (
                dout[:, i:i + 1, j:j + 1, :] / size)
    return {"x": dx}
"""

CONV = """
import math

import numpy as np


def conv2d_forward(x, params, padding="valid", strides=1):
    w, b = params["kernel"], params["bias"]
    kh, kw = w.shape[:2]
    sh, sw = (strides, strides) if isinstance(strides, int) else strides
    h, wd = x.shape[1:3]
    if padding == "same":
        th = max((math.ceil(h / sh) - 1) * sh + kh - h, 0)
        tw = max((math.ceil(wd / sw) - 1) * sw + kw - wd, 0)
        pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    elif padding == "valid":
        pads = (0, 0, 0, 0)
    else:
        ph, pw = (padding, padding) if isinstance(padding, int) else padding
        pads = (ph, ph, pw, pw)
    x = np.pad(x, ((0, 0), pads[:2], pads[2:], (0, 0)))
    n, hp, wp, c = x.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    out = np.zeros((n, ho, wo, w.shape[3]), dtype=x.dtype) + b
    for i in range(ho):
        for j in range(wo):
            patch = x[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :]
            out[:, i, j, :] += np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return out, (x, w, pads, (sh, sw))


def conv2d_backward(dout, cache):
    xp, w, (top, bottom, left, right), (sh, sw) = cache
    kh, kw = w.shape[:2]
    ho, wo = dout.shape[1:3]
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :]
            g = dout[:, i, j, :]
            dw += np.tensordot(patch, g, axes=([0], [0]))
            dxp[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :] += np.tensordot(g, w, axes=([1], [3]))
    h, wd = xp.shape[1:3]
    dx = dxp[:, top:h - bottom, left:wd - right, :]
    return {"x": dx, "kernel": dw, "bias": dout.sum(axis=(0, 1, 2))}
"""

BATCHNORM = """
import numpy as np

EPS = 1e-3


def batchnorm_forward(x, params, training):
    c = x.shape[-1]
    flat = x.reshape(-1, c)
    if training:
        mu = flat.sum(axis=0) / len(flat)
        var = ((flat - mu) * (flat - mu)).sum(axis=0) / len(flat)
    else:
        mu, var = params["moving_mean"], params["moving_variance"]
    inv = 1.0 / np.sqrt(var + EPS)
    xhat = (x - mu) * inv
    return params["gamma"] * xhat + params["beta"], (x, mu, inv, params["gamma"], training)


def batchnorm_backward(dout, cache):
    x, mu, inv, gamma, training = cache
    c = x.shape[-1]
    d = dout.reshape(-1, c)
    xc = (x - mu).reshape(-1, c)
    m = len(d)
    dbeta = d.sum(axis=0)
    dgamma = (d * xc * inv).sum(axis=0)
    dxhat = d * gamma
    if training:
        dvar = (dxhat * xc).sum(axis=0) * -0.5 * inv ** 3
        dmu = -(dxhat * inv).sum(axis=0) - 2 * dvar * xc.mean(axis=0)
        dx = dxhat * inv + dvar * 2 * xc / m + dmu / m
    else:
        dx = dxhat * inv
    return {"x": dx.reshape(x.shape), "gamma": dgamma, "beta": dbeta}
"""

DROPOUT = """
import numpy as np


def dropout_forward(x, rate, training, rng):
    if not training or rate == 0:
        return x.copy(), np.ones_like(x)
    keep = rng.random(x.shape, dtype=x.dtype) >= rate
    scale = np.where(keep, 1 / (1 - rate), 0).astype(x.dtype)
    return x * scale, scale


def dropout_backward(dout, cache):
    return {"x": dout * cache}
"""

LOSS = """
import numpy as np


def softmax_cross_entropy(logits, labels, label_smoothing=0.0):
    n, k = logits.shape
    z = logits - np.max(logits, axis=1)[:, None]
    log_p = z - np.log(np.sum(np.exp(z), axis=1))[:, None]
    target = np.full((n, k), label_smoothing / k)
    target[np.arange(n), labels] += 1 - label_smoothing
    loss = -np.sum(target * log_p) / n
    return float(loss), (np.exp(log_p) - target) / n
"""

RELU_SECOND = """
import numpy as np


def relu_forward(x):
    out = x.copy()
    out[out < 0] = 0
    return out, out != 0


def relu_backward(dout, cache):
    return {"x": dout * cache}
"""

CORRECT = {"dense": ("dense", DENSE), "relu": ("relu", RELU), "flatten": ("flatten", FLATTEN),
           "maxpool": ("maxpool2d", MAXPOOL), "avgpool": ("avgpool2d", AVGPOOL),
           "conv": ("conv2d", CONV), "batchnorm": ("batchnorm", BATCHNORM),
           "dropout": ("dropout", DROPOUT), "loss": ("softmax_cross_entropy", LOSS),
           "relu_copy": ("relu", RELU_SECOND)}


def changed(source: str, old: str, new: str) -> str:
    """`source` with `old` (which must be there once) replaced: a planted mistake."""
    assert source.count(old) == 1, old
    return source.replace(old, new)


def with_relu_backward(body: str) -> str:
    """A correct relu_forward and a relu_backward whose body is `body`."""
    return changed(RELU, '    return {"x": np.where(cache, dout, 0.0 * dout)}\n',
                   textwrap.indent(textwrap.dedent(body), "    "))


MISTAKES = {
    "mean_not_sum": ("dense", changed(DENSE, 'np.einsum("nm->m", dout)',
                                      'np.einsum("nm->m", dout) / len(dout)'),
                     "a mean where a sum belongs"),
    "float32_out": ("dense", changed(DENSE, "    return out, {",
                                     "    return out.astype(np.float32), {"),
                    "out: float32 (4, 8), expected float64 (4, 8)"),
    "in_place": ("relu", changed(RELU_SECOND, "    out = x.copy()\n", "    out = x\n"),
                 "changed its input in place"),
    "no_max_shift": ("softmax_cross_entropy",
                     changed(LOSS, "logits - np.max(logits, axis=1)[:, None]", "logits"), "NaN"),
    "pool_two": ("maxpool2d", changed(MAXPOOL, "    p = pool_size\n", "    p = 2\n"),
                 "(pool 3)"),
    "tied_maxima": ("maxpool2d", changed(
        MAXPOOL, """                    r, q = divmod(int(np.argmax(window)), len(cols))
                    dx[b, rows.start + r, cols.start + q, k] += dout[b, i, j, k]""",
        """                    hit = window == window.max()
                    dx[b, rows.start:rows.stop, cols.start:cols.stop, k] += hit * dout[b, i, j, k]"""),
        "every one of tied maxima"),
    "spread": ("maxpool2d", changed(
        MAXPOOL, """                    r, q = divmod(int(np.argmax(window)), len(cols))
                    dx[b, rows.start + r, cols.start + q, k] += dout[b, i, j, k]""",
        """                    share = dout[b, i, j, k] / window.size
                    dx[b, rows.start:rows.stop, cols.start:cols.stop, k] += share"""),
        "spread over the window"),
    "variance_n_minus_1": ("batchnorm", changed(
        BATCHNORM, "((flat - mu) * (flat - mu)).sum(axis=0) / len(flat)",
        "((flat - mu) * (flat - mu)).sum(axis=0) / (len(flat) - 1)"), "per channel"),
    "no_mean_term": ("batchnorm", changed(BATCHNORM,
                                          "dx = dxhat * inv + dvar * 2 * xc / m + dmu / m",
                                          "dx = dxhat * inv + dvar * 2 * xc / m"),
                     "a constant offset per channel"),
    "pad_wrong_side": ("conv2d", changed(CONV, "pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)",
                                         "pads = (th - th // 2, th // 2, tw - tw // 2, tw // 2)"), "shifted by one"),
    "transposed": ("dense", changed(DENSE, 'np.einsum("nd,nm->dm", x, dout)',
                                    'np.einsum("nd,nm->md", x, dout)'), "transposed"),
    "sign_flipped": ("relu", with_relu_backward('return {"x": -np.where(cache, dout, 0.0)}\n'),
                     "sign flipped"),
    "raises": ("dense", changed(DENSE, '    x, kernel = cache["x"], cache["kernel"]\n',
                                '    x, kernel = cache["x"], cache["kernel"]\n'
                                '    x = x.reshape(3, -1)\n'),
               "dense_backward raised ValueError"),
    "hang": ("relu", with_relu_backward("while True:\n    pass\n"),
             "(in relu_backward): an endless loop"),
    "crash": ("relu", with_relu_backward("import ctypes\nctypes.string_at(0)\n"),
              "crashed (a segmentation fault"),
    "os_exit": ("relu", with_relu_backward("import os\nos._exit(0)\n"), "exit status 0"),
    "flood": ("relu", with_relu_backward('while True:\n    print("dout is", dout)\n'),
              "output flood"),
    "ten_gb": ("relu", with_relu_backward("big = np.ones(10 * 2**30 // 8)\nreturn {'x': big}\n"),
               "MemoryError"),
    "recursion": ("relu", with_relu_backward("return relu_backward(dout, cache)\n"),
                  "RecursionError"),
    "three_tuple": ("relu", changed(RELU, "    return np.where(positive, x, 0.0 * x), positive",
                                    "    return np.where(positive, x, 0.0 * x), positive, x"),
                    "forward returned a tuple of 3 items"),
}


def write_class(folder: Path, names=None) -> dict[str, tuple[bool, str]]:
    """Write the submissions named (default all) into `folder`, a .py file per student,
    the files of 'conv' and 'batchnorm' in a folder per student; {student: (passes,
    words its verdict contains)}."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (layer, source) in CORRECT.items():
        if names is None or name in names:
            expected[f"ok_{name}"] = (True, "checks pass")
            write_one(folder, f"ok_{name}", source, own_folder=name in ("conv", "batchnorm"))
    for name, (layer, source, words) in MISTAKES.items():
        if names is None or name in names:
            expected[f"bad_{name}"] = (False, words)
            write_one(folder, f"bad_{name}", source)
    return expected


def write_one(folder: Path, student: str, source: str, own_folder: bool = False) -> None:
    if own_folder:
        (folder / student).mkdir()
        (folder / student / "notes.txt").write_text("my layer\n")
        (folder / student / "layer.py").write_text(source.lstrip())
    else:
        (folder / f"{student}.py").write_text(source.lstrip())
