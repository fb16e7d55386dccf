"""The graders' .h5: round trips, Keras 3.5 configs, refusals, the CLI, and loading under TF 2.18.

The TF 2.18 tests run the grader's load in another environment, named by
TWINNET_TF218_PYTHON (that venv's python; see docs/keras-modules.md, exporting for graders).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow

from keras_impl import data, export, grader_check
from keras_impl.zoo_model import build_sequential, build_twinnet
from scratch import zoo
from scratch.registry import KINDS
from helpers import MNIST_DIR, needs_mnist, write_idx_folder

ROOT = Path(__file__).resolve().parents[1]
TF218_PYTHON = os.environ.get("TWINNET_TF218_PYTHON")
needs_tf218 = pytest.mark.skipif(
    not TF218_PYTHON, reason="TWINNET_TF218_PYTHON is not set (path to the python of a "
                             "TensorFlow 2.18 venv; see docs/keras-modules.md)")
KERAS35_PATH = os.environ.get("TWINNET_KERAS35_PATH")
needs_keras35 = pytest.mark.skipif(
    not (TF218_PYTHON and KERAS35_PATH),
    reason="TWINNET_TF218_PYTHON and TWINNET_KERAS35_PATH are not both set (a TF 2.18 venv and "
           "a folder holding Keras 3.5.0, as .ci/run makes them; see CONTRIBUTING.md)")
# Keys Keras >= 3.13 writes that Keras 3.5-3.12 reject (found by loading in Keras 3.5).
NEWER_KEYS = {"quantization_config", "input_axes", "output_axes", "ragged", "optional",
              "renorm", "renorm_clipping", "renorm_momentum"}


def images(model, n=16, seed=0):
    """Random float32 inputs in [0, 1] shaped for `model`'s input."""
    return np.random.default_rng(seed).uniform(size=(n, *model.input_shape[1:])).astype("float32")


def softmax_of(model, x) -> np.ndarray:
    return keras.ops.convert_to_numpy(keras.ops.softmax(model(x, training=False)))


