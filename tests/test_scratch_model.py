"""scratch.model: zoo models built from the declarations, the input gradient, parameter
tables, learning, saving and loading. (Whole-network gradient checks of every zoo model:
tests/test_network_gradients.py.)"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import random_batch
from scratch import zoo
from scratch.gradcheck import grad_rel_error, numeric_gradient
from scratch.initializers import glorot_uniform, he_normal, he_uniform
from scratch.layer_classes import BatchNorm, Dropout
from scratch.model import CheckpointError, build_model, load_npz, save_npz
from scratch.losses import softmax_cross_entropy
from scratch.optim import SGD, Adam

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_COUNTS = {"fc128": 101_770, "mlp500": 545_810, "tiny": 1_765, "convnet": 34_826,
                   "cnn3": 438_026, "best": 198_122}
L2 = 2.0 ** -10
INPUT_GRAD_TOLERANCE = 1e-6  # the input-gradient check, same error measure

pytestmark = pytest.mark.usefixtures("one_blas_thread")  # small matrices


# --- architecture and parameter counts --------------------------------------------


@pytest.mark.parametrize("name", list(EXPECTED_COUNTS))
def test_parameter_counts_from_real_arrays(name):
    model = build_model(name)
    assert model.count_params() == EXPECTED_COUNTS[name]
    assert sum(row.count for row in model.param_table()) == EXPECTED_COUNTS[name]
    assert len(model.layers) == len(zoo.architecture(name))


@pytest.mark.parametrize("hidden", [1, 7, 32, 128, 1000])
def test_one_hidden_layer_mlp_has_795n_plus_10_parameters(hidden):
    assert build_model(f"fc{hidden}").count_params() == 795 * hidden + 10


def test_param_table_rows_show_the_formula_with_numbers():
    rows = build_model("convnet").param_table()
    assert [(r.layer, r.output_shape, r.formula) for r in rows] == [
        ("conv2d_0", (26, 26, 32), "3*3*1*32 + 32 = 320"),
        ("maxpool2d_1", (13, 13, 32), "0 (no weights)"),
        ("conv2d_2", (11, 11, 64), "3*3*32*64 + 64 = 18,496"),
        ("maxpool2d_3", (5, 5, 64), "0 (no weights)"),
        ("flatten_4", (1600,), "0 (5*5*64 = 1,600 values)"),
        ("dropout_5", (1600,), "0 (no weights)"),
        ("dense_6", (10,), "1600*10 + 10 = 16,010"),
    ]


def test_best_counts_trainable_parameters_and_moving_statistics_apart():
    """198,122 trained by the optimizer; Keras's count_params() adds BatchNorm's 640 moving
    means and variances (2 * (32 + 32 + 64 + 64 + 128)), which no gradient reaches."""
    model = build_model("best")
    assert model.count_params() == zoo.count_params("best") == 198_122
    assert model.count_non_trainable() == 2 * (32 + 32 + 64 + 64 + 128) == 640
    rows = {row.layer: row for row in model.param_table()}
    assert rows["batchnorm_1"].formula == "2*32 trainable (+ 2*32 moving stats)"
    assert rows["batchnorm_16"].count == 256 and rows["relu_17"].count == 0
    keys = [key for _, key, _ in model.weights()]
    assert keys.count("moving_mean") == keys.count("moving_variance") == 5
    assert not {"moving_mean", "moving_variance"} & {key for _, key, _ in model.parameters()}
    assert model.biases_before_batchnorm() == {(0, "bias"), (3, "bias"), (7, "bias"),
                                               (10, "bias"), (15, "bias")}


def test_optimizer_never_touches_the_moving_statistics():
    model = build_model("best")
    x, y = random_batch(8, 8)
    model.loss_and_grads(x, y)  # updates the moving statistics (training mode)
    moving = {(i, key): value.copy() for i, key, value in model.weights()
              if key.startswith("moving_")}
    assert all(not np.array_equal(value, np.zeros_like(value) if key == "moving_mean"
                                  else np.ones_like(value)) for (_, key), value in moving.items())
    model.apply_gradients(Adam())
    assert set(model.optimizer_states) == {(i, key) for i, key, _ in model.parameters()}
    for (i, key), value in moving.items():
        assert np.array_equal(model.layers[i].params[key], value), (i, key)
        assert key not in model.layers[i].grads


def test_training_without_dropout_keeps_batch_statistics():
    model = build_model("best", seed=2)
    x, _ = random_batch(6, 9)
    inference = model.forward(x)
    no_dropout = model.forward(x, training=True, dropout=False)
    assert np.array_equal(no_dropout, model.forward(x, training=True, dropout=False))
    assert not np.allclose(no_dropout, inference, atol=1e-3)  # batch, not moving, statistics
    assert not np.array_equal(no_dropout, model.forward(x, training=True))  # dropout back on


def test_param_table_catches_arrays_that_disagree_with_the_zoo():
    model = build_model("fc128")
    model.layers[2].params["kernel"] = np.zeros((128, 11), dtype=np.float32)
    model.layers[2].params["bias"] = np.zeros(11, dtype=np.float32)
    with pytest.raises(RuntimeError, match="dense_2"):
        model.param_table()


def test_parameters_in_keras_trainable_variables_order():
    model = build_model("tiny")
    assert [(i, key) for i, key, _ in model.parameters()] == [
        (0, "kernel"), (0, "bias"), (2, "kernel"), (2, "bias"),
        (5, "kernel"), (5, "bias"), (6, "kernel"), (6, "bias")]
    assert [layer.name for layer in model.layers] == [
        "conv2d_0", "maxpool2d_1", "conv2d_2", "maxpool2d_3", "flatten_4", "dense_5", "dense_6"]


def test_initialisation_keras_defaults_and_seeds():
    a, b, c = build_model("mlp500", seed=1), build_model("mlp500", seed=1), build_model("mlp500")
    for (_, _, wa), (_, _, wb), (_, _, wc) in zip(a.parameters(), b.parameters(), c.parameters()):
        assert wa.dtype == np.float32 and np.array_equal(wa, wb)
    kernel, bias = a.layers[1].params["kernel"], a.layers[1].params["bias"]
    assert not np.array_equal(kernel, c.layers[1].params["kernel"])
    assert not bias.any()
    limit = np.sqrt(6 / (784 + 500))
    assert np.abs(kernel).max() <= limit
    assert kernel.std() == pytest.approx(limit / np.sqrt(3), rel=0.01)


def test_he_initialisers():
    rng = np.random.default_rng(0)
    shape = (3, 3, 64, 128)  # fan_in 576
    uniform = he_uniform(rng, shape)
    assert np.abs(uniform).max() <= np.sqrt(6 / 576)
    normal = he_normal(rng, shape)
    std = np.sqrt(2 / 576)
    assert np.abs(normal).max() <= 2 * std / 0.87962566103423978  # truncated at 2 sigma
    assert normal.std() == pytest.approx(std, rel=0.02)
    assert glorot_uniform(rng, shape).std() < uniform.std()
    he_model = build_model("convnet", init="he_normal")
    glorot_model = build_model("convnet")
    assert he_model.layers[2].params["kernel"].std() > glorot_model.layers[2].params["kernel"].std()
    with pytest.raises(ValueError, match="init"):
        build_model("convnet", init="zeros")


def test_forward_shapes_and_input_checks():
    x, _ = random_batch(3, 0)
    mlp, cnn = build_model("fc128"), build_model("convnet")
    assert np.array_equal(mlp.forward(x), mlp.forward(x.reshape(3, 784)))
    assert cnn.forward(x).shape == (3, 10) and cnn.forward(x).dtype == np.float32
    with pytest.raises(ValueError, match=r"\(N, 28, 28, 1\)"):
        cnn.forward(x.reshape(3, 784))
    with pytest.raises(ValueError, match="got"):
        mlp.forward(np.zeros((3, 10)))
    with pytest.raises(KeyError, match="unknown model"):
        build_model("no_such_model")


@pytest.mark.parametrize("name", ["tiny", "convnet", "cnn3", "best"])
def test_relu_applied_after_pooling_changes_no_number(name):
    """The fast model runs conv -> ReLU -> pool (or a standalone ReLU -> pool) as ... -> pool
    -> ReLU; compare with a fast copy that takes the textbook order: same logits, loss and
    gradients, bit for bit (training mode without dropout: BatchNorm on batch statistics)."""
    fused = build_model(name, seed=1, l2=L2)
    textbook = fused.astype(np.float32)
    pairs = [(a, b) for a, b in zip(textbook.layers, textbook.layers[1:])
             if getattr(b, "relu_after_pooling", False)]
    assert len(pairs) == sum(spec.kind == "maxpool2d" for spec in zoo.architecture(name))
    assert all(a.relu_in_next_layer for a, _ in pairs)
    for conv, pool in pairs:
        conv.relu_in_next_layer = pool.relu_after_pooling = False
    x, y = random_batch(4, 7)
    loss_a, logits_a = fused.loss_and_grads(x, y, dropout=False)
    loss_b, logits_b = textbook.loss_and_grads(x, y, dropout=False)
    assert loss_a == loss_b and np.array_equal(logits_a, logits_b)
    for layer_a, layer_b in zip(fused.layers, textbook.layers):
        for key in layer_a.grads:
            assert np.array_equal(layer_a.grads[key], layer_b.grads[key]), (layer_a.name, key)


def test_dropout_active_only_in_training():
    model = build_model("convnet")
    x, _ = random_batch(4, 1)
    assert np.array_equal(model.forward(x), model.forward(x))
    assert not np.array_equal(model.forward(x, training=True), model.forward(x, training=True))
    assert all(layer.rng is model.rng for layer in model.layers if isinstance(layer, Dropout))


def test_l2_adds_penalty_and_gradient_on_hidden_kernels():
    x, y = random_batch(4, 2)
    plain = build_model("fc128", seed=3).astype(np.float64)
    decayed = build_model("fc128", seed=3, l2=0.01).astype(np.float64)
    loss0, _ = plain.loss_and_grads(x, y)
    loss1, _ = decayed.loss_and_grads(x, y)
    hidden, output = plain.layers[1], plain.layers[2]
    assert loss1 - loss0 == pytest.approx(0.01 * np.sum(hidden.params["kernel"] ** 2), rel=1e-12)
    np.testing.assert_allclose(decayed.layers[1].grads["kernel"] - hidden.grads["kernel"],
                               0.02 * hidden.params["kernel"], rtol=1e-9, atol=1e-15)
    # The output (logits) layer is not decayed, and no bias is.
    np.testing.assert_array_equal(decayed.layers[2].grads["kernel"], output.grads["kernel"])
    for a, b in zip(plain.layers[1:], decayed.layers[1:]):
        np.testing.assert_array_equal(b.grads["bias"], a.grads["bias"])


@pytest.mark.parametrize("name", ["fc128", "convnet", "best"])
@pytest.mark.parametrize("fast", [True, False])
def test_backward_input_gradient_matches_central_differences(name, fast):
    """Model.backward(..., input_grad=True) is dL/dx: central differences of the loss
    (float64, h = 1e-5, training mode without dropout) on 12 random pixels of two
    images. Pixels whose gradient is below 1% of the largest are measured against that
    1% (round-off); a sign or scale error anywhere fails."""
    model = build_model(name, seed=4, fast=fast).astype(np.float64)
    x, y = random_batch(2, 11)

    def loss():
        return softmax_cross_entropy(model.forward(x, training=True, dropout=False), y)[0]

    _, dlogits = softmax_cross_entropy(model.forward(x, training=True, dropout=False), y)
    dx = model.backward(dlogits, input_grad=True)
    assert dx.shape == x.shape
    pixels = np.random.default_rng(0).choice(x.size, 12, replace=False)
    numeric = numeric_gradient(loss, x, 1e-5, pixels)
    floor = 1e-2 * float(np.abs(dx).max())
    assert grad_rel_error(dx.reshape(-1)[pixels], numeric, floor) < INPUT_GRAD_TOLERANCE
    assert model.backward(dlogits) is None  # input_grad=False: no dL/dx


@pytest.mark.parametrize("name", list(EXPECTED_COUNTS))
def test_fast_and_readable_layers_train_to_the_same_weights(name):
    """Three SGD steps with momentum (L2, dropout on, BatchNorm in training mode) with
    fast=True and with fast=False from the same seed: every weight, BatchNorm's moving
    statistics included, equal to float64 rounding (1e-12 of the array's largest value).
    A bias feeding a BatchNorm has gradient 0 up to round-off (see
    Model.biases_before_batchnorm): on both paths it stays below 1e-12 in absolute value.
    (SGD, not Adam: Adam divides round-off gradients by their own size.)"""
    models = [build_model(name, seed=2, l2=L2, dtype=np.float64, fast=fast)
              for fast in (True, False)]
    assert [model.fast for model in models] == [True, False]
    assert not any(getattr(layer, "relu_in_next_layer", False) for layer in models[1].layers)
    optimizers = [SGD(learning_rate=0.1, momentum=0.9) for _ in models]
    for step in range(3):
        x, y = random_batch(8, 20 + step)
        losses = [model.loss_and_grads(x, y)[0] for model in models]
        assert losses[0] == pytest.approx(losses[1], rel=1e-12)
        for model, optimizer in zip(models, optimizers):
            model.apply_gradients(optimizer)
    round_off = models[0].biases_before_batchnorm()
    for (i, key, fast), (_, _, readable) in zip(*(model.weights() for model in models)):
        if (i, key) in round_off:
            assert max(np.abs(fast).max(), np.abs(readable).max()) < 1e-12, (i, key)
        else:
            assert np.abs(fast - readable).max() <= 1e-12 * np.abs(readable).max(), (i, key)


def test_the_fast_switch_sets_layers_and_fusion():
    model = build_model("convnet")
    conv, pool = model.layers[0], model.layers[1]
    assert conv.relu_in_next_layer and pool.relu_after_pooling
    model.fast = False
    assert not model.fast and not any(layer.fast for layer in model.layers)
    assert not conv.relu_in_next_layer and not pool.relu_after_pooling
    model.fast = True
    assert all(layer.fast for layer in model.layers) and conv.relu_in_next_layer


# --- learning -------------------------------------------------------------------------


@pytest.mark.parametrize("name, steps", [("fc128", 60), ("convnet", 60)])
def test_overfits_50_examples(name, steps):
    """50 random images with random labels: memorised to 100% (inference mode)."""
    x, y = random_batch(50, 4)
    x = x.astype(np.float32)
    model = build_model(name, seed=0)
    optimizer = Adam(learning_rate=0.01)
    losses = []
    for _ in range(steps):
        loss, _ = model.loss_and_grads(x, y)
        model.apply_gradients(optimizer)
        losses.append(loss)
    accuracy = np.mean(model.forward(x).argmax(axis=1) == y)
    assert accuracy == 1.0, f"accuracy {accuracy} after {steps} steps, losses {losses[::10]}"
    assert losses[-1] < 0.1 * losses[0]


def test_apply_gradients_keeps_one_state_per_parameter():
    model = build_model("fc128")
    x, y = random_batch(8, 5)
    model.loss_and_grads(x, y)
    before = [w.copy() for _, _, w in model.parameters()]
    model.apply_gradients(Adam())
    assert set(model.optimizer_states) == {(i, key) for i, key, _ in model.parameters()}
    assert all(state["step"] == 1 for state in model.optimizer_states.values())
    assert all(not np.array_equal(w, b) for (_, _, w), b in zip(model.parameters(), before))


def test_astype_copies():
    model = build_model("tiny")
    double = model.astype(np.float64)
    assert double.dtype == np.float64 and model.dtype == np.float32
    double.layers[0].params["kernel"][...] = 0
    assert model.layers[0].params["kernel"].any()


# --- saving and loading ---------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    model = build_model("convnet", l2=0.001, seed=5)
    x, _ = random_batch(3, 6)
    path = tmp_path / "convnet.npz"
    save_npz(model, path)
    loaded = load_npz(path)
    assert (loaded.name, loaded.l2) == ("convnet", 0.001)
    for (i, key, a), (j, key2, b) in zip(model.parameters(), loaded.parameters()):
        assert (i, key) == (j, key2) and a.dtype == b.dtype and np.array_equal(a, b)
    assert np.array_equal(model.forward(x), loaded.forward(x))
    assert [p.name for p in tmp_path.iterdir()] == ["convnet.npz"]  # no temporary left behind


def test_save_load_round_trip_keeps_the_moving_statistics(tmp_path):
    model = build_model("best", seed=3)
    x, y = random_batch(8, 10)
    model.loss_and_grads(x, y)  # moving statistics away from their initial 0 and 1
    path = tmp_path / "best.npz"
    save_npz(model, path)
    loaded = load_npz(path)
    assert [(i, key) for i, key, _ in loaded.weights()] == [
        (i, key) for i, key, _ in model.weights()]
    for (_, key, a), (_, _, b) in zip(model.weights(), loaded.weights()):
        assert a.dtype == b.dtype and np.array_equal(a, b), key
    assert np.array_equal(model.forward(x), loaded.forward(x))  # inference: moving statistics
    assert isinstance(loaded.layers[1], BatchNorm)


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    save_npz(build_model("fc8"), path)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        save_npz(build_model("fc8", seed=1), path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def bad_files(tmp_path):
    good = tmp_path / "good.npz"
    save_npz(build_model("fc16"), good)
    raw = good.read_bytes()
    files = {
        "missing": (tmp_path / "nope.npz", "no such file"),
        "text": (tmp_path / "text.npz", "not a valid .npz"),
        "truncated": (tmp_path / "truncated.npz", "not a valid .npz"),
        "npy": (tmp_path / "array.npy", ".npy"),
        "foreign": (tmp_path / "foreign.npz", "not a twinnet NumPy model"),
        "shape": (tmp_path / "shape.npz", "needs floats of shape"),
        "missing weight": (tmp_path / "partial.npz", "missing dense_2/bias"),
        "arch": (tmp_path / "arch.npz", "bad architecture"),
    }
    files["text"][0].write_text("hello\n")
    files["truncated"][0].write_bytes(raw[: len(raw) // 2])
    np.save(files["npy"][0], np.zeros(3))
    np.savez(files["foreign"][0], weights=np.zeros(3))
    arrays = dict(np.load(good))
    np.savez(files["shape"][0], **{**arrays, "dense_1/kernel": np.zeros((784, 15))})
    np.savez(files["missing weight"][0], **{k: v for k, v in arrays.items() if k != "dense_2/bias"})
    np.savez(files["arch"][0], **{**arrays, "arch": np.array("no_such_model")})
    return files


def test_load_npz_bad_files_give_one_line_errors(tmp_path):
    for kind, (path, expected) in bad_files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            load_npz(path)
        message = str(info.value)
        assert str(path) in message and expected in message and "\n" not in message, kind


def test_model_cli_bad_npz_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not numpy\n")
    result = subprocess.run([sys.executable, "-m", "scratch.model", "--file", str(bad)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: {bad}: not a valid .npz file" in result.stderr.strip().splitlines()[-1]


def test_model_cli_prints_tables(tmp_path):
    path = tmp_path / "tiny.npz"
    save_npz(build_model("tiny"), path)
    result = subprocess.run([sys.executable, "-m", "scratch.model", "fc128", "--file", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "101,770" in result.stdout and "1,765" in result.stdout
    assert "5*5*8*3 + 3 = 603" in result.stdout
