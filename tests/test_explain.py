"""Explanations computed twice: scratch.explain (the engine's backward pass) against
keras_impl.explain (GradientTape), and what each method promises.

Agreement is judged like the gradient cross-checks (comparison.twin), in
float64 and elementwise: |a - b| / max(|a|, |b|, FLOOR * max|map|) <= 1e-7 for every
entry of every map. The floor keeps entries that are 0 in exact arithmetic (a pixel no
path reaches) from dividing round-off by round-off.

The twins get random biases, BatchNorm scales, shifts and moving statistics instead of
their initial zeros and ones, so that inference mode is not the identity and ReLUs and
max-pooling windows tie and switch the way they do in a trained network.
"""
import numpy as np
import pytest

from helpers import needs_mnist, run_command
from keras_impl import explain as keras_explain
from comparison import layout, twin
from scratch import explain as numpy_explain
from scratch.gradcheck import grad_rel_error, numeric_gradient

TOLERANCE = 1e-7
FLOOR = 1e-8
MODELS = ("fc128", "convnet", "best")
IMAGES = 4  # test digits explained per model
OPTIONS = {"integrated_gradients": {"steps": 16}}  # fewer steps: the agreement is per step


def agreement(a, b) -> float:
    """The largest elementwise relative error, entries measured against at least
    FLOOR times the map's largest magnitude."""
    largest = max(np.abs(a).max(), np.abs(b).max())
    return grad_rel_error(a, b, max(FLOOR * largest, 1e-300))


def randomised_pair(name):
    """A float64 twin pair whose biases and BatchNorm arrays are random, the same on both sides."""
    pair = twin.twin_pair(name, "float64", seed=0)
    rng = np.random.default_rng(1)
    for layer in pair.numpy_model.layers:
        for key, value in layer.params.items():
            if key in ("bias", "beta", "moving_mean"):
                value[...] = rng.normal(0.0, 0.1, value.shape)
            elif key in ("gamma", "moving_variance"):
                value[...] = rng.uniform(0.5, 1.5, value.shape)
    layout.to_keras(pair.numpy_model, pair.keras_model)
    return pair


@pytest.fixture(scope="module")
def test_digits():
    from keras_impl.data import load_mnist

    images, labels = load_mnist("test")
    return images[:IMAGES] / 255.0, labels[:IMAGES].astype(np.int64)


@pytest.fixture(scope="module", params=MODELS)
def pair(request):
    return randomised_pair(request.param)


@needs_mnist
@pytest.mark.parametrize("method", numpy_explain.METHODS)
def test_both_twins_give_the_same_maps_in_float64(pair, test_digits, method):
    images, labels = test_digits
    options = OPTIONS.get(method, {})
    ours, predicted = numpy_explain.explain(pair.numpy_model, images, method, **options)
    theirs, predicted_tf = keras_explain.explain(pair.keras_model, images, method, **options)
    np.testing.assert_array_equal(predicted, predicted_tf)
    # the predicted classes, and another class for every digit (its true one, or the next)
    other = np.where(labels != predicted, labels, (labels + 1) % 10)
    ours_other, _ = numpy_explain.explain(pair.numpy_model, images, method, other, **options)
    theirs_other, _ = keras_explain.explain(pair.keras_model, images, method, other, **options)
    assert ours.shape == theirs.shape == (IMAGES, 28, 28)
    assert np.abs(ours).max() > 0  # something to compare
    error = max(agreement(ours, theirs), agreement(ours_other, theirs_other))
    print(f"{pair.name} {method}: largest relative difference {error:.1e}")
    assert error <= TOLERANCE


@needs_mnist
def test_both_twins_give_the_same_activation_maps(pair, test_digits):
    ours = numpy_explain.activation_maps(pair.numpy_model, test_digits[0])
    theirs = keras_explain.activation_maps(pair.keras_model, test_digits[0])
    convs = [layer.name for layer in pair.numpy_model.layers if layer.name.startswith("conv2d")]
    assert list(ours) == list(theirs) == convs
    for name in ours:
        error = agreement(ours[name], theirs[name])
        print(f"{pair.name} activations {name}: largest relative difference {error:.1e}")
        assert error <= TOLERANCE


