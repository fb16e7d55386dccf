"""Losses with their gradients: softmax cross-entropy from logits and the L2 penalty.

Both match Keras: `SparseCategoricalCrossentropy(from_logits=True)` averaged
over the batch, and `keras.regularizers.L2(l2)`, which adds l2 * sum(w**2)
for each regularised kernel (no factor 1/2, so the gradient is 2 * l2 * w).
"""
from __future__ import annotations

import numpy as np


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient.

    logits: (N, K) floats; labels: (N,) integers in [0, K).
    Returns loss (a Python float, mean over the batch) and dlogits (N, K) =
    (softmax(logits) - onehot(labels)) / N. The log-probabilities come from
    log-sum-exp on max-shifted logits, so huge logits give no inf or nan.
    """
    n, k = logits.shape
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected ({n},) integers, got {labels.shape} {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels: expected values in [0, {k}), got {labels.min()}..{labels.max()}")
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1)
    loss = float(np.mean(np.log(sum_exp) - shifted[rows, labels]))
    dlogits = exp
    dlogits /= (sum_exp * n)[:, None]
    dlogits[rows, labels] -= 1 / n
    return loss, dlogits


def l2_penalty(kernel, l2):
    """keras.regularizers.L2: l2 * sum(kernel**2) (a float) and its gradient 2 * l2 * kernel."""
    return float(l2 * np.sum(np.square(kernel))), (2 * l2) * kernel
