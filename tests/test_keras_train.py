"""keras_impl.train and the modules beside it: step functions, the plain loop and the in-graph
multi-step loop (the same training), TensorBoard events, checkpoints/resume, Ctrl-C, NaN
(keras_impl.runner), the command line (keras_impl.train_cli).

Most tests train on small generated data (no MNIST needed); the course-bar test
uses the session's real fc128 run (conftest.keras_fc128_run).
"""
import json
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from keras_impl import export
from keras_impl import test as keras_test
from keras_impl import multistep, runner, train, train_cli
from keras_impl.checkpoints import Checkpoints
from plumbing.interrupts import (Terminated, interrupts_deferred, sigterm_as_interrupt,
                                   stops_between_steps)
from keras_impl.zoo_model import build_sequential, build_twinnet
from keras_impl.multistep import STEPS_PER_CALL, MultistepEpochs, make_train_steps
from keras_impl.optimizers import make_optimizer
from keras_impl.summaries import MISCLASSIFIED_SHOWN, label_digits
from scratch import zoo
from scratch.optim import DEFAULT_LR
from helpers import run_command, write_idx_folder

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32
N_TRAIN = 200  # 6 full batches and one of 8: a second batch shape
STEPS = -(-N_TRAIN // BATCH)


def learnable(n=N_TRAIN, seed=0, overflow=False):
    """(x, y) float32 (n, 784) / int32 (n,): each class lights its own band of pixels.

    `overflow`: pixels near float32's maximum instead, so the logits overflow and the
    loss is not finite (NaN pixels would not do: ReLU maps NaN to 0 on CPU).
    """
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 10).astype(np.int32)
    x = rng.uniform(0, 0.3, size=(n, 784)).astype(np.float32)
    for i, label in enumerate(y):
        x[i, 78 * label:78 * (label + 1)] += 0.7
    if overflow:
        x[:] = np.finfo(np.float32).max
    return x, y


def batches(x, y, batch=BATCH):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def reshuffled(x, y, batch=BATCH):
    """Batches in a new seeded order for every iterator, as make_dataset's training split."""
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(y), seed=0, reshuffle_each_iteration=True).batch(batch))


def train_and_val(overflow=False, images=False):
    """Learnable training batches, reshuffled every epoch; validation with random labels,
    so plenty misclassified. `images`: (B, 28, 28, 1) instead of (B, 784)."""
    (x, y), (x_val, _) = learnable(overflow=overflow), learnable(64, seed=1)
    if images:
        x, x_val = x.reshape(-1, 28, 28, 1), x_val.reshape(-1, 28, 28, 1)
    y_val = np.random.default_rng(2).integers(0, 10, size=64).astype(np.int32)
    return reshuffled(x, y), batches(x_val, y_val)


