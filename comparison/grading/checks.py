"""The layer checks: a student's forward/backward pair against the reference, central
differences, TensorFlow, and finally inside a small zoo network against Keras.

    results = layer_checks("conv2d", {"conv2d_forward": f, "conv2d_backward": g})
    with substituted(impl): ...   # scratch.layers runs the student's functions

`layer_checks` runs, in this order and never stopping early, on every case of
`comparison.grading.cases` (conv2d 'valid' and 'same', batchnorm in training and at
inference, ...):

1. shapes and dtypes of the forward output and of every gradient;
2. the forward output against the readable reference and against the Keras layer;
3. every gradient against central differences of the student's own forward pass, then
   against TensorFlow's GradientTape through the Keras layer;
4. the student's layer in a small zoo network (`network_for`): the whole-network gradient
   check of `scratch.gradcheck`, then 20 SGD steps side by side with Keras.

All in float64. Tolerances, on the largest relative error |a-b| / max(|a|, |b|) over the
entries (an entry below 1e-3 of the array's largest is measured against that, see
`diagnose.FLOOR`): forward values 1e-10 (the same arithmetic up to summation order; a
correct layer lands near 1e-13); central differences 1e-7, as scratch.gradcheck's
(`numeric_gradient`: h = 1e-3, Richardson-extrapolated where the layer is smooth, so
truncation and 1e-16 / h round-off stay near 1e-9); GradientTape 1e-10; the network: see
`comparison.grading.network`.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from comparison.grading import diagnose
from comparison.grading.cases import Case, cases, float32_case
from comparison.grading.exercise import reference_functions
from comparison.grading.network import network_checks, substituted
from comparison.grading.result import CheckResult, as_dict, raised, source_files
from scratch import gradcheck
from scratch.registry import KINDS

__all__ = ["CheckResult", "as_dict", "layer_checks", "substituted"]

FORWARD_TOLERANCE = 1e-10
NUMERIC_TOLERANCE = gradcheck.NETWORK_TOLERANCE  # 1e-7
TAPE_TOLERANCE = 1e-10
H = 1e-3  # central-difference step (see numeric_gradient)


# --- one case: the student's pair and the reference on the same inputs ----------------


class WrongReturnValue(Exception):
    """A student's function returned something of the wrong kind (checked before use)."""


def copies(inputs):
    return {name: value.copy() for name, value in inputs.items()}


def changed_names(given: dict, originals: dict) -> list[str]:
    return [name for name, value in given.items()
            if not np.array_equal(value, originals[name], equal_nan=True)]


def run_forward(case: Case, functions, inputs, changed: list | None = None):
    """(out, cache) of the case's forward pass on a copy of `inputs` (the names of the
    inputs it changed in place appended to `changed`)."""
    given = copies(inputs)
    result = case.forward(functions, given)
    if changed is not None:
        changed += changed_names(given, inputs)
    if not (isinstance(result, tuple) and len(result) == 2):
        returns = "(loss, dlogits)" if "logits" in case.inputs else "(out, cache)"
        kind = (f"a tuple of {len(result)} items" if isinstance(result, tuple)
                else type(result).__name__)
        raise WrongReturnValue(f"forward returned {kind}, expected {returns}")
    out = np.asarray(result[0])
    if out.dtype.kind not in "fiub":
        raise WrongReturnValue(f"forward's first result is {type(result[0]).__name__} "
                               f"{out.dtype}, expected an array of numbers")
    return out, result[1]


def run_backward(case: Case, functions, dout, cache, changed: list | None = None):
    given = dout.copy()
    grads = case.backward(functions, given, cache)
    if changed is not None and not np.array_equal(given, dout, equal_nan=True):
        changed.append("dout")
    if not isinstance(grads, dict):
        raise WrongReturnValue(f"backward returned {type(grads).__name__}, "
                               "expected a dict of gradients")
    arrays = {name: np.asarray(value) for name, value in grads.items()}
    for name, value in arrays.items():
        if value.dtype.kind not in "fiub":
            raise WrongReturnValue(f"backward's {name!r} is {type(grads[name]).__name__} "
                                   f"{value.dtype}, expected an array of numbers")
    return arrays


