"""scratch.autodiff: the tape's gradients against tf.GradientTape in float64, on small
expressions (a value used twice, broadcasting) and on the course's MLP fc128, whose
gradients must also equal the hand-written backward pass of scratch.course_models.

Threshold: 1e-10 on the largest relative error |a-b| / max(|a|, |b|) (entries below 1e-8
of the largest gradient measured against that, comparison.twin.gradient_errors): both
sides do the same float64 arithmetic up to summation order, ~1e-14."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from comparison.twin import gradient_errors, keras_floatx
from keras_impl.model import FC128 as KerasFC128
from scratch import autodiff as ad
from scratch.course_models import FC128
from scratch.gradcheck import grad_rel_error

TOLERANCE = 1e-10


def tape_and_tf(function, *arrays):
    """(scratch.autodiff's gradients, tf.GradientTape's) of function(*inputs) w.r.t. each
    input; `function` is written once and runs on both kinds of input."""
    values = [ad.Value(a) for a in arrays]
    with ad.Tape() as tape:
        ours = tape.gradient(function(*values), values)
    variables = [tf.Variable(a, dtype=tf.float64) for a in arrays]
    with tf.GradientTape() as tf_tape:
        target = function(*variables)
    return ours, [g.numpy() for g in tf_tape.gradient(target, variables)]


def test_the_target_must_be_a_scalar():
    x = ad.Value(np.array([0.5, -1.5, 2.0]))
    with ad.Tape() as tape:
        y = x * x
    with pytest.raises(ValueError, match="expected a scalar loss"):
        tape.gradient(y, [x])


def test_used_twice_and_broadcast_against_gradienttape():
    rng = np.random.default_rng(0)
    x, row, column = rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal((4, 1))

    def total(x, row, column):
        y = x * row + column  # broadcast over rows and over columns
        z = y * y - x         # y and x each used twice
        return ad.reduce_sum(z) if isinstance(z, ad.Value) else tf.reduce_sum(z)

    ours, theirs = tape_and_tf(total, x, row, column)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert grad_rel_error(a, b) <= TOLERANCE
    y = x * row + column  # d/dx sum(y^2 - x) = 2 y row - 1, by hand
    assert grad_rel_error(ours[0], 2 * y * row - 1) <= TOLERANCE


def test_x_times_x_is_2x():
    x = np.array([0.5, -1.5, 2.0])
    ours, theirs = tape_and_tf(lambda v: ad.reduce_sum(v * v) if isinstance(v, ad.Value)
                               else tf.reduce_sum(v * v), x)
    np.testing.assert_array_equal(ours[0], 2 * x)
    assert grad_rel_error(ours[0], theirs[0]) <= TOLERANCE


def test_a_source_the_loss_does_not_use_gets_zeros_and_nothing_is_recorded_outside():
    a, b = ad.Value(np.ones(3)), ad.Value(np.ones(2))
    outside = a * 2.0  # no tape is recording
    with ad.Tape() as tape:
        loss = ad.reduce_sum(a * a)
    assert len(tape.records) == 2
    da, db, d_outside = tape.gradient(loss, [a, b, outside])
    np.testing.assert_array_equal(da, [2.0, 2.0, 2.0])
    assert not db.any() and not d_outside.any()


def test_fc128_against_gradienttape_and_the_hand_written_backward():
    rng = np.random.default_rng(1)
    x, y = rng.random((8, 784)), rng.integers(0, 10, 8)
    numpy_model = FC128(seed=0, dtype=np.float64)
    p = numpy_model.params
    names = [(layer, key) for layer in ("dense1", "dense2") for key in ("kernel", "bias")]

    values = {name: ad.Value(p[name[0]][name[1]]) for name in names}
    with ad.Tape() as tape:
        hidden = ad.relu(x @ values["dense1", "kernel"] + values["dense1", "bias"])
        logits = hidden @ values["dense2", "kernel"] + values["dense2", "bias"]
        loss = ad.softmax_cross_entropy(logits, y)
    ours = dict(zip(names, tape.gradient(loss, list(values.values()))))

    keras.utils.set_random_seed(0)
    with keras_floatx("float64"):
        keras_model = KerasFC128()
        keras_model(x.reshape(-1, 28, 28, 1)[:1])  # builds the weights
    for layer, key in names:
        getattr(getattr(keras_model, layer), key).assign(p[layer][key])
    with tf.GradientTape() as tf_tape:
        keras_logits = keras_model(tf.constant(x.reshape(-1, 28, 28, 1)))
        keras_loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, keras_logits, from_logits=True))
    variables = [getattr(getattr(keras_model, layer), key) for layer, key in names]
    theirs = dict(zip(names, (g.numpy() for g in tf_tape.gradient(keras_loss, variables))))

    hand_loss, _ = numpy_model.loss_and_grads(x, y)
    by_hand = {(layer, key): numpy_model.grads[layer][key] for layer, key in names}

    assert abs(float(loss.value) - float(keras_loss)) <= TOLERANCE * float(keras_loss)
    assert abs(float(loss.value) - hand_loss) <= TOLERANCE * hand_loss
    for other in (theirs, by_hand):
        elementwise, _ = gradient_errors({name: (ours[name], other[name]) for name in names})
        assert max(elementwise.values()) <= TOLERANCE, elementwise