UNIT_ROUNDOFF = 2.0 ** -24  # float32


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): a float32 sum of n products, in any order and
    with or without fused multiply-adds, is within gamma_n * sum |products| of the exact sum."""
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def fc128_probabilities_float64(model, x) -> tuple[np.ndarray, np.ndarray]:
    """fc128's softmax probabilities of float32 images x (N, 28, 28) in float64 from its
    float32 weights, and per entry how far any float32 evaluation may lie from them:

    hidden pre-activations  e1 <= gamma_785 (|W1|^T |x| + |b1|)  (ReLU moves none further)
    logits                  e2 <= |W2|^T e1 + gamma_129 (|W2|^T (|h| + e1) + |b2|)
    probabilities           |dp| <= p (exp(2 d) - 1 + 20 u),  d = max(e2 + u |z - max z|)

    (a logit shift d changes p by a factor in [exp(-2d), exp(2d)]; the 20 u cover the
    rounded subtraction, exp, a 10-term sum, the division and the stored float32)."""
    (w1, b1), (w2, b2) = ([np.float64(w.numpy()) for w in layer.weights]
                          for layer in model.layers if layer.weights)
    x = np.float64(x.reshape(len(x), -1))
    pre = x @ w1 + b1
    e1 = gamma(785) * (np.abs(x) @ np.abs(w1) + np.abs(b1))
    hidden = np.maximum(pre, 0.0)
    z = hidden @ w2 + b2
    e2 = np.abs(e1) @ np.abs(w2) + gamma(129) * ((hidden + e1) @ np.abs(w2) + np.abs(b2))
    d = (e2 + UNIT_ROUNDOFF * np.abs(z - z.max(axis=1, keepdims=True))).max(axis=1,
                                                                            keepdims=True)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p, p * (np.expm1(2 * d) + 20 * UNIT_ROUNDOFF)


def grader_load(path):
    """What the grader calls (the Keras behind tensorflow.keras)."""
    return tensorflow.keras.models.load_model(path)


def model_config(path) -> dict:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["model_config"])


@pytest.mark.parametrize("name", zoo.model_names())
def test_export_round_trip(tmp_path, name):
    keras.utils.set_random_seed(1)
    source = build_sequential(name, l2=1e-3)
    out = tmp_path / f"{name}.h5"
    export.export_h5(source, out)

    net = grader_load(out)
    assert net.input_shape == ((None, 28, 28, 1) if zoo.has_conv(name) else (None, 784))
    x = images(source)
    np.testing.assert_array_equal(net.predict(x, verbose=0), softmax_of(source, x))
    assert out.stat().st_size < export.MAX_BYTES
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left


@pytest.mark.parametrize("arch, l2, flat", [("fc128", 1e-4, None), ("fc37", 0.0, False),
                                            ("tiny", 0.0, None), ("convnet", 1e-3, None)])
def test_twinnet_export_round_trip(tmp_path, arch, l2, flat):
    keras.utils.set_random_seed(2)
    twin = build_twinnet(arch, l2=l2, flat=flat)
    out = tmp_path / "twin.h5"
    export.export_h5(twin, out)

    net = grader_load(out)
    cnn = zoo.has_conv(arch)
    assert net.input_shape == ((None, 28, 28, 1) if cnn else (None, 784))
    x = np.random.default_rng(3).uniform(size=(16, 28, 28, 1)).astype("float32")
    twin_x = x if cnn or not twin.flat else x.reshape(-1, 784)
    grader_x = x if cnn else x.reshape(-1, 784)
    np.testing.assert_array_equal(net.predict(grader_x, verbose=0), softmax_of(twin, twin_x))


@pytest.mark.parametrize("name", ["fc128", "convnet", "best"])
def test_exported_config_holds_only_keras_3_5_keys(tmp_path, name):
    out = tmp_path / "m.h5"
    export.export_h5(build_sequential(name, l2=1e-3), out)
    config = model_config(out)
    assert config["class_name"] == "Sequential"
    assert config["config"]["layers"][0]["class_name"] == "InputLayer"
    assert config["config"]["layers"][-1]["class_name"] == "Softmax"
    for obj in export.serialized_objects(config):
        keys = set(obj["config"])
        assert not keys & NEWER_KEYS, obj["class_name"]
        assert keys <= set(export.KERAS_3_5_CONFIG_KEYS[obj["class_name"]]), obj["class_name"]


def test_residual_blocks_export_as_built_in_layers(tmp_path):
    """resnet's blocks (keras_impl.blocks.ResidualBlock, which the graders' Keras lacks) go
    into the .h5 as Conv2D, BatchNormalization, Add and ReLU layers of a Functional model,
    their trained moving statistics included; a chain of layers stays a Sequential."""
    keras.utils.set_random_seed(3)
    twin = build_twinnet("resnet")
    for variable in twin.non_trainable_weights:  # moving statistics as after training
        variable.assign(np.random.default_rng(5).uniform(0.5, 1.5, variable.shape))
    out = tmp_path / "resnet.h5"
    export.export_h5(twin, out)
    config = model_config(out)
    assert config["class_name"] == "Functional"
    classes = {layer["class_name"] for layer in config["config"]["layers"]}
    assert classes == {"InputLayer", "Conv2D", "BatchNormalization", "ReLU", "Add",
                       "GlobalAveragePooling2D", "Dense", "Softmax"}
    net = grader_load(out)
    x = images(net)
    np.testing.assert_allclose(net.predict(x, verbose=0), softmax_of(twin, x), rtol=0,
                               atol=1e-6)
    export.export_h5(build_sequential("normnet"), tmp_path / "normnet.h5")
    assert model_config(tmp_path / "normnet.h5")["class_name"] == "Sequential"


def test_explicit_padding_exports_as_zero_padding_then_the_layer(tmp_path):
    probe = export.graph_probe_model()
    rng = np.random.default_rng(6)
    for layer in probe.layers:
        layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                           for w in layer.get_weights()])
    out = tmp_path / "graph_probe.h5"
    export.write_h5(probe, out)
    names = [layer["config"]["name"] for layer in model_config(out)["config"]["layers"]]
    assert names[1:3] == ["conv2d_0_padding", "conv2d_0"]
    x = images(probe)
    np.testing.assert_array_equal(grader_load(out).predict(x, verbose=0),
                                  probe.predict(x, verbose=0))


def test_keras_3_5_keys_are_still_written_by_this_keras():
    """Every key kept is one this Keras writes too, i.e. reads back (a removed key would fail)."""
    written = export.written_config_keys()
    assert set(written) == set(export.KERAS_3_5_CONFIG_KEYS)
    for name, keys in export.KERAS_3_5_CONFIG_KEYS.items():
        assert set(keys) <= set(written[name]), name


def random_probe(seed):
    """export.probe_model() with random positive weights (valid BatchNormalization variances)."""
    probe = export.probe_model()
    rng = np.random.default_rng(seed)
    for layer in probe.layers:
        layer.set_weights([np.abs(rng.normal(size=w.shape)).astype("float32") + 0.5
                           for w in layer.get_weights()])
    return probe


def test_probe_model_round_trip(tmp_path):
    """write_h5 on one layer of every zoo kind (incl. BatchNormalization's moving statistics)."""
    probe = random_probe(4)
    out = tmp_path / "probe.h5"
    export.write_h5(probe, out)
    x = images(probe)
    np.testing.assert_array_equal(grader_load(out).predict(x, verbose=0),
                                  probe.predict(x, verbose=0))


def incompatible_models():
    return {
        "renorm weights": keras.Sequential(
            [keras.Input((4,)), keras.layers.BatchNormalization(renorm=True)], name="renorm"),
        "initializer axes": keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(
                3, kernel_initializer=keras.initializers.GlorotUniform(input_axes=(0,)))],
            name="axes"),
    }