def saved_state(logdir):
    """({variable name: array} of the run's latest checkpoint, its per-epoch records
    without their timings): what a resumed run must reproduce bit for bit."""
    reader = tf.train.load_checkpoint(str(Path(logdir) / "checkpoints"))
    names = [name for name in reader.get_variable_to_shape_map()
             if not name.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))]
    history = json.loads(reader.get_tensor("history/.ATTRIBUTES/VARIABLE_VALUE"))
    state = {name: reader.get_tensor(name) for name in names if not name.startswith("history")}
    return state, [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def assert_same_state(logdir, reference_logdir):
    (state, history), (expected, expected_history) = (saved_state(logdir),
                                                      saved_state(reference_logdir))
    assert state.keys() == expected.keys()
    assert any("optimizer/_iterations" in name for name in state)
    for name, array in expected.items():
        np.testing.assert_array_equal(state[name], array, err_msg=name)
    assert history == expected_history


def ctrl_c_after_call(monkeypatch, n, signum=signal.SIGINT):
    """The signal `signum` as run_custom's n-th train_steps call returns (a real one
    arrives during a call, and is noted until the loop checks after it)."""
    make = multistep.make_train_steps

    def make_interrupted(*args, **kwargs):
        train_steps, calls = make(*args, **kwargs), []

        def interrupted(iterator, max_steps):
            losses = train_steps(iterator, max_steps)
            calls.append(len(losses))
            if len(calls) == n:
                signal.raise_signal(signum)
            return losses

        return interrupted

    monkeypatch.setattr(multistep, "make_train_steps", make_interrupted)


def ctrl_c_at_step(monkeypatch, step, signum=signal.SIGINT):
    """The signal `signum` when fit()'s optimizer has taken `step` steps."""
    on_train_batch_end = runner._FitTracker.on_train_batch_end

    def interrupt(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == step:
            signal.raise_signal(signum)
        on_train_batch_end(self, batch, logs)

    monkeypatch.setattr(runner._FitTracker, "on_train_batch_end", interrupt)


def accumulator(folder):
    acc = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    return acc


def plugin_tags(acc, plugin):
    return {tag for tag in acc.Tags()["tensors"]
            if acc.SummaryMetadata(tag).plugin_data.plugin_name == plugin}


def graph_events(folder) -> int:
    """How many graphs the event files in `folder` hold."""
    return sum(event.HasField("graph_def") for path in Path(folder).glob("events.out.*")
               for event in tf.compat.v1.train.summary_iterator(str(path)))


def steps(acc, tag):
    return [event.step for event in acc.Tensors(tag)]


def run_custom(logdir, epochs, train_ds=None, val_ds=None, resume=False, l2=0.0,
               steps_per_call=STEPS_PER_CALL, name="fc16"):
    """A fresh process's run in miniature: seed, model and datasets made anew."""
    keras.utils.set_random_seed(0)
    model = build_twinnet(name, l2=l2)
    default_train, default_val = train_and_val(images=zoo.has_conv(name))
    result = runner.run_custom(model, train_ds or default_train, val_ds or default_val,
                               epochs=epochs, optimizer=make_optimizer("adam"),
                               logdir=logdir, resume=resume, steps_per_call=steps_per_call)
    return model, result


def run_fit(logdir, epochs, train_ds=None, resume=False, name="fc16"):
    keras.utils.set_random_seed(0)
    model = build_sequential(name)
    default_train, val_ds = train_and_val(images=zoo.has_conv(name))
    result = runner.fit_baseline(model, train_ds or default_train, val_ds, epochs=epochs,
                                 optimizer=make_optimizer("adam"), logdir=logdir,
                                 resume=resume)
    return model, result


def test_step_functions_trace_once_for_any_batch_size():
    """The top-level steps once per model (trace_steps, as fit_custom does), the steps
    bound to one model (make_train_step, make_test_step) once each."""
    model, optimizer = build_twinnet("fc16"), make_optimizer("sgd", 0.01)
    loss_fn, metrics = train.make_loss_fn(), train.EpochMetrics("train")
    counts = lambda: (train.train_step.experimental_get_tracing_count(),  # noqa: E731
                      train.test_step.experimental_get_tracing_count())
    before = counts()
    train.trace_steps(model, optimizer, loss_fn, metrics, metrics)
    train_step = train.make_train_step(model, optimizer, loss_fn)
    test_step = train.make_test_step(model, loss_fn, metrics)
    x, y = learnable(40)
    for size in (32, 8, 32, 5):
        batch = tf.constant(x[:size]), tf.constant(y[:size])
        train.train_step(model, optimizer, loss_fn, metrics, *batch)
        train.test_step(model, loss_fn, metrics, *batch)
        train_step(*batch)
        test_step(*batch)
    assert np.subtract(counts(), before).tolist() == [1, 1]
    assert train_step.experimental_get_tracing_count() == 1
    assert test_step.experimental_get_tracing_count() == 1
    assert int(optimizer.iterations) == 8


def test_train_steps_in_graph_equal_one_step_calls_and_stop_at_the_end_of_the_data():
    """k steps per call draw the batches in the graph; the training is the same."""
    x, y = learnable()
    keras.utils.set_random_seed(0)
    model, optimizer = build_twinnet("fc16"), make_optimizer("adam")
    train_step = train.make_train_step(model, optimizer, train.make_loss_fn())
    losses = [float(train_step(bx, by)) for bx, by in batches(x, y)]
    for k, expected_calls in ((1, [1] * STEPS + [0]), (3, [3, 3, 1])):
        keras.utils.set_random_seed(0)
        twin, twin_optimizer = build_twinnet("fc16"), make_optimizer("adam")
        train_steps = make_train_steps(twin, twin_optimizer, train.make_loss_fn())
        iterator, calls, twin_losses = iter(batches(x, y)), [], []
        while not calls or calls[-1] == k:
            twin_losses += list(train_steps(iterator, tf.constant(k)).numpy())
            calls.append(len(twin_losses) - sum(calls))
        assert calls == expected_calls and int(twin_optimizer.iterations) == STEPS
        np.testing.assert_array_equal(twin_losses, np.float32(losses))
        for a, b in zip(model.weights, twin.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_train_steps_stop_after_a_step_whose_loss_is_not_finite():
    model, optimizer = build_twinnet("fc16"), make_optimizer("sgd", 0.01)
    train_steps = make_train_steps(model, optimizer, train.make_loss_fn())
    x, y = learnable()
    bad_x, _ = learnable(overflow=True)
    x[BATCH:2 * BATCH] = bad_x[:BATCH]  # the second batch overflows
    losses = train_steps(iter(batches(x, y)), tf.constant(5)).numpy()
    assert len(losses) == 2 and np.isfinite(losses[0]) and not np.isfinite(losses[1])
    assert int(optimizer.iterations) == 2


def test_train_step_loss_is_cross_entropy_plus_l2_and_metrics_accumulate():
    l2 = 1e-3
    keras.utils.set_random_seed(1)
    model = build_twinnet("fc16", l2=l2)
    metrics = train.EpochMetrics("train")
    step = train.make_train_step(model, make_optimizer("sgd", 0.01),
                                 train.make_loss_fn(), metrics)
    x, y = learnable(24)
    logits = model(x).numpy().astype(np.float64)
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    cross_entropy = -log_probs[np.arange(24), y].mean()
    penalty = l2 * sum(float(np.sum(np.float64(layer.kernel.numpy()) ** 2))
                       for layer in model.arch_layers if layer.name == "dense_1")  # hidden only
    loss = float(step(tf.constant(x), tf.constant(y)))
    assert loss == pytest.approx(cross_entropy + penalty, rel=1e-5)
    assert metrics.result()["loss"] == pytest.approx(loss, rel=1e-6)
    assert metrics.result()["accuracy"] == pytest.approx(float((logits.argmax(1) == y).mean()))


def test_custom_loop_event_files(uninterrupted):
    logdir, model, result = uninterrupted("custom", 2)
    assert result["status"] == "completed" and [e["epoch"] for e in result["epochs"]] == [1, 2]
    assert result["epochs"][-1]["accuracy"] > result["epochs"][0]["accuracy"]
    tr, val = accumulator(logdir / "train"), accumulator(logdir / "validation")

    assert plugin_tags(tr, "scalars") == {"batch_loss", "epoch_loss", "epoch_accuracy",
                                          "epoch_learning_rate"}
    assert plugin_tags(val, "scalars") == {"epoch_loss", "epoch_accuracy"}
    assert steps(tr, "batch_loss") == list(range(1, 2 * STEPS + 1))
    assert steps(tr, "epoch_loss") == steps(val, "epoch_accuracy") == [0, 1]
    lr = tf.make_ndarray(tr.Tensors("epoch_learning_rate")[0].tensor_proto)
    assert float(lr) == pytest.approx(DEFAULT_LR["adam"])

    histograms = plugin_tags(tr, "histograms")
    assert histograms == {v.path for v in model.weights}
    assert len(histograms) == len(model.trainable_variables) == 4
    assert all(steps(tr, tag) == [0, 1] for tag in histograms)

    (image_tag,) = plugin_tags(val, "images")
    for event in val.Tensors(image_tag):
        width, height, *pngs = tf.make_ndarray(event.tensor_proto)
        assert len(pngs) == MISCLASSIFIED_SHOWN
        assert tf.io.decode_png(pngs[0]).shape == (int(height), int(width), 3)

    assert graph_events(logdir / "train") == 1
    ops = {node.op for node in tr.Graph().node}
    assert {"MatMul", "BiasAdd", "Relu"} <= ops
    # forward only: no optimizer updates, no data pipeline
    assert not {op for op in ops
                if "Apply" in op or "Iterator" in op or op == "AssignAddVariableOp"}


def test_label_digits_shows_each_digit_under_a_caption():
    images = np.zeros((3, 784), np.float32)
    images[:, 300:310] = 1.0
    out = label_digits(images, [1, 2, 3], [7, 7, 7], scale=4)
    assert out.shape == (3, 28 * 4 + 14, 28 * 4, 3) and out.dtype == np.uint8
    digit = out[0, 14:, :, 0]
    np.testing.assert_array_equal(digit, np.kron(images[0].reshape(28, 28) * 255,
                                                 np.ones((4, 4))).astype(np.uint8))
    assert out[0, :14].any()  # the caption band holds text
    assert not np.array_equal(out[0, :14], out[1, :14])  # ... that names the labels


def test_interrupt_then_resume_keeps_the_event_files_continuous(tmp_path, monkeypatch):
    # 2 steps per call: 4 calls per epoch of 7 batches, so call 10 is epoch 3's second.
    ctrl_c_after_call(monkeypatch, 10)
    _, first = run_custom(tmp_path, epochs=4, steps_per_call=2)
    assert first["status"] == "interrupted" and first["epoch"] == 3
    assert [e["epoch"] for e in first["epochs"]] == [1, 2]
    assert first["step"] == 2 * STEPS  # epoch 3's steps are dropped, to be run again
    assert first["checkpoint"].endswith("ckpt-2")

    monkeypatch.undo()
    _, second = run_custom(tmp_path, epochs=4, resume=True)
    assert second["status"] == "completed" and second["epoch"] == 4
    assert [e["epoch"] for e in second["epochs"]] == [1, 2, 3, 4]
    assert second["resumed_from"] == 2 and second["step"] == 4 * STEPS
    tr = accumulator(tmp_path / "train")
    losses = {}
    for event in tr.Tensors("batch_loss"):
        losses.setdefault(event.step, set()).add(float(tf.make_ndarray(event.tensor_proto)))
    assert sorted(losses) == list(range(1, second["step"] + 1))
    # Epoch 3's first 4 steps are logged twice, before the Ctrl-C and after: the same losses.
    assert len(tr.Tensors("batch_loss")) == second["step"] + 4
    assert all(len(values) == 1 for values in losses.values())
    assert steps(tr, "epoch_loss") == [0, 1, 2, 3]
    assert graph_events(tmp_path / "train") == 1  # not again on --resume


# --- resume: bit for bit an uninterrupted run --------------------------------------------

RUNS = {"custom": run_custom, "fit": run_fit}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """uninterrupted(loop, epochs, name) -> (logdir, model, result) of that run done at
    once, trained on first use and shared: the state each stopped and resumed run ends in
    (every run seeds itself, so one made earlier in the process is the same run)."""
    done = {}

    def run(loop, epochs, name="fc16"):
        if (loop, epochs, name) not in done:
            logdir = tmp_path_factory.mktemp(f"whole-{loop}-{epochs}-{name}")
            done[loop, epochs, name] = (logdir, *RUNS[loop](logdir, epochs=epochs, name=name))
        return done[loop, epochs, name]

    return run


@pytest.mark.parametrize("loop, name", [("custom", "fc16"), ("fit", "fc16"),
                                        ("custom", "best"), ("fit", "best")])
def test_resume_after_a_clean_stop_equals_an_uninterrupted_run(tmp_path, uninterrupted, loop,
                                                              name):
    """N epochs at once, and one epoch per call with resume: the same batches in the same
    order, steps, weights, optimizer state and records, to the last bit. ("best" adds
    BatchNorm's moving statistics and dropout's seed state to what must carry over.)"""
    epochs = 3 if name == "fc16" else 2
    whole_logdir, _, whole = uninterrupted(loop, epochs, name)
    for epoch in range(1, epochs + 1):
        _, part = RUNS[loop](tmp_path, epochs=epoch, resume=epoch > 1, name=name)
        assert part["status"] == "completed" and part["resumed_from"] == epoch - 1
    assert part["step"] == whole["step"] == epochs * STEPS
    assert [e["epoch"] for e in part["epochs"]] == list(range(1, epochs + 1))
    assert_same_state(tmp_path, whole_logdir)


def test_the_control_resuming_in_the_first_epochs_order_would_differ(tmp_path, monkeypatch,
                                                                     uninterrupted):
    """Without skipping the shuffles of the epochs done, the test above fails."""
    whole_logdir, _, _ = uninterrupted("custom", 2)
    monkeypatch.setattr(runner, "skip_shuffles", lambda dataset, iterators: None)
    run_custom(tmp_path, epochs=1)
    run_custom(tmp_path, epochs=2, resume=True)
    with pytest.raises(AssertionError):
        assert_same_state(tmp_path, whole_logdir)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("loop", RUNS)
@pytest.mark.parametrize("stopped_epoch", [1, 2])
def test_an_interrupted_epoch_is_run_again_from_its_start(tmp_path, monkeypatch, uninterrupted,
                                                          loop, signum, stopped_epoch):
    """Ctrl-C or SIGTERM in the middle of an epoch: the run stops with the model as the
    last checkpoint left it (the run's start, in epoch 1), and resume ends exactly where
    an uninterrupted run ends."""
    whole_logdir, _, whole = uninterrupted(loop, 3)
    if loop == "custom":  # 2 steps per call: call 4k + 2 is in the middle of epoch k + 1
        ctrl_c_after_call(monkeypatch, 4 * (stopped_epoch - 1) + 2, signum)
        _, stopped = run_custom(tmp_path / "parts", epochs=3, steps_per_call=2)
    else:
        ctrl_c_at_step(monkeypatch, (stopped_epoch - 1) * STEPS + 3, signum)
        _, stopped = run_fit(tmp_path / "parts", epochs=3)
    done = stopped_epoch - 1
    assert stopped["status"] == "interrupted" and stopped["epoch"] == stopped_epoch
    assert stopped["signal"] == signal.Signals(signum).name
    assert stopped["step"] == done * STEPS and len(stopped["epochs"]) == done
    assert stopped["checkpoint"].endswith(f"ckpt-{done}")

    monkeypatch.undo()
    _, resumed = RUNS[loop](tmp_path / "parts", epochs=3, resume=True)
    assert resumed["status"] == "completed" and resumed["resumed_from"] == done
    assert resumed["step"] == whole["step"]
    assert_same_state(tmp_path / "parts", whole_logdir)


def test_a_signal_during_a_checkpoint_write_acts_after_it():
    before = signal.getsignal(signal.SIGTERM)
    written = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            signal.raise_signal(signal.SIGINT)
            written.append("ckpt-1")
    with pytest.raises(Terminated):
        with sigterm_as_interrupt(), interrupts_deferred():
            signal.raise_signal(signal.SIGTERM)
            written.append("ckpt-2")
    assert written == ["ckpt-1", "ckpt-2"]
    assert signal.getsignal(signal.SIGTERM) == before
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler


def test_a_signal_during_training_steps_is_raised_only_where_the_loop_checks():
    """Raised inside TensorFlow's Python code, KeyboardInterrupt crashed one run in
    twenty as it exited: the training loops raise it themselves, between calls."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    steps = []
    with pytest.raises(Terminated):
        with stops_between_steps() as stop:
            steps.append(1)
            signal.raise_signal(signal.SIGTERM)
            steps.append(2)  # the step under way ends
            stop.check()
            steps.append(3)
    assert steps == [1, 2]
    with pytest.raises(KeyboardInterrupt) as raised:
        with stops_between_steps():
            signal.raise_signal(signal.SIGINT)
            steps.append(4)  # no check: raised as the block ends
    assert not isinstance(raised.value, Terminated) and steps == [1, 2, 4]
    with pytest.raises(KeyboardInterrupt):
        with stops_between_steps():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # pressed twice: at once
            steps.append(5)
    assert steps == [1, 2, 4]
    with stops_between_steps() as stop:
        stop.check()  # nothing noted, nothing raised
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_resume_restores_weights_and_optimizer_state(uninterrupted):
    logdir, model, _ = uninterrupted("custom", 2)
    restored = build_twinnet("fc16")
    optimizer = make_optimizer("adam")
    ckpts = Checkpoints(restored, optimizer, logdir / "checkpoints")
    assert [record["epoch"] for record in ckpts.restore()] == [1, 2]
    assert ckpts.step == 2 * STEPS
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    moments = [v for v in optimizer.variables if "momentum" in v.path or "velocity" in v.path]
    assert moments and all(np.any(v.numpy() != 0) for v in moments)


@pytest.mark.parametrize("run", [run_custom, partial(run_custom, steps_per_call=1), run_fit],
                         ids=["custom", "custom-plain-loop", "fit"])
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, run):
    _, good = run(tmp_path, epochs=1)
    nan_train, _ = train_and_val(overflow=True)
    _, bad = run(tmp_path, epochs=3, train_ds=nan_train, resume=True)
    assert bad["status"] == "diverged" and bad["epoch"] == 2
    assert not np.isfinite(bad["bad_loss"])
    assert bad["checkpoint"] == good["checkpoint"]
    restored = build_sequential("fc16") if run is run_fit else build_twinnet("fc16")
    ckpts = Checkpoints(restored, make_optimizer("adam"), tmp_path / "checkpoints")
    assert len(ckpts.restore()) == 1
    assert all(np.isfinite(v.numpy()).all() for v in restored.weights)


def test_fit_loop_events_checkpoints_and_resume(tmp_path):
    model, first = run_fit(tmp_path, epochs=2)
    assert first["status"] == "completed" and first["step"] == 2 * STEPS
    _, second = run_fit(tmp_path, epochs=3, resume=True)
    assert [e["epoch"] for e in second["epochs"]] == [1, 2, 3] and second["resumed_from"] == 2
    assert second["epochs"][:2] == first["epochs"]  # the history carries over
    assert second["step"] == 3 * STEPS
    assert second["seconds_per_epoch"] == pytest.approx(
        np.mean([e["seconds"] for e in second["epochs"]]))
    tr, val = accumulator(tmp_path / "train"), accumulator(tmp_path / "validation")
    assert steps(tr, "epoch_loss") == steps(val, "epoch_loss") == [0, 1, 2]
    histograms = plugin_tags(tr, "histograms")
    assert len(histograms) == len(model.weights) == 4


# The command line, on a small generated MNIST folder (labels 0..9 cycling, random pixels).

@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    # The fixed validation split takes 500 per class, so the training set needs more.
    return write_idx_folder(tmp_path_factory.mktemp("fake-mnist"), n_train=5200, n_test=40)


cli = partial(run_command, train_cli.main)  # `python -m keras_impl.train ...` -> exit code


def quick_args(data_dir, logdir, *extra):
    return ("--model", "fc8", "--data-dir", data_dir, "--logdir", logdir, "--limit", 64,
            "--batch-size", 16, *extra)


@pytest.mark.parametrize("loop", ["custom", "fit"])
def test_cli_trains_saves_and_resumes_as_if_never_stopped(tmp_path, capsys, fake_mnist, loop):
    """make_dataset's reshuffled, augmented batches: 1 epoch, then --resume to 2, ends as
    2 epochs at once do, and --json holds both epochs."""
    logdir, summary = tmp_path / "run", tmp_path / "out" / "summary.json"
    args = quick_args(fake_mnist, logdir, "--loop", loop, "--augment", "--json", summary)
    assert cli(*args, "--epochs", 1) == 0
    out = capsys.readouterr().out
    assert f"tensorboard --logdir {logdir}" in out
    result = json.loads(summary.read_text())
    assert [e["epoch"] for e in result["epochs"]] == [1]
    assert result["config"]["loop"] == loop and result["step"] == 4
    for path in result["saved"].values():
        assert Path(path).is_file() and Path(path).parent == logdir
    assert keras_test.load_model(logdir / "model.h5").input_shape == (None, 784)

    assert cli(*args, "--epochs", 2, "--resume") == 0
    result = json.loads(summary.read_text())
    assert [e["epoch"] for e in result["epochs"]] == [1, 2] and result["step"] == 2 * 4
    assert result["resumed_from"] == 1
    assert result["seconds_per_epoch"] == pytest.approx(np.mean([e["seconds"]
                                                                 for e in result["epochs"]]))
    whole = tmp_path / "whole"
    assert cli(*quick_args(fake_mnist, whole, "--loop", loop, "--augment", "--epochs", 2)) == 0
    assert_same_state(logdir, whole)
    for a, b in zip(keras_test.load_model(whole / "model.keras").weights,
                    keras_test.load_model(logdir / "model.keras").weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_cli_refuses_to_mix_runs(tmp_path, capsys, fake_mnist):
    logdir = tmp_path / "run"
    assert cli(*quick_args(fake_mnist, logdir, "--epochs", 2)) == 0
    capsys.readouterr()
    resume = quick_args(fake_mnist, logdir, "--epochs", 3, "--resume")
    cases = [(quick_args(fake_mnist, logdir, "--epochs", 3), "already holds a run"),
             ((*resume, "--optimizer", "sgd"), "was trained with --optimizer adam, not sgd"),
             ((*resume, "--lr", 0.01), "was trained with --lr 0.001, not 0.01"),
             ((*resume, "--seed", 1), "was trained with --seed 0, not 1"),
             ((*resume, "--limit", 32), "was trained with --limit 64, not 32"),
             (quick_args(fake_mnist, logdir, "--epochs", 1, "--resume"),
              "ckpt-2: holds 2 completed epochs, more than the 1 asked for"),
             (quick_args(fake_mnist, tmp_path / "empty", "--epochs", 2, "--resume"),
              "no checkpoint to resume from")]
    for args, message in cases:
        assert cli(*args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err


def test_cli_resume_of_a_finished_run_writes_the_model_files_again(tmp_path, capsys,
                                                                    fake_mnist, monkeypatch):
    """Ctrl-C while the .h5 is written: one line, no partial files; the training is
    checkpointed, and --resume with the same --epochs only writes the files."""
    logdir, summary = tmp_path / "run", tmp_path / "summary.json"
    args = quick_args(fake_mnist, logdir, "--epochs", 1, "--json", summary)

    def interrupted(config):
        raise KeyboardInterrupt  # inside keras_impl.export.write_h5, its .tmp.h5 written

    monkeypatch.setattr(export, "keras_3_5_config", interrupted)
    assert cli(*args) == 128 + signal.SIGINT
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted while writing the model files") and "\n" not in err
    assert "ckpt-1 holds 1 epochs" in err and "--resume" in err
    assert json.loads(summary.read_text())["status"] == "interrupted"
    assert not [p for p in logdir.iterdir() if "tmp" in p.name or "partial" in p.name]
    assert not (logdir / "model.h5").exists()

    monkeypatch.undo()
    assert cli(*args, "--resume") == 0
    assert "nothing to train (1 of 1 epochs done)" in capsys.readouterr().out
    result = json.loads(summary.read_text())
    assert result["status"] == "completed" and [e["epoch"] for e in result["epochs"]] == [1]
    assert (logdir / "model.h5").is_file() and result["step"] == 4


def test_cli_sgd_momentum_is_trained_with_and_checked_on_resume(tmp_path, capsys, fake_mnist):
    logdir = tmp_path / "run"
    sgd = ("--optimizer", "sgd", "--lr", 0.05, "--nesterov")
    assert cli(*quick_args(fake_mnist, logdir, "--epochs", 1, *sgd, "--momentum", 0.9)) == 0
    config = json.loads((logdir / "run.json").read_text())
    assert (config["optimizer"], config["momentum"], config["nesterov"]) == ("sgd", 0.9, True)
    optimizer = make_optimizer("sgd", 0.05, momentum=0.9, nesterov=True)
    Checkpoints(build_twinnet("fc8"), optimizer, logdir / "checkpoints").restore()
    velocities = [v for v in optimizer.variables if "momentum" in v.path]
    assert velocities and all(np.any(v.numpy() != 0) for v in velocities)
    capsys.readouterr()
    assert cli(*quick_args(fake_mnist, logdir, "--epochs", 2, *sgd, "--momentum", 0.5,
                           "--resume")) == 2
    assert "was trained with --momentum 0.9, not 0.5" in capsys.readouterr().err


def test_cli_schedule_smoothing_augment(tmp_path, capsys, fake_mnist):
    """The learning rate follows the cosine schedule epoch by epoch, and a resumed run
    must keep the schedule's length and the other new options."""
    logdir, summary = tmp_path / "run", tmp_path / "summary.json"
    options = ("--schedule", "cosine", "--warmup-epochs", 1, "--label-smoothing", 0.1,
               "--augment", "--lr", 0.01, "--json", summary)
    assert cli(*quick_args(fake_mnist, logdir, "--epochs", 2, *options)) == 0
    config = json.loads((logdir / "run.json").read_text())
    assert (config["schedule"], config["epochs"], config["augment"]) == ("cosine", 2, True)
    events = event_accumulator.EventAccumulator(str(logdir / "train"),
                                                size_guidance={"tensors": 0})
    events.Reload()
    rates = [float(tf.make_ndarray(e.tensor_proto))
             for e in events.Tensors("epoch_learning_rate")]
    # logged after each epoch of 4 steps: step 4 is the peak (warmup over), step 8 the end
    assert rates == pytest.approx([0.01, 0.0], abs=1e-7)
    capsys.readouterr()
    for changed, message in [(("--epochs", 3), "was trained with --epochs 2, not 3"),
                             (("--epochs", 2, "--label-smoothing", 0.2),
                              "was trained with --label-smoothing 0.1, not 0.2")]:
        assert cli(*quick_args(fake_mnist, logdir, *options, *changed, "--resume")) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--model", "fc0"], "argument --model: unknown model 'fc0'"),
    (["--model", "fc8", "--epochs", "0"], "argument --epochs: must be a positive integer, got '0'"),
    (["--model", "fc8", "--lr", "-0.1"], "argument --lr: must be a positive number, got '-0.1'"),
    (["--model", "fc8", "--lr", "nan"], "argument --lr: must be a positive number, got 'nan'"),
    (["--model", "fc8", "--l2", "-1"], "argument --l2: must be a number >= 0, got '-1'"),
    (["--model", "fc8", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["--model", "fc8", "--batch-size", "many"],
     "argument --batch-size: must be a positive integer, got 'many'"),
    (["--epochs", "1"], "the following arguments are required: --model"),
    (["--model", "fc8", "--label-smoothing", "1"],
     "argument --label-smoothing: must be a number in [0, 1), got '1'"),
    (["--model", "fc8", "--momentum", "0.9"],
     "--momentum and --nesterov apply to --optimizer sgd only"),
    (["--model", "fc8", "--optimizer", "sgd", "--nesterov"], "--nesterov needs --momentum > 0"),
    (["--model", "fc8", "--warmup-epochs", "1"],
     "--warmup-epochs needs --schedule cosine and must be below --epochs"),
    (["--model", "fc8", "--schedule", "cosine", "--epochs", "2", "--warmup-epochs", "2"],
     "--warmup-epochs needs --schedule cosine and must be below --epochs"),
])
def test_cli_bad_arguments(capsys, args, message):
    assert cli(*args) == 2
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err


def test_cli_divergence_is_one_line_and_exit_1(tmp_path, capsys, fake_mnist):
    summary = tmp_path / "summary.json"
    args = quick_args(fake_mnist, tmp_path / "run", "--epochs", 2, "--optimizer", "sgd",
                      "--lr", 1e30, "--json", summary)
    assert cli(*args) == 1
    err = capsys.readouterr().err.strip()
    assert re.match(r"error: loss became (nan|inf|-inf) in epoch 1 ", err) and "\n" not in err
    assert json.loads(summary.read_text())["status"] == "diverged"
    assert not (tmp_path / "run" / "model.keras").exists()


def test_cli_missing_data_is_one_line(tmp_path, capsys):
    assert cli(*quick_args(tmp_path / "nowhere", tmp_path / "run", "--epochs", 1)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nowhere" in err and "\n" not in err


@pytest.mark.parametrize("loop, signum", [("custom", signal.SIGINT), ("fit", signal.SIGTERM)],
                         ids=["custom-ctrl-c", "fit-sigterm"])
def test_a_signal_ends_the_command_in_one_line_and_resume_is_exact(tmp_path, fake_mnist, loop,
                                                                   signum):
    """The real command, stopped by a real signal at whatever point it reached, then
    resumed: the same state as an uninterrupted run of as many epochs."""
    logdir = tmp_path / "run"
    args = quick_args(fake_mnist, logdir, "--loop", loop, "--augment")
    proc = subprocess.Popen([sys.executable, "-m", "keras_impl.train",
                             *map(str, args), "--epochs", "10000"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (logdir / "checkpoints" / "ckpt-2.index").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in out + err
    assert re.fullmatch(r"interrupted in epoch \d+: checkpoint \S+ckpt-\d+ holds \d+ epochs "
                        r"\(step \d+\); continue with the same command plus --resume\n", err)

    done = len(saved_state(logdir)[1])
    assert done >= 2
    assert cli(*args, "--epochs", done + 1, "--resume") == 0
    whole = tmp_path / "whole"
    assert cli(*quick_args(fake_mnist, whole, "--loop", loop, "--augment"),
               "--epochs", done + 1) == 0
    assert_same_state(logdir, whole)


def test_fc128_one_epoch_custom_loop_reaches_the_course_bar(keras_fc128_run, tmp_path, capsys):
    """1 epoch of fc128 with the custom loop: > 90% on the 10,000 test images."""
    result = keras_fc128_run["result"]
    assert result["status"] == "completed" and len(result["epochs"]) == 1
    assert result["step"] == -(-55_000 // 128)
    report = tmp_path / "test.json"
    code = keras_test.main(["--model-path", str(keras_fc128_run["logdir"] / "model.keras"),
                            "--json", str(report)])
    assert code == 0
    assert json.loads(report.read_text())["accuracy"] > 0.90


@contextmanager
def keras_float64():
    """Layers built inside follow the float64 dtype policy (fixed once the first layer
    exists), losses and metrics floatx float64."""
    previous = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_dtype_policy("float64")
    keras.config.set_floatx("float64")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous[0])
        keras.config.set_floatx(previous[1])


def test_step_functions_take_the_model_dtype():
    with keras_float64():
        model = build_twinnet("fc16")
        loss_fn = train.make_loss_fn()
    assert model.compute_dtype == "float64"
    step = train.make_train_step(model, make_optimizer("sgd", 0.01), loss_fn)
    x, y = learnable(8)
    loss = step(tf.constant(x, tf.float64), tf.constant(y))
    assert loss.dtype == tf.float64


# --- the plain loop and the multistep loop: the same training ----------------------------

# Both loops run the same train_step graph, so here they agree to the last bit; another
# CPU's kernels may round differently. In float64 (rounding 1.1e-16 per operation), 14
# Adam steps of sums over at most 784 * 32 terms stay below 1e-12 relative; one batch
# left out of each epoch (the control) moves the weights by more than 1e-4.
LOOPS_RTOL = 1e-10


def float64_run(name, logdir, train_epoch, batches_per_epoch=STEPS):
    """fit_custom on float64 data (train_and_val's, reshuffled every epoch) with the
    given inner loop; returns ({variable: array} of model and optimizer, history)."""
    with keras_float64():
        keras.utils.set_random_seed(0)
        model, loss_fn = build_twinnet(name), train.make_loss_fn()
    optimizer = make_optimizer("adam")
    train_ds, val_ds = (ds.map(lambda x, y: (tf.cast(x, tf.float64), y))
                        for ds in train_and_val(images=zoo.has_conv(name)))
    history = train.fit_custom(model, train_ds.take(batches_per_epoch), val_ds, epochs=2,
                               optimizer=optimizer, logdir=logdir, loss_fn=loss_fn,
                               train_epoch=train_epoch)
    # Keyed by position and name: paths hold counters (adam_3/..., seed_generator_1/...).
    owners = {"model": model.variables, "optimizer": optimizer.variables}
    state = {f"{owner} {i} {v.name}": v.numpy()
             for owner, variables in owners.items() for i, v in enumerate(variables)}
    return state, [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def largest_difference(state, reference) -> float:
    """Largest max|a - b| / max|b| over the float arrays; integer arrays must be equal."""
    assert state.keys() == reference.keys()
    worst = 0.0
    for path, expected in reference.items():
        if np.issubdtype(expected.dtype, np.integer):
            np.testing.assert_array_equal(state[path], expected, err_msg=path)
        else:
            scale = max(float(np.max(np.abs(expected))), np.finfo(np.float64).tiny)
            worst = max(worst, float(np.max(np.abs(state[path] - expected))) / scale)
    return worst


@pytest.mark.parametrize("name", ["fc16", "convnet"])  # convnet: conv and dropout
def test_the_multistep_loop_trains_as_the_plain_loop(tmp_path, name):
    """train.train_epoch (a train_step call per batch) and MultistepEpochs (3 steps per
    graph call, so a short last call every epoch): the same weights, optimizer state
    (step count and dropout seeds exact) and history after the same 2 epochs."""
    plain, plain_history = float64_run(name, tmp_path / "plain", train.train_epoch)
    fast, fast_history = float64_run(name, tmp_path / "fast", MultistepEpochs(3))
    assert largest_difference(fast, plain) < LOOPS_RTOL
    for a, b in zip(fast_history, plain_history):
        assert a == pytest.approx(b, rel=LOOPS_RTOL)
    assert [record["step"] for record in fast_history] == [STEPS, 2 * STEPS]

    shorter, _ = float64_run(name, tmp_path / "control", train.train_epoch, STEPS - 1)
    floats = [path for path, array in plain.items() if array.dtype == np.float64]
    assert largest_difference({p: shorter[p] for p in floats},
                              {p: plain[p] for p in floats}) > 1e-4
