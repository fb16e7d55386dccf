"""The bug zoo: mistakes students really make, each a small documented mutation of the code.

    python compare.py bugs [--json OUT]          # which check catches which bug (bugtable.py)
    python compare.py --inject conv_kernel_flipped --model tiny   # the localizer at work
    with planted(BUGS["dense_bias_mean"]): ...   # the NumPy side runs the mistake

A `Mutation` changes one thing of the readable code: a function or method is recompiled
from its own source with one or two lines edited (the `edits`, old -> new, shown as they
are), or a setting gets another value. `planted` applies a bug's mutations for the length
of a block: reference layer functions and the loss through `checks.substituted` (every
module that holds them), anything else where the code looks it up. Within the block every
NumPy model runs its readable layers (`scratch.layers`), where the mutations live.

Every bug runs its checks on the smallest zoo network that holds the mutated piece
(`Bug.model`). NumPy only: importing this file costs no TensorFlow.
"""
from __future__ import annotations

import __future__
import argparse
import contextlib
import dataclasses
import inspect
import math
import textwrap
from dataclasses import dataclass
from unittest import mock

from comparison.grading.checks import substituted
from comparison.grading.exercise import layer_names, reference_functions
from scratch import layers, losses, optim, residual
from scratch import model as scratch_model
from scratch.layer_classes import BatchNorm
from scratch.layer_shapes import batchnorm_formula
from scratch.registry import KINDS


@dataclass(frozen=True)
class Mutation:
    """One change: `owner.attribute` (owner a module, a class or a dict) recompiled from its
    source with each `old` text replaced by `new` (each must occur exactly once), or, without
    edits, replaced by `value`; `shown` (old, new) describes a value change for `diff`."""

    owner: object
    attribute: str
    edits: tuple[tuple[str, str], ...] = ()
    value: object = None
    shown: tuple[str, str] | None = None

    def original(self):
        return self.owner[self.attribute] if isinstance(self.owner, dict) else getattr(
            self.owner, self.attribute)

    def mutant(self):
        """The mutated function (or the new value)."""
        if not self.edits:
            return self.value
        function = self.original()
        source = textwrap.dedent(inspect.getsource(function))
        for old, new in self.edits:
            if source.count(old) != 1:
                raise ValueError(f"{function.__qualname__}: {old!r} occurs {source.count(old)} "
                                 "times in its source, expected once")
            source = source.replace(old, new)
        namespace = {}
        code = compile(source, f"<{function.__qualname__}, mutated>", "exec",
                       flags=__future__.annotations.compiler_flag)  # as in the module
        exec(code, dict(function.__globals__), namespace)  # noqa: S102 - our own source
        return namespace[function.__name__]

    def diff(self) -> list[str]:
        """The change as "- old" / "+ new" lines."""
        if not self.edits:
            old, new = self.shown or (f"{self.attribute} = {self.original()!r}",
                                      f"{self.attribute} = {self.value!r}")
            return [f"- {old}", f"+ {new}"]
        return [line for old, new in self.edits for line in (f"- {old}", f"+ {new}")]


@dataclass(frozen=True)
class Bug:
    """A mistake: its name, the zoo network its checks run on, what the student did."""

    name: str
    model: str
    mistake: str
    mutations: tuple[Mutation, ...]


def edit(owner, attribute, *edits) -> Mutation:
    """A mutation of a function or method by text edits, each an (old, new) pair."""
    return Mutation(owner, attribute, tuple(edits))


