"""Whole-network gradient checks: every zoo model's hand-written backward pass against
central differences (scratch.gradcheck), and the check itself: it must fail a wrong
gradient and a check of nothing.

Thresholds: float64, ENTRIES random entries of every parameter array on BATCH random
images; the largest relative error of every array must stay below
gradcheck.NETWORK_TOLERANCE = 1e-7 (a wrong gradient lands at 1e-3 and above; the check's
round-off allowance, c eps / h per entry, is tested on its own below), every array
must have an entry checked, and at least MIN_CHECKED_SHARE of all the sampled entries must
be away from ReLU and max-pool kinks. (Per array the share varies: one entry of a first
conv layer's bias moves every ReLU downstream of its channel, in lenet over 1,500 of
them, and a step of 1e-4 crosses a kink in several of its six entries.)
"""
import math

import numpy as np
import pytest

from helpers import random_batch, with_first_array
from scratch import gradcheck, zoo
from scratch.gradcheck import NETWORK_TOLERANCE, model_gradient_errors
from scratch.model import build_model

pytestmark = pytest.mark.usefixtures("one_blas_thread")

L2 = 2.0 ** -10
ENTRIES = 12
BATCH = 2
MIN_CHECKED_SHARE = 0.5


# resnet: its check takes minutes (some 2,000 loss evaluations of a network of 38,282
# parameters); `python compare.py gradcheck --model resnet` and the residual exercise's
# network check (tests/test_exercises.py) run it, and its gradients are held to Keras's in
# float64 (tests/test_compare.py).
CENTRAL_DIFFERENCE_MODELS = [name for name in zoo.model_names() if name != "resnet"]


@pytest.mark.parametrize("name", CENTRAL_DIFFERENCE_MODELS)
@pytest.mark.parametrize("seed", [0, 1])
def test_backward_matches_central_differences(name, seed):
    """loss_and_grads (cross-entropy + L2, dropout on with a fixed mask, BatchNorm in
    training mode) vs central differences on every parameter array."""
    model = build_model(name, l2=L2, seed=seed).astype(np.float64)
    x, y = random_batch(BATCH, seed)
    rows = model_gradient_errors(model, x, y, entries=ENTRIES, seed=seed)
    assert [(row.layer, row.param) for row in rows] == [
        (model.layers[i].name, key) for i, key, _ in model.parameters()]
    for row in rows:
        assert row.checked > 0 and row.error < NETWORK_TOLERANCE, row
    sampled = sum(min(ENTRIES, value.size) for _, _, value in model.parameters())
    assert sum(row.checked for row in rows) >= MIN_CHECKED_SHARE * sampled, rows


@pytest.mark.parametrize("name", zoo.model_names())
def test_check_catches_a_one_percent_error_in_one_array(name):
    """The output layer's kernel gradient 1% too large: that array fails, the others do
    not. (The logits are linear in that kernel, so no step of it crosses a kink.)"""
    model = build_model(name, seed=0).astype(np.float64)
    x, y = random_batch(BATCH, 0)
    original = model.loss_and_grads
    index, key, _ = model.parameters()[-2]

    def wrong(*args, **kwargs):
        result = original(*args, **kwargs)
        model.layers[index].grads[key] *= 1.01
        return result

    model.loss_and_grads = wrong
    rows = model_gradient_errors(model, x, y, entries=6)
    broken = rows[-2]
    assert (broken.layer, broken.param) == (model.layers[index].name, "kernel")
    assert broken.checked == 6 and broken.beyond_roundoff > 1e-3 and not broken.passed()
    assert all(row.passed() for row in rows if row != broken)


def test_the_round_off_allowance_is_the_stated_bound_and_no_more():
    """An entry passes when |a - b| <= t max(|a|, |b|) + allowance: just inside the bound
    passes, just outside fails, whatever share of it is the allowance."""
    t = NETWORK_TOLERANCE
    a = np.array([1.0, 1.0, 1e-3, 1e-3, 0.0])
    allowance = np.array([0.0, 1e-6, 1e-9, 1e-6, 1e-10])
    bound = (t * a + allowance) / (1 - t)  # b = a + bound: |a - b| = t b + allowance
    for factor, passes in ((1 - 1e-6, True), (1 + 1e-6, False)):
        beyond = gradcheck.beyond_roundoff(a, a + factor * bound, allowance)
        assert ((beyond <= t) == passes).all(), (factor, beyond)
    assert (gradcheck.beyond_roundoff(a, a + 2 * bound, 0) > t).all()  # no allowance, no pass


def test_loss_roundoff_measures_the_noise_of_a_function():
    """A quadratic plus Gaussian noise of standard deviation s: eps near 3 s (six degrees of
    freedom); x is left as it was; the same quadratic without the noise: eps of its own
    float64 round-off, a few units in the last place of its value (8.66)."""
    x = np.array([0.3, -1.2])
    rng = np.random.default_rng(0)
    smooth = lambda: 2.3 + 0.7 * x[1] + 5.0 * x[1] ** 2  # noqa: E731
    for s in (1e-15, 1e-13):
        epsilon = gradcheck.loss_roundoff(lambda: smooth() + s * rng.standard_normal(), x, 1)
        assert 1.5 * s < epsilon < 6 * s, (s, epsilon)
    assert 0 < gradcheck.loss_roundoff(smooth, x, 1) < 4 * np.spacing(smooth())
    assert x.tolist() == [0.3, -1.2]


