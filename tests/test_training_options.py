"""Label smoothing and the cosine learning-rate schedule, the same in both implementations."""

import numpy as np
import pytest

from helpers import MNIST_DIR, needs_mnist
from scratch.gradcheck import grad_rel_error, numeric_gradient
from scratch.losses import softmax_cross_entropy
from scratch.optim import CosineDecay, make_optimizer


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_smoothed_cross_entropy_gradient(smoothing):
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((6, 10)), rng.integers(0, 10, 6)
    _, dlogits = softmax_cross_entropy(logits, labels, smoothing)
    numeric = numeric_gradient(lambda: softmax_cross_entropy(logits, labels, smoothing)[0],
                               logits)
    # With smoothing, softmax - s/K can cancel to ~0 for a wrong class, where the numeric
    # slope is mostly round-off (~2e-11 = 1e-16 * loss / h): those are checked absolutely.
    large = np.abs(numeric) > 1e-3
    assert large.sum() > 40
    assert grad_rel_error(dlogits[large], numeric[large]) < 1e-7
    assert np.max(np.abs(dlogits - numeric)[~large], initial=0) < 1e-10
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    target = (1 - smoothing) * np.eye(10)[labels] + smoothing / 10
    np.testing.assert_allclose(dlogits, (probs - target) / 6, rtol=1e-12, atol=1e-15)


def test_smoothed_cross_entropy_by_definition():
    """-sum(target * log softmax) with target = (1 - s) onehot + s / K, written out."""
    rng = np.random.default_rng(1)
    logits, labels, s = rng.standard_normal((5, 10)), rng.integers(0, 10, 5), 0.2
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    target = np.full((5, 10), s / 10) + (1 - s) * np.eye(10)[labels]
    loss, _ = softmax_cross_entropy(logits, labels, s)
    assert loss == pytest.approx(np.mean(-(target * log_p).sum(axis=1)), rel=1e-12)


def test_smoothing_out_of_range():
    with pytest.raises(ValueError, match="label_smoothing"):
        softmax_cross_entropy(np.zeros((2, 10)), np.array([0, 1]), 1.0)


def test_keras_smoothed_loss_equals_numpy():
    from keras_impl.train import make_loss_fn

    rng = np.random.default_rng(2)
    logits = rng.standard_normal((8, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 8).astype(np.int32)
    for s in (0.0, 0.1):
        ours = softmax_cross_entropy(logits.astype(np.float64), labels, s)[0]
        assert float(make_loss_fn(s)(labels, logits)) == pytest.approx(ours, rel=1e-6)


def test_cosine_schedule_shape():
    schedule = CosineDecay.for_run(0.01, epochs=4, steps_per_epoch=10, warmup_epochs=1)
    assert (schedule.warmup_steps, schedule.decay_steps) == (10, 30)
    assert schedule(0) == 0 and schedule(5) == pytest.approx(0.005)
    assert schedule(10) == pytest.approx(0.01)  # the peak, right after warmup
    assert schedule(25) == pytest.approx(0.005)  # half way down the cosine
    assert schedule(40) == pytest.approx(0) and schedule(100) == pytest.approx(0)
    rates = [schedule(step) for step in range(10, 41)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("warmup", [0, 7])
def test_cosine_schedule_equals_keras(warmup):
    from keras_impl.optimizers import keras_schedule

    ours = CosineDecay(0.003, decay_steps=40, warmup_steps=warmup, alpha=0.1)
    theirs = keras_schedule(ours)
    for step in range(0, 60, 3):
        assert float(theirs(step)) == pytest.approx(ours(step), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_scheduled_trajectory_follows_keras(name):
    """Twelve float32 steps with the schedule on both sides (warmup, then decay): the
    weights agree to float32 rounding of the learning rate."""
    import keras
    from keras_impl import optimizers

    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((4, 3)).astype(np.float32)
    grads = rng.standard_normal((12, 4, 3)).astype(np.float32)
    schedule = CosineDecay(0.05, decay_steps=8, warmup_steps=4)
    keras_opt = optimizers.make_optimizer(name, schedule=schedule)
    variable = keras.Variable(w0.copy())
    w, state = w0.copy(), None
    for step, g in enumerate(grads):
        keras_opt.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
        w, state = make_optimizer(name, schedule(step)).update(w, g, state)
        np.testing.assert_allclose(w, variable.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(w, w0)


def test_bad_schedule():
    with pytest.raises(ValueError, match="decay_steps"):
        CosineDecay(0.1, decay_steps=0)


@needs_mnist
def test_both_clis_seed_the_pipeline_alike():
    """comparison.scratch_train seeds TensorFlow as keras_impl.train does
    (keras.utils.set_random_seed), so the same --seed gives both the same shuffled,
    augmented batches."""
    import keras
    from keras_impl.augment import Augmentation
    from keras_impl.data import make_dataset, seed_tensorflow

    def first_batch():
        ds = make_dataset("train", 32, seed=5, limit=256, augment=Augmentation(),
                          data_dir=MNIST_DIR)
        return next(ds.as_numpy_iterator())

    keras.utils.set_random_seed(5)
    x_keras, y_keras = first_batch()
    seed_tensorflow(5)
    x_numpy, y_numpy = first_batch()
    np.testing.assert_array_equal(y_keras, y_numpy)
    np.testing.assert_array_equal(x_keras, x_numpy)
    seed_tensorflow(6)
    assert not np.array_equal(first_batch()[0], x_keras)

