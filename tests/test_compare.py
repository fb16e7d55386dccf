"""compare.py: the same computation in both implementations, number for number."""
import json
import math

import numpy as np
import pytest
from rich.console import Console

import compare
from helpers import needs_mnist, random_batch, with_first_array
from comparison import layout, params, twin
from scratch import gradcheck, zoo


def test_layout_copies_every_weight_exactly():
    pair = twin.twin_pair("tiny", "float64")
    pairs = layout.paired_weights(pair.keras_model, pair.numpy_model)
    assert len(pairs) == len(pair.keras_model.weights) == 8
    for label, variable, layer, key in pairs:
        assert np.array_equal(variable.numpy(), layer.params[key]), label


def test_layout_copies_the_moving_statistics_both_ways():
    pair = twin.twin_pair("best", "float32")
    layer = pair.numpy_model.layers[4]
    layer.params["moving_mean"][...] = np.arange(32)
    layer.params["moving_variance"][...] = 2.0
    layout.to_keras(pair.numpy_model, pair.keras_model)
    keras_bn = pair.keras_model.arch_layers[4]
    assert np.array_equal(keras_bn.moving_mean.numpy(), np.arange(32))
    assert np.array_equal(keras_bn.moving_variance.numpy(), np.full(32, 2.0))
    keras_bn.moving_mean.assign(np.ones(32))
    layout.to_numpy(pair.keras_model, pair.numpy_model)
    assert np.array_equal(layer.params["moving_mean"], np.ones(32))
    assert len(layout.paired_weights(pair.keras_model, pair.numpy_model)) == len(
        pair.keras_model.weights) == len(pair.numpy_model.weights())


def test_float64_pair_is_float64_even_after_a_float32_build():
    # Keras fixes its global dtype policy the first time it is read; a float64 pair
    # built afterwards must still hold float64 weights and compute a float64 loss.
    twin.twin_pair("tiny", "float32")
    pair = twin.twin_pair("tiny", "float64")
    assert {w.dtype for w in pair.keras_model.weights} == {"float64"}
    assert pair.loss_fn.dtype == "float64"
    assert {p.dtype for _, _, p in pair.numpy_model.parameters()} == {np.dtype("float64")}


def test_layout_rejects_a_different_architecture():
    keras_model = twin.twin_pair("fc128").keras_model
    with pytest.raises(ValueError, match="shape"):
        layout.to_numpy(keras_model, twin.twin_pair("fc64").numpy_model)


@pytest.mark.parametrize("name", zoo.model_names())
def test_float64_gradients_agree_for_every_zoo_model(name):
    """Training mode with dropout off: BatchNorm normalises with the batch's statistics."""
    x, y = random_batch(8, model=name)
    report = twin.gradient_agreement(twin.twin_pair(name, "float64", seed=1), x, y)
    assert abs(report.loss_numpy - report.loss_keras) <= 1e-12 * max(1.0, report.loss_keras)
    assert report.max_error <= 1e-7, report.errors  # GRAD_TOLERANCE["float64"]
    assert len(report.errors) == sum(len(r.shapes) for r in zoo.param_rows(name))


def test_best_gradients_agree_in_inference_mode_too():
    x, y = random_batch(8, model="best")
    report = twin.gradient_agreement(twin.twin_pair("best", "float64", seed=2), x, y,
                                     training=False)
    assert report.max_error <= 1e-7, report.errors
    assert report.zeros == ()  # the moving mean does not absorb the biases


def test_biases_feeding_batchnorm_get_zero_gradient_on_both_sides():
    x, y = random_batch(8, model="best")
    pair = twin.twin_pair("best", "float64", seed=1)
    report = twin.gradient_agreement(pair, x, y)
    assert report.zeros == ("0/bias", "10/bias", "15/bias", "3/bias", "7/bias")
    largest = max(float(np.abs(layer.grads["kernel"]).max())
                  for layer in pair.numpy_model.layers if "kernel" in layer.grads)
    for label in report.zeros:
        i = int(label.split("/")[0])
        assert np.abs(pair.numpy_model.layers[i].grads["bias"]).max() <= 1e-12 * largest, label
    assert report.max_error <= 1e-7, report.errors