def per_activation_batchnorm() -> tuple[Mutation, ...]:
    """BatchNorm normalising each activation (h, w, c) over the batch alone, with a gamma and
    a beta per activation: the dense layer's BatchNorm applied to a conv layer's output."""
    kind = KINDS["batchnorm"]
    return (
        Mutation(KINDS, "batchnorm", value=dataclasses.replace(
            kind, param_shapes=lambda spec, shape: {"gamma": shape, "beta": shape},
            formula=lambda spec, shape, p: batchnorm_formula(spec, (math.prod(shape),), p),
            make_numpy=lambda spec, p, ctx: BatchNorm(p["gamma"], ctx.dtype, name=ctx.name)),
            shown=('KINDS["batchnorm"]: gamma and beta of shape (C,)',
                   'KINDS["batchnorm"]: gamma and beta of shape (H, W, C)')),
        edit(layers, "batchnorm_forward", ("axes = tuple(range(x.ndim - 1))", "axes = (0,)")),
        edit(layers, "batchnorm_backward", ("axes = tuple(range(dout.ndim - 1))", "axes = (0,)"),
             ("m = xhat.size // xhat.shape[-1]", "m = len(xhat)")))


BUGS: dict[str, Bug] = {bug.name: bug for bug in [
    Bug("conv_kernel_flipped", "tiny",
        "conv2d's input gradient uses the kernel rotated by 180 degrees (true convolution's "
        "rule, but Keras's forward pass is a cross-correlation: each tap uses its own weight)",
        (edit(layers, "conv2d_backward",
              ("dout @ kernel[i, j].T", "dout @ kernel[kh - 1 - i, kw - 1 - j].T")),)),
    Bug("same_pad_wrong_side", "lenet",
        "'same' padding's gradient cut to size from the top-left corner: the top and left "
        "padding rows stay in, real rows at the bottom and right are dropped",
        (edit(layers, "conv2d_backward", ("unpad(dxp, pads)",
                                          "dxp[:, :x_shape[1], :x_shape[2]]")),)),
    Bug("maxpool_all_tied_max", "tiny",
        "max pooling's gradient goes to every entry equal to the window's maximum instead of "
        "the first one only (TensorFlow's rule)",
        (edit(layers, "maxpool2d_backward",
              ("first_max[..., None] == np.arange(windows.shape[-1])",
               "windows == windows.max(axis=-1, keepdims=True)")),)),
    Bug("avgpool_not_divided", "lenet",
        "average pooling's gradient copies dout to the window without the 1/p^2 of the mean",
        (edit(layers, "avgpool2d_backward", ("(dout / count)", "dout")),)),
    Bug("dropout_unscaled", "convnet",
        "dropout's backward pass multiplies by the 0/1 mask, without the forward pass's "
        "1/(1 - rate) scale",
        (edit(layers, "dropout_backward", ("dout * cache", "dout * (cache != 0)")),)),
    Bug("bn_var_m_minus_1", "best",
        "BatchNorm divides the batch variance by M - 1 (np.var(ddof=1), the unbiased "
        "estimate) instead of M as tf.nn.moments does",
        (edit(layers, "batchnorm_forward",
              ("var = ((x - mean) ** 2).mean(axis=axes)",
               "var = ((x - mean) ** 2).sum(axis=axes) / (x.size // x.shape[-1] - 1)")),)),
    Bug("bn_no_mean_term", "best",
        "BatchNorm's backward pass forgets that the batch mean depends on x: the -dbeta/M "
        "term is missing",
        (edit(layers, "batchnorm_backward",
              ("dout - dbeta / m - xhat * dgamma / m", "dout - xhat * dgamma / m")),)),
    Bug("bn_per_activation", "best",
        "BatchNorm after a conv layer normalises each activation over the batch alone, with "
        "a gamma and beta per activation instead of per channel",
        per_activation_batchnorm()),
    Bug("bn_momentum_swapped", "best",
        "BatchNorm's moving averages give the new batch the weight `momentum` (PyTorch's "
        "convention, 0.1 there) instead of 1 - momentum (Keras's 0.99 keeps 99% of the old)",
        (edit(layers, "moving_average_update",
              ("moving *= moving.dtype.type(momentum)",
               "moving *= moving.dtype.type(1 - momentum)"),
              ("batch * moving.dtype.type(1 - momentum)",
               "batch * moving.dtype.type(momentum)")),)),
    Bug("bn_epsilon_1e-5", "best",
        "BatchNorm's epsilon is 1e-5 (PyTorch's default) instead of Keras's 1e-3",
        (Mutation(layers, "BN_EPSILON", value=1e-5),)),
    Bug("l2_grad_without_2", "tiny",
        "the gradient of the L2 penalty l2 * sum(w^2) taken as l2 * w, without the factor 2",
        (edit(scratch_model, "l2_penalty", ("(2 * l2) * kernel", "l2 * kernel")),)),
    Bug("l2_on_output_layer", "tiny",
        "the L2 penalty also on the output layer's kernel, which Keras's model leaves out",
        (edit(scratch_model, "make_layer", ("kind.regularizable and spec.regularize",
                                    "kind.regularizable")),)),
    Bug("dense_bias_mean", "tiny",
        "the dense bias gradient is the mean of dout over the batch instead of its sum (dout "
        "already carries the loss's 1/N)",
        (edit(layers, "dense_backward",
              ('"bias": dout.sum(axis=0)', '"bias": dout.mean(axis=0)')),)),
    Bug("ce_without_1_over_n", "tiny",
        "the loss is the batch mean but its gradient is that of the sum: softmax - target, "
        "without the 1/N",
        (edit(losses, "softmax_cross_entropy",
              ("dlogits /= (sum_exp * n)[:, None]", "dlogits /= sum_exp[:, None]"),
              ("label_smoothing / (k * n)", "label_smoothing / k"),
              ("-= (1 - label_smoothing) / n", "-= 1 - label_smoothing")),)),
    Bug("smoothing_term_lost", "tiny",
        "label smoothing's gradient keeps the (1 - s) on the true class but drops the s/K "
        "that every class's target gets",
        (edit(losses, "softmax_cross_entropy",
              ("dlogits -= label_smoothing / (k * n)", "pass")),)),
    Bug("adam_eps_inside_sqrt", "tiny",
        "Adam divides by sqrt(v + epsilon) instead of sqrt(v) + epsilon",
        (edit(optim.Adam, "update",
              ("denom = np.sqrt(v)", "denom = np.sqrt(v + real(self.epsilon))"),
              ("denom += real(self.epsilon)", "pass")),)),
    Bug("adam_uncorrected", "tiny",
        "Adam without the bias correction: the step is lr * m / (sqrt(v) + eps), so the first "
        "steps, while m and v still lean towards their zero start, are off",
        (edit(optim.Adam, "update",
              ("real(self.learning_rate) * np.sqrt(real(1) - real(self.beta_2) ** step)",
               "real(self.learning_rate)"),
              ("/ (real(1) - real(self.beta_1) ** step))", ")")),)),
    Bug("flatten_nchw", "tiny",
        "flatten orders the values channel first (NCHW, PyTorch's layout) while Keras "
        "flattens NHWC: the dense layer after it sees its inputs shuffled",
        (edit(layers, "flatten_forward", ("x.reshape(len(x), -1)",
                                          "x.transpose(0, 3, 1, 2).reshape(len(x), -1)")),
         edit(layers, "flatten_backward",
              ("dout.reshape(cache)",
               "dout.reshape(cache[0], cache[3], cache[1], cache[2]).transpose(0, 2, 3, 1)")))),
    Bug("conv_stride_ignored", "normnet",
        "a strided convolution's input gradient is added into neighbouring pixels, as if the "
        "stride were 1, instead of into the pixels each tap saw (every second one)",
        (edit(layers, "conv2d_backward",
              ("tap(dxp, i, j, (ho, wo), strides)[...] +=",
               "tap(dxp, i, j, (ho, wo), (1, 1))[...] +=")),)),
    Bug("overlap_overwritten", "normnet",
        "overlapping pooling windows (3x3 at stride 2): a pixel in two windows keeps the "
        "gradient of the last one (=) instead of the sum of both (+=)",
        (edit(layers, "windows_to_image", ("[...] += dwindows", "[...] = dwindows")),)),
    Bug("layernorm_over_batch", "normnet",
        "LayerNorm takes its statistics over the batch axis (BatchNorm's) instead of over "
        "each position's channels",
        (edit(layers, "layernorm_forward", ("normalize_forward(x, -1)",
                                            "normalize_forward(x, 0)")),
         edit(layers, "layernorm_backward", ("xhat, std, -1)", "xhat, std, 0)")))),
    Bug("groupnorm_interleaved", "normnet",
        "GroupNorm's groups made of every G-th channel (a reshape to (C/G, G)) instead of G "
        "runs of C/G neighbouring channels (Keras's, a reshape to (G, C/G))",
        (edit(layers, "groupnorm_forward",
              ("x.reshape(n, h, w, groups, c // groups), (1, 2, 4)",
               "x.reshape(n, h, w, c // groups, groups), (1, 2, 3)")),
         edit(layers, "groupnorm_backward",
              ("normalize_backward(dxhat, xhat, std, (1, 2, 4))",
               "normalize_backward(dxhat, xhat, std, (1, 2, 3))")))),
    Bug("global_pool_undivided", "normnet",
        "global average pooling's gradient gives every pixel dout instead of dout / (H*W), "
        "the mean's share",
        (edit(layers, "globalavgpool2d_backward",
              ("dout[:, None, None, :] / (h * w)", "dout[:, None, None, :]")),)),
    Bug("residual_skip_dropped", "resnet",
        "the residual block's input gradient is the main path's alone: the skip path's "
        "share, which the addition sent to x as well, is dropped",
        (edit(residual, "residual_backward",
              ('grads["x"] = dx_main + dx_skip', 'grads["x"] = dx_main')),)),
    Bug("relu_grad_at_zero", "tiny",
        "ReLU's gradient is 1 at exactly 0 (x >= 0) where TensorFlow's is 0: a blank image "
        "region makes a conv unit's input exactly its bias, 0 at the start",
        (edit(layers, "relu_backward", ("dout * (x > 0)", "dout * (x >= 0)")),)),
]}