@pytest.mark.parametrize("case", list(incompatible_models()))
def test_model_keras_3_5_cannot_express_is_refused_and_target_kept(tmp_path, case):
    out = tmp_path / "m.h5"
    out.write_bytes(b"previous export")
    with pytest.raises(export.ExportError, match="Keras 3.5's config"):
        export.write_h5(incompatible_models()[case], out)
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "MAX_BYTES", 10_000)
    out = tmp_path / "m.h5"
    with pytest.raises(export.ExportError, match="graders accept under 10,000"):
        export.export_h5(build_sequential("fc128"), out)
    assert list(tmp_path.iterdir()) == []


def functional_fc():
    inputs = keras.Input((784,))
    return keras.Model(inputs, keras.layers.Dense(10)(inputs), name="fc128")


def not_zoo_models():
    dense = keras.layers.Dense
    return {
        "unknown name": (keras.Sequential([keras.Input((784,)), dense(10)], name="mystery"),
                         "not a twinnet zoo model"),
        "wrong layer count": (keras.Sequential([keras.Input((784,)), dense(10)], name="fc128"),
                              "has 1 layers, zoo model fc128 has 3"),
        "wrong units": (keras.Sequential([keras.Input((784,)), keras.layers.Flatten(),
                                          dense(64, activation="relu"), dense(10)], name="fc128"),
                        r"layer 1 \(dense_\d+\) .*config\.units: 128 -> 64"),
        "wrong activation": (keras.Sequential([keras.Input((784,)), keras.layers.Flatten(),
                                               dense(128, activation="tanh"), dense(10)],
                                              name="fc128"),
                             "config.activation: 'relu' -> 'tanh'"),
        "functional": (functional_fc(), "neither a TwinNet nor a Sequential"),
    }


@pytest.mark.parametrize("case", list(not_zoo_models()))
def test_not_a_zoo_model_is_refused(tmp_path, case):
    model, message = not_zoo_models()[case]
    with pytest.raises(export.ExportError, match=message):
        export.export_h5(model, tmp_path / "m.h5")
    assert list(tmp_path.iterdir()) == []