@pytest.mark.parametrize("shape", [(16, 5), (4, 6, 7, 3)])
def test_batchnorm_forward_and_moving_statistics_equal_keras(shape):
    import keras

    from comparison.twin import keras_floatx
    from scratch.layer_classes import BatchNorm

    rng = np.random.default_rng(3)
    x = 2 + 3 * rng.standard_normal(shape)
    with keras_floatx("float64"):
        keras_layer = keras.layers.BatchNormalization()
        keras_layer.build(shape)
    ours = BatchNorm(shape[-1], np.float64)
    gamma, beta = 0.5 + rng.random(shape[-1]), rng.standard_normal(shape[-1])
    keras_layer.gamma.assign(gamma)
    keras_layer.beta.assign(beta)
    ours.params["gamma"][...], ours.params["beta"][...] = gamma, beta
    for step in range(3):  # three training-mode calls: three moving-average updates
        batch = x + step
        np.testing.assert_allclose(ours.forward(batch, training=True),
                                   keras_layer(batch, training=True).numpy(),
                                   rtol=1e-12, atol=1e-12)
    for variable in keras_layer.weights:
        np.testing.assert_allclose(ours.params[variable.name], variable.numpy(), rtol=1e-14,
                                   err_msg=variable.name)
    np.testing.assert_allclose(ours.forward(x), keras_layer(x, training=False).numpy(),
                               rtol=1e-12, atol=1e-12)


def test_float64_gradients_agree_with_l2():
    # keras.regularizers.L2 turns its Python-float factor into a float32 tensor before
    # casting it to the kernel's dtype, so 1e-3 becomes 1.0000000475e-3 even in float64.
    # A factor that float32 holds exactly (2**-10) makes both sides compute the same thing.
    x, y = random_batch(8, model="fc64")
    report = twin.gradient_agreement(twin.twin_pair("fc64", "float64", l2=2.0**-10), x, y)
    assert report.max_error <= 1e-7, report.errors


def test_float32_gradients_agree_within_float32_tolerance():
    x, y = random_batch(16, model="convnet")
    report = twin.gradient_agreement(twin.twin_pair("convnet", "float32"), x, y)
    # Norm-wise in float32 (twin.GRAD_MEASURE explains why elementwise is meaningless there).
    assert max(report.normwise.values()) <= 1e-4, report.normwise
    assert report.passed


def random_batches(name, n_batches, seed=0):
    return [random_batch(16, seed + i, model=name) for i in range(n_batches)]


def test_lockstep_sgd_float64_stays_within_1e6_for_20_steps():
    pair = twin.twin_pair("tiny", "float64")
    numpy_losses, keras_losses = twin.lockstep(pair, random_batches("tiny", 20), "sgd", 0.1, 20,
                                               momentum=0.9)
    assert len(numpy_losses) == 20
    assert max(abs(a - b) for a, b in zip(numpy_losses, keras_losses)) <= 1e-6
    assert numpy_losses[-1] != numpy_losses[0]  # the models did move


def test_lockstep_best_float64_keeps_weights_and_moving_statistics_together():
    # Keras passes the learning rate and the momentum through float32 even for float64
    # weights: 2**-7 and 7/8 survive that exactly, so both sides compute the same steps.
    pair = twin.twin_pair("best", "float64")
    numpy_losses, keras_losses = twin.lockstep(pair, random_batches("best", 5), "sgd", 2.0**-7,
                                               5, momentum=0.875)
    assert max(abs(a - b) for a, b in zip(numpy_losses, keras_losses)) <= 1e-10
    assert numpy_losses[-1] < numpy_losses[0]
    differences = twin.weight_differences(pair)
    zeros = {f"{i}/{key}" for i, key in pair.numpy_model.biases_before_batchnorm()}
    assert sum("/moving_" in label for label in differences) == 10
    moving = pair.numpy_model.layers[1].params["moving_mean"]
    assert np.abs(moving).max() > 1e-3  # five updates really moved it
    # The biases feeding a BatchNorm only ever saw round-off gradients: both stay ~0.
    for label in zeros:
        i = int(label.split("/")[0])
        assert np.abs(pair.numpy_model.layers[i].params["bias"]).max() < 1e-12
    worst = max((d, label) for label, d in differences.items() if label not in zeros)
    assert worst[0] <= 1e-10, worst