@dataclass
class Run:
    """A case run through the reference and the student's functions."""

    case: Case
    dout: np.ndarray
    expected_out: np.ndarray
    expected_grads: dict
    out: np.ndarray | None = None
    grads: dict | None = None
    forward_error: BaseException | None = None
    backward_error: BaseException | None = None
    layer: str = ""
    files: set = dataclasses.field(default_factory=set)  # the student's source files
    changed: list = dataclasses.field(default_factory=list)  # inputs changed in place


def run_case(layer: str, case: Case, impl, files: set[str]) -> Run:
    """Both implementations on the case's inputs; the backward passes get the same random
    dout. An exception of the student's is kept for the rows that needed the result."""
    reference = reference_functions(layer)
    expected_out, cache = run_forward(case, reference, case.inputs)
    dout = np.random.default_rng(7).standard_normal(expected_out.shape).astype(
        expected_out.dtype)  # float32 in a float32 case
    run = Run(case, dout, expected_out, run_backward(case, reference, dout, cache), layer=layer,
              files=files)
    try:
        run.out, cache = run_forward(case, impl, case.inputs, run.changed)
    except Exception as err:  # noqa: BLE001 - the student's code may raise anything
        run.forward_error = run.backward_error = err
        return run
    try:
        run.grads = run_backward(case, impl, dout, cache, run.changed)
    except Exception as err:  # noqa: BLE001
        run.backward_error = err
    return run


def shape_check(run: Run, name: str) -> CheckResult:
    """Shapes and dtypes of out and of every gradient against the reference's."""
    problems = []
    if run.forward_error is None:
        pairs = [("out", run.out, run.expected_out)]
        if run.backward_error is None:
            missing = [k for k in run.case.wrt if k not in run.grads]
            problems += [f"no gradient {k!r}" for k in missing]
            pairs += [(f"d{k}", run.grads[k], run.expected_grads[k])
                      for k in run.case.wrt if k in run.grads]
        for label, actual, expected in pairs:
            if actual.shape != expected.shape or actual.dtype != expected.dtype:
                problems.append(f"{label}: {actual.dtype} {actual.shape}, expected "
                                f"{expected.dtype} {expected.shape}")
                if actual.shape != expected.shape and actual.size == expected.size:
                    pattern = diagnose.diagnose(actual, expected, threshold=FORWARD_TOLERANCE)
                    if pattern:
                        problems[-1] += f" ({pattern})"
    error = run.forward_error or run.backward_error
    if error is not None and not problems:
        return raised(name, error, run.files)
    return CheckResult(name, not problems and error is None, None, None,
                       where="; ".join(problems) or None)


def unchanged_check(run: Run, name: str) -> CheckResult:
    """Inputs left as they were. A forward pass changing x or a parameter fails: x is the
    previous layer's output, which that layer's cache may hold (flatten returns a view),
    and the parameters are the model's weights. A backward pass changing dout passes with
    a warning: no layer reads its dout again."""
    forward = [k for k in run.changed if k != "dout"]
    if forward:
        return CheckResult(name, False, None, None, where=f"forward changed {', '.join(forward)}",
                           diagnosis="changed its input in place: in a network that array is "
                                     "another layer's (its cache, the weights); write a new "
                                     "array or work on a copy")
    where = ("warning: backward changed dout in place (harmless here, as no layer reads it "
             "again, but surprising to a caller)") if "dout" in run.changed else None
    error = run.forward_error or run.backward_error
    if error is not None and not run.changed:
        return raised(name, error, run.files)
    return CheckResult(name, True, None, None, where=where)