# --- command line --------------------------------------------------------------------------

def run_main(argv):
    return data.run_cli(lambda: export.main(argv))


@pytest.mark.parametrize("source", ["sequential", "twinnet"])
def test_cli_exports_a_keras_file_and_reexports_its_h5(tmp_path, capsys, source):
    keras.utils.set_random_seed(5)
    model = build_sequential("tiny") if source == "sequential" else build_twinnet("tiny")
    model.save(tmp_path / "tiny.keras")
    run_main(["--model-path", str(tmp_path / "tiny.keras"), "--h5", str(tmp_path / "a.h5")])
    assert f"wrote {tmp_path / 'a.h5'}: tiny, input (None, 28, 28, 1)" in capsys.readouterr().out
    run_main(["--model-path", str(tmp_path / "a.h5"), "--h5", str(tmp_path / "b.h5")])

    x = np.random.default_rng(6).uniform(size=(8, 28, 28, 1)).astype("float32")
    expected = softmax_of(model, x)
    for name in ("a.h5", "b.h5"):
        np.testing.assert_array_equal(grader_load(tmp_path / name).predict(x, verbose=0),
                                      expected)


def cli_error_cases(tmp_path):
    garbage = b"this is not a model\n" * 10
    (tmp_path / "corrupt.keras").write_bytes(garbage)
    (tmp_path / "corrupt.h5").write_bytes(garbage)
    (tmp_path / "model.txt").write_bytes(garbage)
    keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)], name="mystery").save(
        tmp_path / "mystery.keras")
    good = tmp_path / "mystery.keras"
    out = tmp_path / "out.h5"
    return {
        "missing": (["--model-path", str(tmp_path / "nope.keras"), "--h5", str(out)],
                    "nope.keras: no such file"),
        "corrupt keras": (["--model-path", str(tmp_path / "corrupt.keras"), "--h5", str(out)],
                          "corrupt.keras: cannot load a Keras model"),
        "corrupt h5": (["--model-path", str(tmp_path / "corrupt.h5"), "--h5", str(out)],
                       "corrupt.h5: cannot load a Keras model"),
        "wrong suffix": (["--model-path", str(tmp_path / "model.txt"), "--h5", str(out)],
                         "expected a .keras or .h5 model file"),
        "not zoo": (["--model-path", str(good), "--h5", str(out)],
                    "'mystery' is not a twinnet zoo model"),
        "out not h5": (["--model-path", str(good), "--h5", str(tmp_path / "out.keras")],
                       "expected a file name ending in .h5"),
        "out folder": (["--model-path", str(good), "--h5", str(tmp_path / "no" / "out.h5")],
                       "does not exist"),
        "no arguments": ([], "give --model-path PATH and --h5 OUT.h5"),
    }


@pytest.mark.parametrize("case", ["missing", "corrupt keras", "corrupt h5", "wrong suffix",
                                  "not zoo", "out not h5", "out folder", "no arguments"])
def test_cli_errors_are_one_line(tmp_path, capsys, case):
    argv, message = cli_error_cases(tmp_path)[case]
    with pytest.raises(SystemExit) as exit_info:
        run_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("python -m keras_impl.export: error: ") and message in last, err
    assert not (tmp_path / "out.h5").exists()


