"""Step 4 of the checks: the student's layer inside a small zoo network.

    with substituted({"conv2d_forward": f, ...}):   # scratch runs f wherever it ran ours
        model = build_model("tiny", fast=False)
    network_checks("conv2d", impl, files)          # gradient check + lockstep with Keras

`network_for(layer)` picks the network; `network_checks` builds the Keras model and its
NumPy twin (readable layers, fast=False, so the substituted functions are the ones that
run), checks the whole network's gradients against central differences
(scratch.gradcheck.model_gradient_errors, dropout on with a fixed mask), then trains
both LOCKSTEP_STEPS SGD steps on the same random batches (dropout off, as in
comparison.twin) and compares every loss and, afterwards, every weight.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable

import numpy as np

from comparison.grading.exercise import LOSS, layer_names, reference_functions
from comparison.grading.result import CheckResult, raised
from scratch import gradcheck, zoo

NETWORK_TOLERANCE = gradcheck.NETWORK_TOLERANCE  # 1e-7
LOCKSTEP_TOLERANCE = 1e-10  # relative, on every loss and every weight: float64 agrees to ~1e-13
LOCKSTEP_STEPS = 20
LOCKSTEP_BATCH = 8
GRADCHECK_BATCH = 2  # images in the network's gradient check (as tests/test_network_gradients)
NETWORK_ENTRIES = 6  # sampled entries per parameter array in the network's gradient check
# A power of two: Keras keeps the learning rate in a float32 variable, and 0.01 there is
# 0.01 * (1 - 2.2e-8), which alone would part the twins by ~1e-9 within 20 steps.
LEARNING_RATE = 2.0 ** -5
SEED_NETWORK = 3  # the network's random images and labels


@contextlib.contextmanager
def substituted(impl: dict[str, Callable]):
    """Within the block every module of scratch and keras_impl that holds a reference
    function of `impl`'s names (scratch.layers, scratch.residual, and scratch.model, ...
    for the loss) holds impl's function instead. Models built with fast=False run it
    (fast=True takes conv2d, maxpool2d, batchnorm and dense_backward from fast_layers)."""
    references = {name: fn for layer in layer_names()
                  for name, fn in reference_functions(layer).items()}
    unknown = sorted(set(impl) - set(references))
    if unknown:
        raise ValueError(f"no reference function named {', '.join(unknown)}")
    saved = []
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").split(".")[0] not in ("scratch", "keras_impl"):
            continue
        for name, function in impl.items():
            if getattr(module, name, None) is references[name]:
                saved.append((module, name, references[name]))
                setattr(module, name, function)
    try:
        yield
    finally:
        for module, name, function in saved:
            setattr(module, name, function)


def uses(model_name: str, layer: str) -> bool:
    return layer == LOSS or any(layer in (spec.kind, spec.activation)
                                for spec in zoo.architecture(model_name))


def network_for(layer: str) -> str:
    """The zoo model the layer is tried in: of those using it, an MLP before a CNN (cheaper),
    a network of plain layers before one with residual blocks (their whole-network check is
    the slowest), then the fewest parameters: fc128 for dense, relu, flatten and the loss,
    tiny for conv2d and maxpool2d, the LeNet for avgpool2d, convnet for dropout, best for
    batchnorm, normnet for layernorm, groupnorm and globalavgpool2d, resnet for residual."""
    candidates = [name for name in zoo.model_names() if uses(name, layer)]
    if not candidates:
        raise ValueError(f"no zoo model uses {layer!r}")
    return min(candidates, key=lambda name: (zoo.has_conv(name), uses(name, "residual"),
                                             zoo.count_params(name)))


def network_checks(layer: str, impl, files: set[str]) -> list[CheckResult]:
    """Step 4: the whole-network gradient check, then LOCKSTEP_STEPS SGD steps against Keras
    (dropout off there, as in comparison.twin), with the student's functions."""
    from comparison import twin

    try:
        name = network_for(layer)
    except ValueError as err:  # a kind no zoo network uses yet: nothing to train it in
        return [CheckResult("network checks", False, None, NETWORK_TOLERANCE, where=str(err))]
    grad_name = f"{name}: gradient check"
    step_name = f"{name}: {LOCKSTEP_STEPS} SGD steps = Keras"
    rng = np.random.default_rng(SEED_NETWORK)
    shape = zoo.INPUT_SHAPE if zoo.has_conv(name) else (28 * 28,)
    x, y = rng.random((GRADCHECK_BATCH, *shape)), rng.integers(0, zoo.NUM_CLASSES,
                                                               GRADCHECK_BATCH)
    batches = [(rng.random((LOCKSTEP_BATCH, *shape)),
                rng.integers(0, zoo.NUM_CLASSES, LOCKSTEP_BATCH)) for _ in range(LOCKSTEP_STEPS)]
    with substituted(impl):
        try:
            pair = twin.twin_pair(name, "float64", seed=0)
            pair.numpy_model.fast = False  # the readable layers: the student's functions
            arrays = gradcheck.model_gradient_errors(pair.numpy_model, x, y, NETWORK_ENTRIES)
            rows = [array_row(grad_name, arrays)]
        except Exception as err:  # noqa: BLE001
            return [raised(grad_name, err, files, NETWORK_TOLERANCE),
                    raised(step_name, err, files, LOCKSTEP_TOLERANCE)]
        try:
            rows.append(lockstep_row(step_name, pair, batches))
        except Exception as err:  # noqa: BLE001
            rows.append(raised(step_name, err, files, LOCKSTEP_TOLERANCE))
    return rows