def compared(name: str, actual, expected, threshold: float, run: Run, plots, mask=None):
    """The row comparing two arrays: the largest relative error and, when it fails, the
    worst entry, a diagnosis, and a heatmap in `plots`."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        return CheckResult(name, False, None, threshold,
                           where=f"shape {actual.shape}, expected {expected.shape}",
                           diagnosis=diagnose.diagnose(actual, expected, threshold=threshold))
    if mask is not None and not mask.any():
        return CheckResult(name, False, None, threshold, where="no entry checked (all at kinks)")
    errors = diagnose.relative_errors(actual, expected)
    error = float(errors[mask].max() if mask is not None else errors.max(initial=0))
    result = CheckResult(name, error <= threshold, error, threshold)
    if mask is not None and not mask.all():
        result.detail = f"{int((~mask).sum())} of {mask.size} entries at a kink, left out"
    if not result.passed:
        result.where = diagnose.worst_entry(actual, expected, mask)
        result.diagnosis = diagnose.diagnose(actual, expected, threshold=threshold,
                                             batch=run.case.batch, image=run.case.image,
                                             mask=mask)
        if plots is not None and actual.ndim:
            slug = re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_")
            path = diagnose.heatmap(actual, expected, Path(plots) / f"{run.layer}_{slug}.png",
                                    f"{run.layer}: {name}", mask)
            result.detail = "\n".join(filter(None, [result.detail, f"heatmap: {path}"]))
    return result


def numeric_gradient(run: Run, impl, key: str, kinked: bool, curved: bool = False):
    """Central differences of sum(out * dout), out the student's forward, with respect to
    inputs[key], and the mask of the entries checked. D(h) = (f(x+h) - f(x-h)) / 2h.
    A smooth kind: Richardson's (4 D(h) - D(2h)) / 3, whose truncation error is O(h^4).
    A piecewise-linear kind: D(h), exact on a linear piece, and scratch.gradcheck's kink
    rule (a step crossed a kink iff out(x+h) + out(x-h) - 2 out(x) is not ~0: left out).
    Both (`kinked` and `curved`: the residual block, whose BatchNorms in training bend its
    linear pieces): Richardson, and the kink rule on the fourth difference
    out(x+2h) - 4 out(x+h) + 6 out(x) - 4 out(x-h) + out(x-2h), h^4 times the fourth
    derivative on a smooth piece (the second difference, h^2 times the second derivative,
    would mark every step), each entry at the largest step of gradcheck.CURVED_STEPS that
    crosses no kink (smaller steps cross fewer kinks but carry more round-off)."""
    inputs = copies(run.case.inputs)
    flat = inputs[key].reshape(-1)  # a view: writing flat[i] perturbs inputs[key]
    grad, smooth = np.zeros(flat.size), np.ones(flat.size, dtype=bool)
    steps = gradcheck.CURVED_STEPS if kinked and curved else (H,)

    def moved(i, change):
        old = flat[i]
        flat[i] = old + change
        out = run_forward(run.case, impl, inputs)[0]
        flat[i] = old
        return out

    def difference(i, change):
        plus, minus = moved(i, change), moved(i, -change)
        return (np.sum(plus * run.dout) - np.sum(minus * run.dout)) / (2 * change), plus, minus

    for i in range(flat.size):
        for step in steps:
            grad[i], plus, minus = difference(i, step)
            if kinked and not curved:
                bend = np.abs(plus + minus - 2 * run.out).max(initial=0)
            else:
                wide, plus2, minus2 = difference(i, 2 * step)
                grad[i] = (4 * grad[i] - wide) / 3
                bend = np.abs(plus2 + minus2 - 4 * (plus + minus) + 6 * run.out).max(initial=0)
            smooth[i] = not kinked or (
                bend <= gradcheck.KINK_TOLERANCE * np.abs(plus - minus).max(initial=0) + 1e-14)
            if smooth[i]:
                break
    return grad.reshape(inputs[key].shape), smooth.reshape(inputs[key].shape)


def tape_gradients(case: Case, dout, student_out):
    """Keras's output and GradientTape's gradients of sum(out * dout), {key: array}."""
    import tensorflow as tf

    x_key = case.wrt[0]
    x = tf.Variable(case.inputs[x_key], dtype=tf.float64)
    with tf.GradientTape() as tape:
        out = case.keras(x, student_out)
        total = tf.reduce_sum(out * tf.constant(dout, dtype=tf.float64))
    sources = {x_key: x, **{k: case.variables[k] for k in case.wrt[1:]}}
    grads = tape.gradient(total, list(sources.values()))
    return out.numpy(), {k: g.numpy() for k, g in zip(sources, grads)}


def case_checks(layer: str, runs: list[Run], float32_runs: list[Run], impl,
                plots) -> list[CheckResult]:
    """Steps 1 to 3 for every case, step by step (float32 runs: dtypes only)."""
    kinked = KINDS[layer].piecewise_linear if layer in KINDS else False
    curved = KINDS[layer].curved if layer in KINDS else False
    named = [(run, f" ({run.case.label})" if run.case.label else "") for run in runs]
    rows = [shape_check(run, "shapes, dtypes" + tag) for run, tag in named]
    rows += [shape_check(run, f"shapes, dtypes ({run.case.label})") for run in float32_runs]
    rows += [unchanged_check(run, "inputs left unchanged" + tag) for run, tag in named]
    keras_outputs = {}
    for run, tag in named:
        name = "out = reference" + tag
        rows.append(raised(name, run.forward_error, run.files, FORWARD_TOLERANCE)
                    if run.forward_error else
                    compared(name, run.out, run.expected_out, FORWARD_TOLERANCE, run, plots))
    for run, tag in named:
        name = f"out = Keras {run.case.keras_name}" + tag
        if run.forward_error:
            rows.append(raised(name, run.forward_error, run.files, FORWARD_TOLERANCE))
            continue
        try:
            keras_outputs[id(run)] = tape_gradients(run.case, run.dout, run.out)
        except Exception as err:  # noqa: BLE001 - e.g. a student's mask of the wrong shape
            rows.append(raised(name, err, run.files, FORWARD_TOLERANCE))
            continue
        rows.append(compared(name, run.out, keras_outputs[id(run)][0], FORWARD_TOLERANCE, run,
                             plots))
    for run, tag in named:
        for key in run.case.wrt:
            name = f"d{key} = central diff." + tag
            if run.backward_error or key not in run.grads:
                rows.append(failed_gradient(name, run, key, NUMERIC_TOLERANCE))
                continue
            if run.out.shape != run.expected_out.shape:  # sum(out * dout) is undefined
                rows.append(CheckResult(name, False, None, NUMERIC_TOLERANCE,
                                        where="the forward output's shape is wrong (see shapes)"))
                continue
            try:
                numeric, smooth = numeric_gradient(run, impl, key, kinked, curved)
            except Exception as err:  # noqa: BLE001
                rows.append(raised(name, err, run.files, NUMERIC_TOLERANCE))
                continue
            rows.append(compared(name, run.grads[key], numeric, NUMERIC_TOLERANCE, run, plots,
                                 None if smooth.all() else smooth))
    for run, tag in named:
        for key in run.case.wrt:
            name = f"d{key} = GradientTape" + tag
            if run.backward_error or key not in run.grads:
                rows.append(failed_gradient(name, run, key, TAPE_TOLERANCE))
            elif id(run) not in keras_outputs:
                rows.append(CheckResult(name, False, None, TAPE_TOLERANCE,
                                        where="the Keras forward pass failed (above)"))
            else:
                rows.append(compared(name, run.grads[key], keras_outputs[id(run)][1][key],
                                     TAPE_TOLERANCE, run, plots))
    return rows


def failed_gradient(name, run: Run, key, threshold) -> CheckResult:
    if run.backward_error:
        return raised(name, run.backward_error, run.files, threshold)
    return CheckResult(name, False, None, threshold, where=f"backward returned no {key!r}")


# --- all of it ---------------------------------------------------------------------------


def layer_checks(layer: str, impl: dict[str, Callable], *, plots=None,
                 network: bool = True) -> list[CheckResult]:
    """Every check of `layer` on the functions of `impl`, in order, never stopping early.

    impl maps the function names ("conv2d_forward", "conv2d_backward"; the loss:
    "softmax_cross_entropy") to the functions to grade; plots: a folder for heatmaps
    of failing arrays (None: none); network: False skips step 4."""
    missing = sorted(set(reference_functions(layer)) - set(impl))
    if missing:
        raise ValueError(f"{layer}: no {', '.join(missing)} given")
    files = source_files(impl)
    with threadpool_limits(limits=1, user_api="blas"):  # small arrays: a 2nd thread only waits
        layer_cases = cases(layer)
        runs = [run_case(layer, case, impl, files) for case in layer_cases]
        float32_runs = [run_case(layer, float32_case(layer_cases[0]), impl, files)]
        rows = case_checks(layer, runs, float32_runs, impl, plots)
        return rows + (network_checks(layer, impl, files) if network else [])
