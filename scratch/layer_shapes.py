"""What the parameter tables print for each layer kind: shapes, counts, formulas, FLOPs.

The functions that `scratch.registry.KINDS` names for each kind, all of the form
f(spec, shape[, params]) with `shape` one example's input shape (batch axis omitted):

    output_shape    conv2d_output, pool_output, residual_output, same_shape, ...
    param_shapes    {"kernel": (3, 3, 1, 32), "bias": (32,)}: dense_params, conv2d_params, ...
    formula         "3*3*1*32 + 32 = 320": weights_formula and the kinds' own
    flops           ("2*26*26*9*32", 389376): forward FLOPs per example, 2 per multiply-add

plus the helpers `scratch.zoo` and `scratch.famous` use: param_count, window_out, NO_WEIGHTS.
"""
from __future__ import annotations

import math

from scratch.windows import conv_pads, pair, pool_geometry

NO_WEIGHTS = "0 (no weights)"


def same_shape(spec, shape):
    return shape


def no_params(spec, shape):
    return {}


def param_count(params: dict) -> int:
    """How many numbers the arrays of `params` ({name: shape}) hold."""
    return sum(math.prod(dims) for dims in params.values())


def weights_formula(spec, shape, params):
    """"3*3*1*32 + 32 = 320": each array's shape as a product, then the count."""
    if not params:
        return NO_WEIGHTS
    terms = " + ".join("*".join(map(str, dims)) for dims in params.values())
    return f"{terms} = {param_count(params):,}"


def window_out(size, window, stride=1, padding="valid"):
    """Output length along an axis of `size` of a `window` moved by `stride`: 'valid'
    takes the windows that fit, 'same' pads so that there are ceil(size / stride)."""
    if padding == "same":
        return -(-size // stride)
    if padding != "valid":
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    if window > size:
        raise ValueError(f"window {window} is larger than the input size {size}")
    return (size - window) // stride + 1


def check_output(hw, kind):
    """hw (Ho, Wo) when both are at least 1, else a one-line error."""
    if min(hw) < 1:
        raise ValueError(f"{kind}: the window is larger than its (padded) input")
    return hw


def image(shape, kind):
    """(h, w, c) of an image-shaped input; a one-line error for a flat one."""
    if len(shape) != 3:
        raise ValueError(f"{kind} needs an (h, w, channels) input, got shape {shape}")
    return shape


# --- per-kind shapes and formulas ----------------------------------------------------------


def dense_params(spec, shape):
    if len(shape) != 1:
        raise ValueError(f"dense needs a flat input, got shape {shape} (add a flatten)")
    return {"kernel": (shape[0], spec.units), "bias": (spec.units,)}


def flatten_formula(spec, shape, params):
    return "0 (" + "*".join(map(str, shape)) + f" = {math.prod(shape):,} values)"


def conv2d_output(spec, shape):
    h, w, _ = image(shape, "conv2d")
    k, (sh, sw) = spec.kernel_size, pair(spec.strides or 1)
    (top, bottom), (left, right) = conv_pads((1, h, w), k, k, (sh, sw), spec.padding)
    hw = (h + top + bottom - k) // sh + 1, (w + left + right - k) // sw + 1
    return (*check_output(hw, "conv2d"), spec.filters)


def conv2d_params(spec, shape):
    k, cin = spec.kernel_size, image(shape, "conv2d")[2]
    return {"kernel": (k, k, cin, spec.filters), "bias": (spec.filters,)}


def pool_output(spec, shape):
    h, w, c = image(shape, spec.kind)
    *_, hw = pool_geometry((1, h, w, c), spec.pool_size, spec.strides, spec.padding)
    return (*check_output(hw, spec.kind), c)


def no_flops(spec, shape):
    return "0", 0


def dense_flops(spec, shape):
    """A multiply and an add per weight: 2*D*M."""
    return f"2*{shape[0]}*{spec.units}", 2 * shape[0] * spec.units


def conv2d_flops(spec, shape):
    """2*Ho*Wo*(KH*KW*C)*F: a multiply and an add per kernel weight per output position."""
    h, w, f = conv2d_output(spec, shape)
    k = spec.kernel_size ** 2 * shape[2]
    return f"2*{h}*{w}*{k}*{f}", 2 * h * w * k * f


def batchnorm_formula(spec, shape, params):
    c = shape[-1]
    return f"2*{c} trainable (+ 2*{c} moving stats)"


def norm_params(spec, shape):
    return {"gamma": shape[-1:], "beta": shape[-1:]}


def groupnorm_params(spec, shape):
    c = image(shape, "groupnorm")[2]
    if c % spec.groups:
        raise ValueError(f"groupnorm: {c} channels do not split into {spec.groups} groups")
    return norm_params(spec, shape)


BN_KEYS = ("gamma", "beta")


def residual_convs(spec, shape) -> dict:
    """{name: kernel shape} of a residual block's convolutions on input `shape`: the 1x1
    shortcut only when the block changes the shape (strides or channels)."""
    c, f = image(shape, "residual")[2], spec.filters
    convs = {"conv_a": (3, 3, c, f), "conv_b": (3, 3, f, f)}
    if pair(spec.strides or 1) != (1, 1) or c != f:
        convs["shortcut_conv"] = (1, 1, c, f)
    return convs


def bn_of(conv_name):
    return "shortcut_bn" if conv_name == "shortcut_conv" else "bn_" + conv_name[-1]


def residual_output(spec, shape):
    h, w, _ = image(shape, "residual")
    sh, sw = pair(spec.strides or 1)
    return -(-h // sh), -(-w // sw), spec.filters


def residual_params(spec, shape):
    params = {}
    for conv, kernel in residual_convs(spec, shape).items():
        params[f"{conv}/kernel"] = kernel
        params.update({f"{bn_of(conv)}/{key}": (spec.filters,) for key in BN_KEYS})
    return params


def residual_formula(spec, shape, params):
    kernels = [dims for key, dims in params.items() if key.endswith("/kernel")]
    terms = " + ".join("*".join(map(str, dims)) for dims in kernels)
    bns = f"{len(kernels)}*2*{spec.filters}"
    return f"{terms} + {bns} = {param_count(params):,} (+ {bns} moving stats)"


def residual_flops(spec, shape):
    """Its convolutions' FLOPs (2 per multiply-add), at the output's Ho x Wo."""
    ho, wo, f = residual_output(spec, shape)
    parts = [(2 * ho * wo * math.prod(k[:3]) * f, f"2*{ho}*{wo}*{math.prod(k[:3])}*{f}")
             for k in residual_convs(spec, shape).values()]
    return " + ".join(text for _, text in parts), sum(count for count, _ in parts)