def test_cli_process_prints_no_traceback(tmp_path):
    (tmp_path / "corrupt.keras").write_bytes(b"PK\x03\x04 truncated zip")
    result = subprocess.run(
        [sys.executable, "-m", "keras_impl.export", "--model-path", str(tmp_path / "corrupt.keras"),
         "--h5", str(tmp_path / "out.h5")], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "corrupt.keras: cannot load a Keras model" in result.stderr.strip().splitlines()[-1]


# --- grader_check ----------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [True, False])
def test_grader_check_reader_matches_twinnet_reader(tmp_path, compress):
    folder = write_idx_folder(tmp_path, compress=compress)
    paths = data.idx_paths(folder)
    expected = data.read_idx_pair(paths["test_images"], paths["test_labels"])
    for got, want in zip(grader_check.read_test_set(mnist_dir=folder), expected):
        np.testing.assert_array_equal(got, want)


def test_grader_check_scores_an_export(tmp_path, capsys):
    keras.utils.set_random_seed(7)
    source = build_sequential("fc128")
    export.export_h5(source, tmp_path / "fc128.h5")
    rng = np.random.default_rng(8)
    x_test = rng.integers(0, 256, size=(200, 28, 28), dtype=np.uint8)
    y_test = rng.integers(0, 10, size=200).astype(np.uint8)
    np.savez(tmp_path / "test.npz", x_test=x_test, y_test=y_test)
    expected, bound = fc128_probabilities_float64(source, x_test.astype("float32") / 255)

    grader_check.main([str(tmp_path / "fc128.h5"), "--npz", str(tmp_path / "test.npz"),
                       "--save-dir", str(tmp_path)])
    [result] = json.loads((tmp_path / "results.json").read_text())
    saved = np.load(tmp_path / "fc128.npy")
    assert saved.shape == expected.shape and saved.dtype == np.float32
    # predict() runs batches of 32, so its float32 sums run in another order than a call on
    # all 200 rows would (1.8e-7 apart on an AMD EPYC): judged against exact arithmetic
    assert (np.abs(saved - expected) <= bound).all(), np.abs(saved - expected).max()
    assert result["correct"] == int((saved.argmax(axis=1) == y_test).sum())
    assert result["input_shape"] == [None, 784]
    assert f"accuracy {result['accuracy']:.4f}" in capsys.readouterr().out


# --- TensorFlow 2.18 ------------------------------------------------------------------------

def tf218(args, cwd, **env):
    """Run TWINNET_TF218_PYTHON with `args`; its stdout."""
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([TF218_PYTHON, *args], cwd=cwd, capture_output=True, text=True,
                            env={**clean, "TF_CPP_MIN_LOG_LEVEL": "2", **env}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def trained(model, flat, n):
    """`model` after one quick epoch on the first `n` training images."""
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.make_dataset("train", 64, flat=flat, limit=n), epochs=1, shuffle=False,
              verbose=0)  # the pipeline shuffles
    return model


@needs_tf218
@needs_mnist
def test_grader_load_under_tf218(tmp_path):
    """Trained exports score identically under TF 2.18 and the project's TF."""
    keras.utils.set_random_seed(9)
    export.export_h5(trained(build_sequential("fc128"), True, 10_000), tmp_path / "fc128.h5")
    export.export_h5(trained(build_twinnet("convnet"), False, 2_000), tmp_path / "convnet.h5")
    export.write_h5(random_probe(10), tmp_path / "probe.h5")
    names = ["fc128", "convnet", "probe"]
    out = tmp_path / "tf218"
    out.mkdir()

    tf218([str(ROOT / "keras_impl" / "grader_check.py"), *(str(tmp_path / f"{n}.h5")
           for n in names), "--mnist-dir", MNIST_DIR, "--save-dir", str(out)],
          cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())
    x_test, y_test = grader_check.read_test_set(mnist_dir=MNIST_DIR)
    for name, theirs in zip(names, results):
        assert theirs["tensorflow"] == "2.18.0", "TWINNET_TF218_PYTHON is not a TF 2.18 python"
        ours, our_probs = grader_check.grade(tmp_path / f"{name}.h5", x_test, y_test)
        their_probs = np.load(out / f"{name}.npy")
        assert theirs["input_shape"] == ours["input_shape"]
        # float32 softmax outputs; different TF builds may round differently, not more
        np.testing.assert_allclose(their_probs, our_probs, rtol=0, atol=1e-6)
        # so the predicted digits agree wherever the top two are further apart than that
        top_two = np.sort(our_probs, axis=1)[:, -2:]
        clear = top_two[:, 1] - top_two[:, 0] > 2e-6
        np.testing.assert_array_equal(their_probs.argmax(axis=1)[clear],
                                      our_probs.argmax(axis=1)[clear])
        assert theirs["correct"] == ours["correct"]
        assert theirs["max_row_sum_error"] < 1e-5
    assert results[0]["accuracy"] > 0.85  # really trained, so equal scores mean something


@needs_keras35
def test_residual_and_padding_exports_load_under_keras_3_5_and_3_6(tmp_path):
    """The Functional exports (resnet, the graph probe: explicit padding, both skips) score
    the same under TF 2.18 with Keras 3.5.0 and with its own Keras 3.6."""
    keras.utils.set_random_seed(4)
    twin = build_twinnet("resnet")
    for variable in twin.non_trainable_weights:
        variable.assign(np.random.default_rng(5).uniform(0.5, 1.5, variable.shape))
    export.export_h5(twin, tmp_path / "resnet.h5")
    probe = export.graph_probe_model()
    export.write_h5(probe, tmp_path / "graph_probe.h5")
    rng = np.random.default_rng(7)
    x_test, y_test = rng.integers(0, 256, (32, 28, 28), dtype=np.uint8), rng.integers(0, 10, 32)
    np.savez(tmp_path / "images.npz", x_test=x_test, y_test=y_test)
    x = x_test.astype("float32")[..., None] / 255
    for keras_path, version in ((KERAS35_PATH, "3.5.0"), (None, "3.6.0")):
        out = tmp_path / version
        out.mkdir()
        tf218([str(ROOT / "keras_impl" / "grader_check.py"), str(tmp_path / "resnet.h5"),
               str(tmp_path / "graph_probe.h5"), "--npz", str(tmp_path / "images.npz"),
               "--save-dir", str(out)], cwd=tmp_path,
              **({"PYTHONPATH": keras_path} if keras_path else {}))
        results = json.loads((out / "results.json").read_text())
        assert [r["keras"] for r in results] == [version, version]
        for name, model in (("resnet", twin), ("graph_probe", probe)):
            np.testing.assert_allclose(np.load(out / f"{name}.npy"), softmax_of(model, x)
                                       if name == "resnet" else probe.predict(x, verbose=0),
                                       rtol=0, atol=1e-6)


@needs_tf218
def test_keras_3_5_keys_are_accepted_by_tf218_keras():
    """The TF 2.18 venv's Keras writes (so reads) every key kept."""
    report = json.loads(tf218(["-m", "keras_impl.export", "--print-config-keys"], cwd=ROOT,
                              PYTHONPATH=str(ROOT)))
    for name, keys in export.KERAS_3_5_CONFIG_KEYS.items():
        assert set(keys) <= set(report["keys"][name]), (report["keras"], name)


@needs_keras35
def test_declared_keys_are_exactly_what_keras_3_5_writes():
    """Keras 3.5.0 (pure Python, on TF 2.18) writes exactly the keys the export keeps: each
    registered kind's from its registry entry, the rest from keras_impl/export.py."""
    report = json.loads(tf218(["-m", "keras_impl.export", "--print-config-keys"], cwd=ROOT,
                              PYTHONPATH=os.pathsep.join([KERAS35_PATH, str(ROOT)])))
    assert report["keras"] == "3.5.0", f"TWINNET_KERAS35_PATH holds Keras {report['keras']}"
    written = report["keys"]
    wrong = {kind.name: tuple(written[kind.keras_class]) for kind in KINDS.values()
             if export.built_in(kind)
             and sorted(kind.keras_3_5_config_keys) != written[kind.keras_class]}
    assert not wrong, "in scratch/registry.py, give " + "; ".join(
        f"kind {name!r} keras_3_5_config_keys={keys!r}" for name, keys in wrong.items())
    generic = {name: written[name] for name in written
               if name not in {kind.keras_class for kind in KINDS.values()}}
    assert generic == {name: sorted(keys)
                       for name, keys in export.GENERIC_KERAS_3_5_CONFIG_KEYS.items()}