@needs_mnist
@pytest.mark.parametrize("name", ["fc128", "convnet"])
def test_the_backward_pass_gives_the_numeric_input_gradient(name, test_digits):
    """dS_c/dx of the backward pass against central differences on 30 pixels.

    A little noise on the digit: on its black background every max-pooling window ties,
    and central differences across a tie average two different one-sided slopes.
    """
    model = randomised_pair(name).numpy_model
    rng = np.random.default_rng(0)
    image = 0.9 * test_digits[0][:1] + 0.1 * rng.random((1, 28, 28))
    target = numpy_explain.resolve_targets(model, image)
    pixels = rng.choice(28 * 28, size=30, replace=False)
    numeric = numeric_gradient(lambda: numpy_explain.class_scores(model, image)[0, target[0]],
                               image, h=1e-6, indices=pixels)
    ours = numpy_explain.score_gradient(model, image, target).reshape(-1)[pixels]
    assert grad_rel_error(ours, numeric, 1e-8) < 1e-6


@needs_mnist
def test_integrated_gradients_add_up_to_the_score_difference(test_digits):
    """Completeness: the map sums to S(x) - S(black), up to the midpoint rule's error."""
    model = randomised_pair("convnet").numpy_model
    images = test_digits[0]
    maps, targets = numpy_explain.explain(model, images, "integrated_gradients", steps=256)
    rows = np.arange(len(images))
    difference = (numpy_explain.class_scores(model, images)[rows, targets]
                  - numpy_explain.class_scores(model, np.zeros_like(images))[rows, targets])
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), difference, rtol=1e-2)


def test_gradient_x_input_and_occlusion_are_zero_where_nothing_changes():
    model = randomised_pair("convnet").numpy_model
    images = np.zeros((2, 28, 28))
    images[:, 8:20, 12:16] = 1.0  # a bar, black elsewhere
    grad_x, targets = numpy_explain.explain(model, images, "gradient_x_input")
    assert np.all(grad_x[images == 0] == 0) and np.abs(grad_x).max() > 0
    # a black patch over black pixels changes nothing; the border columns never meet the bar
    hidden, _ = numpy_explain.explain(model, images, "occlusion", targets, fill=0.0)
    assert np.all(hidden[:, :, :6] == 0) and np.all(hidden[:, :, 22:] == 0)
    assert np.abs(hidden[:, 8:20, 12:16]).max() > 0


def test_patches_cover_every_pixel():
    for patch, stride in [(4, 2), (5, 3), (5, 5), (28, 1), (1, 1)]:
        _, masks = numpy_explain.occluded_copies(np.zeros((28, 28)), patch, stride, 0.5)
        assert masks.sum(axis=0).min() >= 1
        assert (masks.sum(axis=(1, 2)) == patch * patch).all()
    with pytest.raises(ValueError, match="stride <= patch"):
        numpy_explain.occluded_copies(np.zeros((28, 28)), 3, 4, 0.5)


@pytest.mark.parametrize("module", [numpy_explain, keras_explain])
def test_bad_arguments_are_refused(module):
    pair = twin.twin_pair("fc128", "float32")
    model = pair.numpy_model if module is numpy_explain else pair.keras_model
    images = np.zeros((2, 28, 28))
    with pytest.raises(ValueError, match="method 'gradcam'"):
        module.explain(model, images, "gradcam")
    with pytest.raises(ValueError, match="targets: expected 2 integers"):
        module.explain(model, images, "saliency", targets=[1])
    with pytest.raises(ValueError, match="classes 0..9"):
        module.explain(model, images, "saliency", targets=[1, 10])
    with pytest.raises(ValueError, match=r"images: expected shape \(N, 28, 28\)"):
        module.explain(model, np.zeros((2, 784)), "saliency")


# The real model (conftest.keras_fc128_run: fc128, 1 epoch, custom loop).

def test_test_command_explains_misclassified_and_own_digits(keras_fc128_run, tmp_path):
    from PIL import Image

    from keras_impl import test as keras_test

    model = keras_fc128_run["logdir"] / "model.keras"
    assert run_command(keras_test.main, "--model-path", model, "--explain",
                       "--plots", tmp_path / "test") == 0
    assert (tmp_path / "test" / "explanations.png").stat().st_size > 10_000
    digit = np.full((60, 40), 255, np.uint8)
    digit[10:50, 18:23] = 0  # a dark 1 on white paper
    Image.fromarray(digit).save(tmp_path / "one.png")
    assert run_command(keras_test.main, "--model-path", model, "--apply", tmp_path / "one.png",
                       "--explain", "--plots", tmp_path / "apply") == 0
    assert (tmp_path / "apply" / "explanations.png").stat().st_size > 5_000
