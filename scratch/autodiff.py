"""Reverse-mode automatic differentiation on NumPy arrays: what tf.GradientTape does.

    w1, b1 = Value(kernel), Value(bias)          # the arrays to differentiate against
    with Tape() as tape:
        logits = relu(x @ w1 + b1) @ w2 + b2
        loss = softmax_cross_entropy(logits, labels)
    dw1, db1 = tape.gradient(loss, [w1, b1])

Each operation on a `Value` computes its result with NumPy and, while a tape records,
appends one `Record` to it: the inputs, the output, and `backward`, the local chain rule
that turns dL/d(output) into dL/d(each input) (a vector-Jacobian product). `gradient`
starts from dL/dL = 1 and walks the records in REVERSE order: when it reaches a record,
every use of that record's output came later on the tape, so its gradient is complete.
A value used several times receives a gradient from each use, and they are ADDED (the
multivariate chain rule): `x * x` gives 2x.

The operations are those of the course's MLP: +, -, * (with NumPy broadcasting), @ (2-D),
relu, exp, log, reduce_sum, reduce_mean, reduce_logsumexp (rows), pick (one entry per row).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

_RECORDING: list[Tape] = []  # the tapes recording now


class Value:
    """An array that operations record on the tape. value: the ndarray (ints become float64)."""

    __array_ufunc__ = None  # `array @ value`, `array * value`: NumPy leaves them to Value

    def __init__(self, value):
        value = np.asarray(value)
        self.value = value if value.dtype.kind == "f" else value.astype(np.float64)

    @property
    def shape(self):
        return self.value.shape

    def __add__(self, other):
        return add(self, other)

    def __radd__(self, other):
        return add(other, self)

    def __sub__(self, other):
        return subtract(self, other)

    def __rsub__(self, other):
        return subtract(other, self)

    def __mul__(self, other):
        return multiply(self, other)

    def __rmul__(self, other):
        return multiply(other, self)

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __neg__(self):
        return multiply(self, -1.0)

    def __repr__(self):
        return f"Value(shape={self.shape}, dtype={self.value.dtype})"


@dataclass
class Record:
    """One operation on the tape: out = f(*inputs); backward(dout) -> one gradient per input."""

    out: Value
    inputs: tuple[Value, ...]
    backward: Callable


class Tape:
    """Records every operation inside `with Tape() as tape:`; `gradient` replays them backwards."""

    def __enter__(self):
        self.records: list[Record] = []
        _RECORDING.append(self)
        return self

    def __exit__(self, *exception):
        _RECORDING.remove(self)

    def gradient(self, target: Value, sources: list[Value]) -> list[np.ndarray]:
        """dtarget/dsource for each source (zeros where target does not depend on it);
        target: a scalar Value computed on this tape."""
        if target.value.size != 1:
            raise ValueError(f"gradient of a {target.shape} array: expected a scalar loss")
        grads = {id(target): np.ones_like(target.value)}
        for record in reversed(self.records):
            dout = grads.get(id(record.out))
            if dout is None:  # the target does not depend on this output
                continue
            for value, grad in zip(record.inputs, record.backward(dout)):
                if id(value) in grads:
                    grads[id(value)] = grads[id(value)] + grad  # a value used again: add
                else:
                    grads[id(value)] = grad
        return [grads.get(id(s), np.zeros_like(s.value)) for s in sources]


def as_value(x) -> Value:
    return x if isinstance(x, Value) else Value(x)


def operation(result, inputs, backward) -> Value:
    """The Value of `result`, recorded with its inputs and backward on every recording tape."""
    out = Value(result)
    for tape in _RECORDING:
        tape.records.append(Record(out, inputs, backward))
    return out


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`: broadcasting copied the input along the axes it added or
    stretched from 1, and a copied value's gradient is the sum over its copies."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad


def add(a, b) -> Value:
    a, b = as_value(a), as_value(b)
    return operation(a.value + b.value, (a, b),
                     lambda g: (unbroadcast(g, a.shape), unbroadcast(g, b.shape)))


def subtract(a, b) -> Value:
    a, b = as_value(a), as_value(b)
    return operation(a.value - b.value, (a, b),
                     lambda g: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape)))


def multiply(a, b) -> Value:
    a, b = as_value(a), as_value(b)
    return operation(a.value * b.value, (a, b), lambda g: (unbroadcast(g * b.value, a.shape),
                                                           unbroadcast(g * a.value, b.shape)))


def matmul(a, b) -> Value:
    """a (N, D) @ b (D, M): d a = g @ b.T, d b = a.T @ g."""
    a, b = as_value(a), as_value(b)
    return operation(a.value @ b.value, (a, b), lambda g: (g @ b.value.T, a.value.T @ g))


def relu(a) -> Value:
    a = as_value(a)
    return operation(np.maximum(a.value, 0), (a,), lambda g: (g * (a.value > 0),))


def exp(a) -> Value:
    a = as_value(a)
    result = np.exp(a.value)
    return operation(result, (a,), lambda g: (g * result,))


def log(a) -> Value:
    a = as_value(a)
    return operation(np.log(a.value), (a,), lambda g: (g / a.value,))


def reduce_sum(a, axis=None) -> Value:
    """The sum over `axis` (None: all); each input entry gets the gradient of its sum."""
    a = as_value(a)

    def backward(g):
        g = g if axis is None else np.expand_dims(g, axis)
        return (np.broadcast_to(g, a.shape),)
    return operation(a.value.sum(axis=axis), (a,), backward)


def reduce_mean(a, axis=None) -> Value:
    """The mean over `axis` (an int, or None: all): the sum times 1 / count."""
    a = as_value(a)
    count = a.value.size if axis is None else a.shape[axis]
    return multiply(reduce_sum(a, axis), 1.0 / count)


def reduce_logsumexp(a) -> Value:
    """log(sum(exp(a), axis=1)) of a (N, K), shifted by each row's maximum so that no exp
    overflows; its gradient is softmax(a) per row."""
    a = as_value(a)
    top = a.value.max(axis=1, keepdims=True)
    shifted = np.exp(a.value - top)
    total = shifted.sum(axis=1, keepdims=True)
    return operation((top + np.log(total))[:, 0], (a,),
                     lambda g: (g[:, None] * shifted / total,))


def pick(a, labels) -> Value:
    """a[n, labels[n]] for every row n of a (N, K): (N,); the gradient goes to those entries."""
    a, rows = as_value(a), np.arange(len(labels))

    def backward(g):
        grad = np.zeros_like(a.value)
        grad[rows, labels] = g
        return (grad,)
    return operation(a.value[rows, labels], (a,), backward)


def softmax_cross_entropy(logits, labels) -> Value:
    """Mean over the batch of -log softmax(logits)[label] = logsumexp(row) - row[label]."""
    return reduce_mean(reduce_logsumexp(logits) - pick(logits, labels))
