"""scratch.optim: SGD and Adam against steps worked out by hand, and against Keras itself."""
import numpy as np
import pytest

from scratch.optim import DEFAULT_LR, SGD, Adam, make_optimizer

W0 = [1.0, -2.0]
GRADS = [[0.5, 0.25], [0.5, 0.25], [-1.0, 0.5]]


def run(optimizer, grads=GRADS, w0=W0, dtype=np.float64):
    """Apply the gradients in turn to a copy of w0; returns (w after each step, last state)."""
    w = np.array(w0, dtype=dtype)
    state, history = None, []
    for g in grads:
        w_new, state = optimizer.update(w, np.array(g, dtype=dtype), state)
        assert w_new is w  # updated in place
        history.append(w.copy())
    return history, state


def test_plain_sgd_by_hand():
    history, state = run(SGD(learning_rate=0.1), GRADS[:2])
    np.testing.assert_allclose(history, [[0.95, -2.025], [0.90, -2.05]], rtol=1e-15)
    assert state is None


def test_sgd_momentum_by_hand():
    # m1 = -0.1*g = (-0.05, -0.025); m2 = 0.9*m1 - 0.1*g = (-0.095, -0.0475)
    # m3 = 0.9*m2 - 0.1*(-1, 0.5) = (0.0145, -0.09275)
    history, m = run(SGD(learning_rate=0.1, momentum=0.9))
    np.testing.assert_allclose(history, [[0.95, -2.025], [0.855, -2.0725], [0.8695, -2.16525]],
                               rtol=1e-14)
    np.testing.assert_allclose(m, [0.0145, -0.09275], rtol=1e-13)


def test_sgd_nesterov_by_hand():
    # Keras: m = 0.9 m - lr g;  w += 0.9 m - lr g
    # step 1: m = (-0.05, -0.025), w += (-0.095, -0.0475)
    # step 2: m = (-0.095, -0.0475), w += (-0.1355, -0.06775)
    history, _ = run(SGD(learning_rate=0.1, momentum=0.9, nesterov=True), GRADS[:2])
    np.testing.assert_allclose(history, [[0.905, -2.0475], [0.7695, -2.11525]], rtol=1e-14)


def test_adam_by_hand():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    history, state = run(Adam(learning_rate=lr))
    m = v = np.zeros(2)
    w = np.array(W0)
    for t, g in enumerate(np.array(GRADS), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        # Keras's form: bias corrections folded into the step size, epsilon outside
        w = w - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
        np.testing.assert_allclose(history[t - 1], w, rtol=1e-13)
    assert state["step"] == 3
    np.testing.assert_allclose(state["m"], m, rtol=1e-13)
    np.testing.assert_allclose(state["v"], v, rtol=1e-13)
    # first step moves every weight by ~lr against its gradient's sign
    first, _ = run(Adam(learning_rate=lr), GRADS[:1])
    np.testing.assert_allclose(first[0] - W0, [-lr, -lr], rtol=1e-4)


def test_states_are_per_parameter():
    opt = Adam()
    a, b = np.ones(3), np.ones((2, 2))
    _, state_a = opt.update(a, np.ones(3), None)
    _, state_b = opt.update(b, -np.ones((2, 2)), None)
    _, state_a = opt.update(a, np.ones(3), state_a)
    assert state_a["step"] == 2 and state_b["step"] == 1
    assert state_b["m"].shape == (2, 2)


@pytest.mark.parametrize("make", [lambda: SGD(learning_rate=-0.1), lambda: SGD(momentum=1.5),
                                  lambda: Adam(beta_1=1.0), lambda: Adam(epsilon=-1.0)])
def test_bad_hyperparameters(make):
    with pytest.raises(ValueError, match="expected a value in"):
        make()


# (optimizer, lr, momentum, nesterov) as the command lines' flags give them
SETTINGS = {"sgd": ("sgd", 0.1, 0.0, False), "momentum": ("sgd", 0.1, 0.9, False),
            "nesterov": ("sgd", 0.1, 0.9, True), "adam": ("adam", 0.01, 0.0, False)}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_same_trajectory_as_keras(name):
    """Ten float32 steps from the same weights and gradients, each side's optimizer from its
    factory: Keras's variables and ours are bit-for-bit equal (same operations in the same
    order, each rounded once)."""
    keras = pytest.importorskip("keras")
    from keras_impl import optimizers

    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((4, 3)).astype(np.float32)
    grads = rng.standard_normal((10, 4, 3)).astype(np.float32)
    ours, keras_opt = make_optimizer(*SETTINGS[name]), optimizers.make_optimizer(*SETTINGS[name])
    variable = keras.Variable(w0.copy())
    w, state = w0.copy(), None
    for g in grads:
        keras_opt.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
        w, state = ours.update(w, g, state)
        np.testing.assert_array_equal(w, np.asarray(variable.numpy()))
    assert not np.array_equal(w, w0)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_default_learning_rates_are_keras_defaults_on_both_sides(name):
    keras = pytest.importorskip("keras")
    from keras_impl import optimizers

    keras_own = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[name]()
    assert DEFAULT_LR[name] == pytest.approx(float(keras_own.learning_rate), rel=1e-7)
    assert make_optimizer(name).learning_rate == DEFAULT_LR[name]
    assert float(optimizers.make_optimizer(name).learning_rate) == \
        pytest.approx(DEFAULT_LR[name], rel=1e-7)


def test_factories_pass_every_setting_on():
    pytest.importorskip("keras")
    from keras_impl import optimizers

    assert make_optimizer("sgd", 0.2, 0.5, True) == SGD(0.2, 0.5, True)
    config = optimizers.make_optimizer("sgd", 0.2, 0.5, True).get_config()
    assert (config["momentum"], config["nesterov"]) == (0.5, True)
    assert config["learning_rate"] == pytest.approx(0.2)


@pytest.mark.parametrize("args, message", [(("adam", None, 0.9), "apply to sgd only"),
                                           (("adam", None, 0.0, True), "apply to sgd only"),
                                           (("rmsprop",), "expected sgd or adam")])
def test_factories_refuse_what_they_cannot_build(args, message):
    pytest.importorskip("keras")
    from keras_impl import optimizers

    for factory in (make_optimizer, optimizers.make_optimizer):
        with pytest.raises(ValueError, match=message):
            factory(*args)
