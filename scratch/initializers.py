"""Kernel initializers: Keras's, drawn from a numpy Generator.

    kernel = glorot_uniform(rng, (3, 3, 1, 32))   # what keras.layers.Conv2D starts from
    INITIALIZERS["he_normal"](rng, (784, 128))

Each is `initializer(rng, shape) -> float64 array`; `scratch.model.build_model` picks
one by name (its `init`) and the registry's BuildContext casts it to the model's dtype.
Biases start at zero and need none.
"""
from __future__ import annotations

import numpy as np


def fans(shape):
    """(fan_in, fan_out) as Keras computes them: dense (D, M) -> (D, M);
    conv (KH, KW, C, F) -> (KH*KW*C, KH*KW*F)."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def glorot_uniform(rng, shape):
    """Uniform in [-limit, limit], limit = sqrt(6 / (fan_in + fan_out)) (Keras's default)."""
    fan_in, fan_out = fans(shape)
    limit = np.sqrt(6 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape)


def he_uniform(rng, shape):
    """Uniform in [-limit, limit], limit = sqrt(6 / fan_in) (He et al. 2015, for ReLU)."""
    limit = np.sqrt(6 / fans(shape)[0])
    return rng.uniform(-limit, limit, shape)


def he_normal(rng, shape):
    """Normal with std sqrt(2 / fan_in), truncated at 2 std, like keras HeNormal.

    Keras divides the std by 0.8796, the std of a standard normal cut at +-2,
    so the truncated values keep variance 2 / fan_in.
    """
    std = np.sqrt(2 / fans(shape)[0]) / 0.87962566103423978
    values = rng.standard_normal(shape)
    while np.any(bad := np.abs(values) > 2):  # redraw the tails
        values[bad] = rng.standard_normal(int(bad.sum()))
    return values * std


def weight_and_dropout_generators(seed: int):
    """(kernel rng, dropout rng): two independent numpy Generators spawned from `seed`.

    A NumPy model draws its kernels from the first, in layer order, and its dropout
    masks from the second, so the same seed gives the same weights however many masks
    are drawn later.
    """
    weight_seq, dropout_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(weight_seq), np.random.default_rng(dropout_seq)


INITIALIZERS = {"glorot_uniform": glorot_uniform, "he_uniform": he_uniform, "he_normal": he_normal}