def array_row(name: str, arrays) -> CheckResult:
    """The worst array's error beyond round-off (`scratch.gradcheck.beyond_roundoff`): what
    is left of |a - b| / max(|a|, |b|) after each entry's round-off allowance."""
    worst = max(arrays, key=lambda a: (np.inf if not a.checked or np.isnan(a.beyond_roundoff)
                                       else a.beyond_roundoff))
    passed = all(a.passed(NETWORK_TOLERANCE) for a in arrays)
    where = None
    if not passed:
        where = f"worst array {worst.layer}/{worst.param}" + (
            "" if worst.checked else ": no entry checked (every step crossed a kink, or "
                                     "the loss was NaN or inf: see the layer's own rows)")
    checked, sampled = sum(a.checked for a in arrays), sum(a.sampled for a in arrays)
    within = ", ".join(f"{a.layer} {a.param}[{entry.index}]" for a in arrays
                       for entry in a.allowed)
    largest = max((a.error for a in arrays if a.checked), default=np.nan)
    detail = (f"{len(arrays)} arrays, {checked} of {sampled} sampled entries checked; error "
              f"beyond round-off (largest error {largest:.1e}"
              + (f"; above {NETWORK_TOLERANCE:g}, passing only by their round-off allowance: "
                 f"{within})" if within else ")"))
    error = None if np.isnan(worst.beyond_roundoff) else worst.beyond_roundoff
    return CheckResult(name, passed, error, NETWORK_TOLERANCE, where=where, detail=detail)


def weight_errors(pair) -> dict[str, float]:
    """"layer/name" -> norm-wise relative difference of the two models' weights (moving
    statistics included); a bias feeding a BatchNorm, whose gradient is 0 and which holds
    only round-off, measured against the network's largest weight instead of itself."""
    from comparison import layout, twin

    pairs = layout.paired_weights(pair.keras_model, pair.numpy_model)
    zeros = {f"{i}/{key}" for i, key in pair.numpy_model.biases_before_batchnorm()}
    largest = max(float(np.abs(layer.params[key]).max()) for _, _, layer, key in pairs)
    return {f"{layer.name}/{key}": (
                float(np.abs(variable.numpy() - layer.params[key]).max()) / largest
                if label in zeros else twin.normwise_rel_error(variable.numpy(), layer.params[key]))
            for label, variable, layer, key in pairs}


def lockstep_row(name: str, pair, batches) -> CheckResult:
    """LOCKSTEP_STEPS SGD steps of both models: every loss, then every weight, compared."""
    from comparison import twin

    numpy_losses, keras_losses = twin.lockstep(pair, batches, "sgd", LEARNING_RATE,
                                               LOCKSTEP_STEPS)
    errors = {f"loss at step {step}: {a:.10g}, Keras {b:.10g}":
              abs(a - b) / max(abs(a), abs(b), gradcheck.TINY)
              for step, (a, b) in enumerate(zip(numpy_losses, keras_losses), start=1)}
    errors.update({f"{label} after {LOCKSTEP_STEPS} steps": error
                   for label, error in weight_errors(pair).items()})
    worst = max(errors, key=lambda k: np.inf if np.isnan(errors[k]) else errors[k])
    error = errors[worst]
    passed = bool(error <= LOCKSTEP_TOLERANCE)
    return CheckResult(name, passed, error, LOCKSTEP_TOLERANCE, where=None if passed else worst)