def test_lockstep_adam_float32_stays_within_1e4_for_20_steps():
    pair = twin.twin_pair("fc128", "float32")
    numpy_losses, keras_losses = twin.lockstep(pair, random_batches("fc128", 20), "adam", 1e-3,
                                               20)
    # float32 rounding differs between the two matmul libraries and grows with the
    # number of steps; 1e-4 on a loss of order 1 is far below any real disagreement.
    assert max(abs(a - b) for a, b in zip(numpy_losses, keras_losses)) <= 1e-4


def test_params_all_matches_published_counts(tmp_path, capsys):
    out = tmp_path / "params.json"
    assert compare.main(["params", "--all", "--hidden", "10", "300", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["models"] == {"fc128": 101_770, "mlp500": 545_810, "tiny": 1_765,
                                "convnet": 34_826, "cnn3": 438_026, "best": 198_122,
                                "lenet": 61_706, "resnet": 38_282, "normnet": 2_146,
                                "fc10": 795 * 10 + 10,
                                "fc300": 795 * 300 + 10}
    assert result["non_trainable"] == {name: {"best": 640, "resnet": 416}.get(name, 0)
                                       for name in result["models"]}
    assert result["famous"]["vgg16"] == 138_357_544
    assert result["famous"]["alexnet"] == 60_965_224
    assert result["famous"]["inception_v4"] == 42_679_816
    assert "795*300 + 10 = 238,510" in capsys.readouterr().out


def test_params_of_best_show_the_moving_statistics_apart(capsys):
    table = params.param_comparison("best")
    assert table["totals"] == {"numpy": 198_122, "keras": 198_122}
    assert table["non_trainable"] == {"numpy": 640, "keras": 640}
    assert table["keras_count_params"] == 198_762
    params.print_param_table("best", table, Console())
    out = capsys.readouterr().out
    assert "198,762" in out and "│     640 │     640 │" in out


def test_gradcheck_command_checks_every_array_and_passes(tmp_path):
    out = tmp_path / "gradcheck.json"
    assert compare.main(["gradcheck", "--model", "tiny", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(row["layer"], row["param"]) for row in result["rows"]] == [
        (layer, param) for layer in ("conv2d_0", "conv2d_2", "dense_5", "dense_6")
        for param in ("kernel", "bias")]
    assert all(row["entries"] > 0 and row["passed"] for row in result["rows"])
    assert result["passed"] and result["worst_numeric_vs_numpy"] <= gradcheck.NETWORK_TOLERANCE


@pytest.mark.parametrize("fields, recorded", [({"checked": 0, "error": math.nan}, None),
                                              ({"error": 1e-3, "beyond_roundoff": 1e-3},
                                               1e-3)])
def test_gradcheck_command_fails_a_check_of_nothing_or_a_large_error(fields, recorded, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.setattr(gradcheck, "model_gradient_errors",
                        with_first_array(gradcheck.model_gradient_errors, **fields))
    out = tmp_path / "gradcheck.json"
    assert compare.main(["gradcheck", "--model", "fc8", "--json", str(out)]) == 1
    result = json.loads(out.read_text())
    assert [row["passed"] for row in result["rows"]] == [False, True, True, True]
    assert result["rows"][0]["numeric_vs_numpy"] == recorded and not result["passed"]
    assert "FAIL" in capsys.readouterr().out


def test_unknown_model_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.main(["params", "--model", "nosuchnet"])
    assert exit_info.value.code == 2
    assert "unknown model 'nosuchnet'" in capsys.readouterr().err


@needs_mnist
def test_end_to_end_run_on_a_subset(tmp_path):
    out = tmp_path / "compare.json"
    code = compare.main(["--model", "fc128", "tiny", "--epochs", "1", "--limit", "2048",
                         "--lockstep-steps", "10", "--json", str(out),
                         "--logdir", str(tmp_path / "runs"), "--figure",
                         str(tmp_path / "compare.png")])
    assert code == 0
    result = json.loads(out.read_text())
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    assert list((tmp_path / "runs").glob("compare-*/numpy/events.*"))
    assert list((tmp_path / "runs").glob("compare-*/keras/events.*"))
    for name, expected in (("fc128", 101_770), ("tiny", 1_765)):
        r = result["models"][name]
        assert r["params"]["totals"] == {"numpy": expected, "keras": expected}
        assert r["gradients"]["float64"]["passed"] and r["gradients"]["float32"]["passed"]
        assert len(r["lockstep"]["numpy"]) == len(r["lockstep"]["keras"]) == 10
        assert r["lockstep"]["max_abs_diff"] < 1e-3
        for side in ("numpy", "keras"):
            t = r["training"][side]
            assert len(t["epochs"]) == 1 and len(t["step_loss"]) == 16  # 2048 / 128
            # the rate counts the 2,048 images the epoch really trained on
            assert t["images_per_second"] * t["seconds_per_epoch"] == pytest.approx(2048)
            assert 0.1 < t["test_accuracy"] <= 1.0
    # fc128 learns something from 2,048 images in one epoch, in both implementations.
    assert result["models"]["fc128"]["training"]["numpy"]["test_accuracy"] > 0.7
    assert result["models"]["fc128"]["training"]["keras"]["test_accuracy"] > 0.7


def test_l2_covers_the_hidden_kernels_only_in_both_implementations():
    pair = twin.twin_pair("mlp500", "float64", l2=2.0**-10)
    keras_regularized = [layer.name for layer in pair.keras_model.arch_layers
                         if getattr(layer, "kernel_regularizer", None) is not None]
    numpy_regularized = [layer.name for layer in pair.numpy_model.layers
                         if layer.params and layer.regularized]
    assert keras_regularized == numpy_regularized == ["dense_1", "dense_2"]
    hidden = sum(float(np.sum(layer.params["kernel"] ** 2))
                 for layer in pair.numpy_model.layers[1:3])
    assert pair.numpy_model.l2_loss() == pytest.approx(2.0**-10 * hidden, rel=1e-12)


def test_bench_times_the_custom_loop_over_every_batch_after_the_warm_up(monkeypatch):
    import tensorflow as tf

    from comparison import benchtimes
    from keras_impl.multistep import make_train_steps
    from keras_impl.optimizers import make_optimizer

    x, y = random_batch(64, model="fc16")
    batches = tf.data.Dataset.from_tensor_slices((np.float32(x), y)).batch(2)  # 32 steps
    pair = twin.twin_pair("fc16")
    optimizer = make_optimizer("sgd", 0.01)
    train_steps = make_train_steps(pair.keras_model, optimizer, pair.loss_fn)
    clock = {"now": 0.0}  # a clock that advances one "second" per training step taken

    def counted_steps(iterator, count):
        losses = train_steps(iterator, count)
        clock["now"] += losses.shape[0]
        return losses

    monkeypatch.setattr(benchtimes.time, "perf_counter", lambda: clock["now"])
    assert benchtimes.time_custom_loop(counted_steps, batches) == 32 - benchtimes.WARMUP_STEPS
    assert int(optimizer.iterations) == 32  # warm-up steps included


def test_bench_pipeline_time_waits_for_the_batches_it_draws():
    import time

    import tensorflow as tf

    from comparison import benchtimes

    delay, timed = 0.05, 4  # seconds per batch; batches after the warm-up ones

    def slow(i):
        time.sleep(delay)
        return i

    batches = tf.data.Dataset.range(benchtimes.WARMUP_STEPS + timed).map(
        lambda i: tf.py_function(slow, [i], tf.int64))
    assert benchtimes.time_pipeline_alone(batches) >= timed * delay


def test_bench_counts_training_flops_from_the_layer_declarations():
    from comparison import benchtimes

    # Multiply-adds x 2 FLOPs x 3 (forward, plus backward's two products); a conv
    # layer's multiply-adds are its weights times its output positions.
    assert benchtimes.training_flops("fc128") == 3 * 2 * (784 * 128 + 128 * 10)
    tiny = 5 * 5 * 1 * 8 * 24 * 24 + 5 * 5 * 8 * 3 * 8 * 8 + 48 * 16 + 16 * 10
    assert benchtimes.training_flops("tiny") == 3 * 2 * tiny


# --- the bench's Markdown table and memory probe -------------------------------------------


def bench_results(**changes):
    from pathlib import Path
    results = json.loads((Path(compare.__file__).parent / "results" / "bench.json").read_text())
    results["busy_processes"] = 0  # the targets table alone (its rows name the models too)
    for name, values in changes.items():
        results["models"][name].update(values)
    return results


def test_bench_readme_table_puts_every_target_beside_its_figure():
    from comparison import benchreadme

    results = bench_results(
        convnet={"ratio_numpy_over_fit": 1.31, "numpy_gflops": 80.0, "keras_fit_gflops": 40.0},
        best={"ratio_numpy_over_fit": 1.5, "numpy_peak_rss_mb": 1500.2})
    results["matmul_peak_gflops"] = {"numpy": 160.0, "tensorflow": 150.0}
    table = benchreadme.bench_markdown(results)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines()
            if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"model", "fc128", "mlp500", "convnet", "cnn3", "best"}
    assert rows["convnet"][4] == "1.31 (<= 1.3, **not met**)"
    assert rows["convnet"][5] == "50% / 25%"  # of the faster engine's matmul peak
    assert rows["convnet"][7] == "80 (>= 80, met)"  # a target reached exactly is met
    assert rows["best"][4] == "1.50 (<= 1.5, met)"
    assert rows["best"][9] == "1500.2 (<= 1500, **not met**)"
    assert "(" not in rows["cnn3"][9]  # no memory target for cnn3
    near = benchreadme.bench_markdown(bench_results(mlp500={"ratio_numpy_over_fit": 0.8004}))
    assert "| 0.8004 (<= 0.8, **not met**) |" in near  # not "0.80 (<= 0.8, not met)"


def test_bench_readme_rewrites_only_between_the_markers(tmp_path):
    import argparse
    from comparison import benchreadme

    readme = tmp_path / "README.md"
    before, after = "# twinnet\n\ntext before\n", "text after\n"
    readme.write_text(f"{before}{benchreadme.START}\n| old | table |\n{benchreadme.END}\n{after}")
    benchreadme.rewrite_readme(benchreadme.readme_file(str(readme)), "| new |")
    assert readme.read_text() == (f"{before}{benchreadme.START}\n| new |\n"
                                  f"{benchreadme.END}\n{after}")
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # no temporary left
    readme.write_text(f"{benchreadme.END}\n{benchreadme.START}\n")
    with pytest.raises(argparse.ArgumentTypeError, match="expected the lines"):
        benchreadme.readme_file(str(readme))
    with pytest.raises(argparse.ArgumentTypeError, match="no such file"):
        benchreadme.readme_file(str(tmp_path))


@needs_mnist
@pytest.mark.slow  # two fresh processes training the best model: half a minute
def test_memory_probe_sees_the_arrays_of_a_bigger_batch():
    """The fresh process's peak grows with what its training holds: convnet's step at
    batch 1024 holds ~0.5 GB more than at 128 (activations, im2col rows, gradients)."""
    from comparison import memory

    ballast = np.ones(2_000_000_000 // 8)  # this process: 2 GB more than any probe
    small = memory.numpy_training_peak_mb("convnet", steps=1)
    large = memory.numpy_training_peak_mb("convnet", steps=1, batch_size=1024)
    assert 300 < small < 2000  # TensorFlow's libraries alone take 0.5 GB; not ours
    assert large - small > 300
    del ballast
