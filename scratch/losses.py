"""Losses with their gradients: softmax cross-entropy from logits and the L2 penalty.

Both match Keras: `SparseCategoricalCrossentropy(from_logits=True)` averaged
over the batch (with label smoothing: `CategoricalCrossentropy(from_logits=True,
label_smoothing=s)` on one-hot labels), and `keras.regularizers.L2(l2)`, which adds l2 * sum(w**2)
for each regularised kernel (no factor 1/2, so the gradient is 2 * l2 * w).
"""
from __future__ import annotations

import numpy as np


def softmax_cross_entropy(logits, labels, label_smoothing=0.0):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient.

    logits: (N, K) floats; labels: (N,) integers in [0, K).
    label_smoothing s in [0, 1): the target of each example is (1 - s) * onehot + s / K
    instead of onehot (keras.losses.CategoricalCrossentropy(label_smoothing=s)), so the
    network is no longer pushed towards infinitely confident logits.
    Returns loss (a Python float, mean over the batch) and dlogits (N, K) =
    (softmax(logits) - target) / N. The log-probabilities come from log-sum-exp on
    max-shifted logits, so huge logits give no inf or nan.
    """
    n, k = logits.shape
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected ({n},) integers, got {labels.shape} {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels: expected values in [0, {k}), got {labels.min()}..{labels.max()}")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing {label_smoothing}: expected a value in [0, 1)")
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1)
    log_sum_exp = np.log(sum_exp)
    # -sum(target * log_softmax) with target = (1 - s) onehot + s / K
    true_class = log_sum_exp - shifted[rows, labels]
    if label_smoothing:
        mean_class = log_sum_exp - shifted.mean(axis=1)
        loss = float(np.mean((1 - label_smoothing) * true_class + label_smoothing * mean_class))
    else:
        loss = float(np.mean(true_class))
    dlogits = exp
    dlogits /= (sum_exp * n)[:, None]
    if label_smoothing:
        dlogits -= label_smoothing / (k * n)
    dlogits[rows, labels] -= (1 - label_smoothing) / n
    return loss, dlogits


def l2_penalty(kernel, l2):
    """keras.regularizers.L2: l2 * sum(kernel**2) (a float) and its gradient 2 * l2 * kernel."""
    return float(l2 * np.sum(np.square(kernel))), (2 * l2) * kernel
