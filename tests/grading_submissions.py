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

MAXPOOL = """
import numpy as np


def maxpool2d_forward(x, pool_size=2):
    n, h, w, c = x.shape
    p = pool_size
    ho, wo = h // p, w // p
    out = np.empty((n, ho, wo, c), dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            out[:, i, j, :] = x[:, i * p:(i + 1) * p, j * p:(j + 1) * p, :].max(axis=(1, 2))
    return out, (x, p)


def maxpool2d_backward(dout, cache):
    x, p = cache
    dx = np.zeros_like(x)
    n, ho, wo, c = dout.shape
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                for k in range(c):
                    window = x[b, i * p:(i + 1) * p, j * p:(j + 1) * p, k]
                    r, s = divmod(int(np.argmax(window)), p)
                    dx[b, i * p + r, j * p + s, k] += dout[b, i, j, k]
    return {"x": dx}
"""

AVGPOOL = """
import numpy as np


def avgpool2d_forward(x, pool_size=2):
    n, h, w, c = x.shape
    p = pool_size
    ho, wo = h // p, w // p
    out = np.zeros((n, ho, wo, c), dtype=x.dtype)
    for r in range(p):
        for s in range(p):
            out += x[:, r:ho * p:p, s:wo * p:p, :]
    return out / (p * p), (x.shape, p)


def avgpool2d_backward(dout, cache):
    shape, p = cache
    dx = np.zeros(shape, dtype=dout.dtype)
    ho, wo = dout.shape[1:3]
    for r in range(p):
        for s in range(p):
            dx[:, r:ho * p:p, s:wo * p:p, :] = dout / (p * p)
    return {"x": dx}
"""

CONV = """
import numpy as np


def conv2d_forward(x, params, padding="valid"):
    w, b = params["kernel"], params["bias"]
    kh, kw = w.shape[:2]
    pads = (0, 0, 0, 0)
    if padding == "same":
        top, left = (kh - 1) // 2, (kw - 1) // 2
        pads = (top, kh - 1 - top, left, kw - 1 - left)
    x = np.pad(x, ((0, 0), pads[:2], pads[2:], (0, 0)))
    n, h, wd, c = x.shape
    ho, wo = h - kh + 1, wd - kw + 1
    out = np.zeros((n, ho, wo, w.shape[3]), dtype=x.dtype) + b
    for i in range(kh):
        for j in range(kw):
            out += np.tensordot(x[:, i:i + ho, j:j + wo, :], w[i, j], axes=([3], [0]))
    return out, (x, w, pads)


def conv2d_backward(dout, cache):
    xp, w, (top, bottom, left, right) = cache
    kh, kw = w.shape[:2]
    ho, wo = dout.shape[1:3]
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i:i + ho, j:j + wo, :]
            dw[i, j] = np.tensordot(patch, dout, axes=([0, 1, 2], [0, 1, 2]))
            dxp[:, i:i + ho, j:j + wo, :] += np.tensordot(dout, w[i, j], axes=([3], [1]))
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
        MAXPOOL, """                    r, s = divmod(int(np.argmax(window)), p)
                    dx[b, i * p + r, j * p + s, k] += dout[b, i, j, k]""",
        """                    hit = window == window.max()
                    dx[b, i * p:(i + 1) * p, j * p:(j + 1) * p, k] += hit * dout[b, i, j, k]"""),
        "every one of tied maxima"),
    "spread": ("maxpool2d", changed(
        MAXPOOL, """                    r, s = divmod(int(np.argmax(window)), p)
                    dx[b, i * p + r, j * p + s, k] += dout[b, i, j, k]""",
        """                    share = dout[b, i, j, k] / p ** 2
                    dx[b, i * p:(i + 1) * p, j * p:(j + 1) * p, k] += share"""),
        "spread over the window"),
    "variance_n_minus_1": ("batchnorm", changed(
        BATCHNORM, "((flat - mu) * (flat - mu)).sum(axis=0) / len(flat)",
        "((flat - mu) * (flat - mu)).sum(axis=0) / (len(flat) - 1)"), "per channel"),
    "no_mean_term": ("batchnorm", changed(BATCHNORM,
                                          "dx = dxhat * inv + dvar * 2 * xc / m + dmu / m",
                                          "dx = dxhat * inv + dvar * 2 * xc / m"),
                     "a constant offset per channel"),
    "pad_wrong_side": ("conv2d", changed(CONV, "top, left = (kh - 1) // 2, (kw - 1) // 2",
                                         "top, left = kh // 2, kw // 2"), "shifted by one"),
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