@contextlib.contextmanager
def readable_layers():
    """Every NumPy model built or switched within the block runs scratch.layers (fast=False)."""
    fast = scratch_model.Model.fast
    always_readable = property(fast.fget, lambda self, _: fast.fset(self, False))
    with mock.patch.object(scratch_model.Model, "fast", always_readable):
        yield


@contextlib.contextmanager
def planted(bug: Bug | str | None, console=None):
    """Within the block the NumPy side runs `bug` (a Bug or its name; None: nothing)."""
    if bug is None:
        yield
        return
    bug = BUGS[bug] if isinstance(bug, str) else bug
    references = {name for layer in layer_names() for name in reference_functions(layer)}
    functions = {m.attribute: m.mutant() for m in bug.mutations if m.attribute in references}
    with contextlib.ExitStack() as stack:
        for m in bug.mutations:
            if m.attribute not in references:
                patch = (mock.patch.dict(m.owner, {m.attribute: m.mutant()})
                         if isinstance(m.owner, dict) else
                         mock.patch.object(m.owner, m.attribute, m.mutant()))
                stack.enter_context(patch)
        stack.enter_context(substituted(functions))
        stack.enter_context(readable_layers())
        if console is not None:
            console.print(f"[bold red]bug planted[/] in the NumPy side: {bug.name}: {bug.mistake}")
        yield


def bug_argument(text: str) -> str:
    """argparse `type=` for a bug name: the name, or a one-line usage error."""
    if text not in BUGS:
        raise argparse.ArgumentTypeError(f"unknown bug {text!r}: expected one of "
                                         f"{', '.join(BUGS)}")
    return text