def test_an_error_just_beyond_the_bound_fails_in_a_network():
    """One entry of the output bias's gradient moved by three times its bound
    (tolerance * |a| + eps / h, eps as measured, h = 1e-4): that array fails."""
    model = build_model("fc8", seed=0).astype(np.float64)
    x, y = random_batch(BATCH, 0, model="fc8")
    honest = model_gradient_errors(model, x, y, entries=10)[-1]  # the bias: all 10
    assert honest.passed() and honest.within_allowance == 0
    index = model.parameters()[-1][0]
    original = model.loss_and_grads

    def wrong(*args, **kwargs):
        result = original(*args, **kwargs)
        bias = model.layers[index].grads["bias"]
        entry = np.argmax(np.abs(bias))
        bias[entry] += 3 * (NETWORK_TOLERANCE * abs(bias[entry])
                            + gradcheck.CENTRAL_ROUNDOFF * honest.roundoff / 1e-4)
        return result

    model.loss_and_grads = wrong
    broken = model_gradient_errors(model, x, y, entries=10)[-1]
    assert (broken.layer, broken.param) == (honest.layer, "bias") and broken.checked == 10
    assert broken.beyond_roundoff > NETWORK_TOLERANCE and not broken.passed()


def test_check_leaves_every_weight_and_moving_statistic_as_it_was():
    model = build_model("best", seed=0).astype(np.float64)
    before = [value.copy() for _, _, value in model.weights()]
    x, y = random_batch(BATCH, 0)
    model_gradient_errors(model, x, y, entries=1)
    for (_, _, value), saved in zip(model.weights(), before):
        assert np.array_equal(value, saved)


def test_a_bias_at_a_kink_is_left_out_and_a_check_of_nothing_fails():
    """fc1 on a black image: the hidden unit's input is exactly 0, the ReLU's kink.

    Its bias's central difference (relu(h) - relu(-h)) / 2h sees half the slope, the
    backward pass (TensorFlow's convention) none; the step crossed the kink, so the
    entry is left out, and the array's check of no entries fails at any tolerance.
    """
    model = build_model("fc1", seed=0).astype(np.float64)
    rows = {(row.layer, row.param): row for row in
            model_gradient_errors(model, np.zeros((1, *zoo.INPUT_SHAPE)), np.array([3]))}
    bias = rows["dense_1", "bias"]
    assert bias.checked == 0 and math.isnan(bias.error)
    assert not bias.passed(math.inf)
    assert rows["dense_1", "kernel"].checked == 784  # black pixels: no step moves the unit
    assert all(row.passed() for key, row in rows.items() if key != ("dense_1", "bias"))


class Tanh:
    """A smooth activation for the test below (not a zoo layer): no kink anywhere."""

    name, params, grads, non_trainable, regularized = "tanh", {}, {}, (), False

    def forward(self, x, training=False):
        self.out = np.tanh(x)
        return self.out

    def backward(self, dout):
        return dout * (1 - self.out ** 2)


def test_a_network_without_piecewise_linear_layers_checks_every_sampled_entry(monkeypatch):
    """Dense -> tanh -> Dense: the logits are curved in every weight, so a kink test would
    mark every step (the bug: 0 entries checked, reported as 0.0). Without a ReLU or max
    pooling in the architecture there is no kink, and every sampled entry is checked."""
    monkeypatch.setitem(zoo.ARCHITECTURES, "smooth",
                        [zoo.FLATTEN, zoo.dense(16, activation=None), zoo.logits()])
    model = build_model("smooth", l2=L2, seed=0).astype(np.float64)
    model.layers.insert(2, Tanh())
    assert not gradcheck.has_kinks(model)
    x, y = random_batch(BATCH, 0)
    rows = model_gradient_errors(model, x, y, entries=ENTRIES)
    assert [row.checked for row in rows] == [ENTRIES, ENTRIES, ENTRIES, 10]
    assert all(row.error < NETWORK_TOLERANCE for row in rows), rows
    assert gradcheck.has_kinks(build_model("fc16"))


def test_zoo_models_with_relu_or_pooling_have_kinks():
    for name in zoo.model_names():
        assert gradcheck.has_kinks(build_model(name)), name


def test_command_line_passes_a_correct_engine(capsys):
    assert gradcheck.main(["tiny", "--entries", "3"]) == 0
    out = capsys.readouterr().out
    assert "pass" in out and "FAIL" not in out and "nothing checked" not in out


def test_command_line_fails_a_check_of_nothing(monkeypatch, capsys):
    monkeypatch.setattr(gradcheck, "model_gradient_errors",
                        with_first_array(gradcheck.model_gradient_errors, checked=0,
                                         error=math.nan))
    assert gradcheck.main(["tiny", "--entries", "3"]) == 1
    out = capsys.readouterr().out
    assert "nothing checked" in out and "FAIL: 1 arrays" in out


def test_command_line_names_each_entry_passing_by_its_allowance(monkeypatch, capsys):
    entry = gradcheck.AllowedEntry(index=3, error=1.6e-7, allowance=6.0e-7)
    monkeypatch.setattr(gradcheck, "model_gradient_errors",
                        with_first_array(gradcheck.model_gradient_errors, allowed=(entry,)))
    assert gradcheck.main(["tiny", "--entries", "3"]) == 0
    out = capsys.readouterr().out
    assert "*" in out  # the marked error
    assert "conv2d_0 kernel[3]: 1.6e-07 (allowance 6.0e-07)" in " ".join(out.split())
