"""The lab's JSON API through Flask's test client, its model loading, and its command line.

Drawn digits are the strokes of tests/lab_support.py. Predictions need a trained model:
the lab's own quick convnet (trained once, kept in pytest's cache). Malformed requests
need none: an untrained twin answers them (every one must get a 4xx JSON error, and the
app must answer a good request afterwards).
"""
import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import needs_mnist
from comparison import layout, twin
from keras_impl.digits import preprocess_file
from comparison.lab import predict as lab_predict, twins as lab_twins
from comparison.lab.server import MAX_BODY, create_app
from keras_impl.zoo_model import build_twinnet
from lab_support import data_url, drawn, png_bytes
from scratch.model import build_model, save_npz

ROOT = Path(__file__).resolve().parents[1]
AGREE = 1e-5  # float32 twins: largest |NumPy - Keras| probability


def untrained_twins(arch="convnet") -> lab_twins.Twins:
    keras_model = build_twinnet(arch)
    numpy_model = build_model(arch)
    layout.to_numpy(keras_model, numpy_model)
    return lab_twins.Twins(arch, keras_model, numpy_model, "untrained")


@pytest.fixture(scope="module")
def client():
    """An app serving an untrained convnet (for everything but the right answer)."""
    app = create_app(lab_twins.LabModels(untrained_twins()))
    return app.test_client()


@pytest.fixture(scope="module")
def trained_client(quick_lab_models):
    return create_app(quick_lab_models).test_client()


def answer(client, body):
    reply = client.post("/api/predict", json=body)
    assert reply.is_json
    return reply.status_code, reply.get_json()


# --- predictions ------------------------------------------------------------------------

@needs_mnist
@pytest.mark.parametrize("digit", [1, 7])
@pytest.mark.parametrize("form", ["png", "pixels"])
def test_a_drawn_digit_is_recognised_by_both_twins(trained_client, digit, form, tmp_path):
    grey = drawn(digit)
    body = {"png": data_url(grey)} if form == "png" else {"pixels": grey.tolist()}
    status, reply = answer(trained_client, body)
    assert status == 200, reply
    numpy_p = np.array(reply["twins"]["numpy"]["probabilities"])
    keras_p = np.array(reply["twins"]["keras"]["probabilities"])
    assert reply["twins"]["numpy"]["digit"] == reply["twins"]["keras"]["digit"] == digit
    assert np.abs(numpy_p - keras_p).max() <= AGREE
    assert abs(numpy_p.sum() - 1) < 1e-6 and reply["target"] == digit
    # the network's input is what `keras_impl.test --apply` makes of the same drawing
    (tmp_path / "drawing.png").write_bytes(png_bytes(grey))
    np.testing.assert_array_equal(np.float32(reply["steps"]["input"]),
                                  preprocess_file(tmp_path / "drawing.png"))


@pytest.fixture(scope="module")
def trained_client_float64(quick_lab_models):
    """The quick twins' weights in float64 on both sides, served by the app.

    Gradient maps are where float32 twins part: a ReLU whose pre-activation lies within
    rounding of zero (or a max-pool window whose two largest entries do) switches on one
    side and not on the other, and moves the map by that unit's whole path to the input,
    far more than rounding (4e-3 of a 0.62 saliency map on an AMD EPYC, 0 on other CPUs).
    In float64 the two sides' pre-activations differ by about 1e-16 of their size, so no
    unit of a drawn digit sits that close to its switch and the maps agree to rounding.
    """
    trained = quick_lab_models.twins
    numpy_model = trained.numpy_model.astype(np.float64)
    with twin.keras_floatx("float64"):
        keras_model = build_twinnet(trained.arch)
    layout.to_keras(numpy_model, keras_model)
    twins = lab_twins.Twins(trained.arch, keras_model, numpy_model, "float64 quick twins")
    return create_app(lab_twins.LabModels(twins)).test_client()


@needs_mnist
@pytest.mark.parametrize("method", lab_predict.numpy_explain.METHODS)
def test_both_twins_draw_the_same_map(trained_client_float64, method):
    status, reply = answer(trained_client_float64, {"png": data_url(drawn(7)),
                                                    "method": method, "target": 1})
    assert status == 200 and reply["method"] == method and reply["target"] == 1
    ours, theirs = (np.array(reply["twins"][side]["map"]) for side in ("numpy", "keras"))
    assert ours.shape == (28, 28) and np.abs(ours).max() > 0
    # Each side's map is sent to 6 significant digits (off by at most 5e-6 of the entry)
    # and float64 twins agree to 1e-7 of it (tests/test_explain.py): per entry within
    # 1.01e-5 of the larger of the two, plus 1e-15 of the map for entries that are 0.
    larger = np.maximum(np.abs(ours), np.abs(theirs))
    assert (np.abs(ours - theirs) <= 1.01e-5 * larger + 1e-15 * larger.max()).all()


def test_sliders_move_the_digit(client):
    base = {"pixels": drawn(1).tolist()}
    _, plain = answer(client, base)
    field = np.array(plain["steps"]["input"])
    # the identity leaves the field as it is ("mnist" is sent to 6 significant digits)
    np.testing.assert_allclose(field, plain["steps"]["mnist"], rtol=1e-5, atol=1e-7)
    _, moved = answer(client, {**base, "transform": {"dx": 4}})
    _, thick = answer(client, {**base, "transform": {"thickness": 1}})
    _, turned = answer(client, {**base, "transform": {"rotate": 45}})
    cols = np.arange(28)
    centre = lambda image: (np.array(image).sum(axis=0) @ cols) / np.array(image).sum()
    assert centre(moved["steps"]["input"]) == pytest.approx(centre(field) + 4, abs=0.3)
    assert np.sum(thick["steps"]["input"]) > 1.5 * field.sum()
    assert np.abs(np.array(turned["steps"]["input"]) - field).max() > 0.5
    assert turned["twins"]["numpy"]["probabilities"] != plain["twins"]["numpy"]["probabilities"]


def test_a_raw_png_body_is_read_like_a_file(client):
    reply = client.post("/api/predict?method=occlusion&target=3", data=png_bytes(drawn(7)),
                        content_type="image/png")
    assert reply.status_code == 200
    assert reply.get_json()["method"] == "occlusion" and reply.get_json()["target"] == 3


def test_many_tabs_at_once(client):
    """Threads posting at the same time (the app's lock serialises the models): every
    answer is the one its own drawing gets alone."""
    alone = {d: answer(client, {"pixels": drawn(d).tolist()})[1]["twins"]["numpy"]
             ["probabilities"] for d in (1, 7)}
    results, errors = [], []

    def tab(digit):
        try:
            for _ in range(4):
                status, reply = answer(client, {"pixels": drawn(digit).tolist()})
                results.append((digit, status, reply["twins"]["numpy"]["probabilities"]))
        except Exception as err:  # reported below: a thread's assert would vanish
            errors.append(err)

    threads = [threading.Thread(target=tab, args=(d,)) for d in (1, 7, 1, 7, 1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 24
    assert all(status == 200 and probs == alone[digit] for digit, status, probs in results)


# --- malformed requests: 4xx with a JSON error, and the app keeps answering ------------------

WHITE = np.full((40, 40), 255).tolist()
BAD_BODIES = {
    "empty canvas": ({"pixels": WHITE}, 422, "no digit found"),
    "empty canvas as png": ({"png": data_url(np.full((280, 280), 255))}, 422, "no digit"),
    "no image": ({"method": "saliency"}, 400, "exactly one of"),
    "both images": ({"pixels": WHITE, "png": "x"}, 400, "exactly one of"),
    "pixels not a list": ({"pixels": "abc"}, 400, "list of rows"),
    "empty pixels": ({"pixels": []}, 400, "list of rows"),
    "too small": ({"pixels": [[0, 255]] * 2}, 400, "2x2 pixels"),
    "too large": ({"pixels": [[0] * 2000] * 10}, 400, "10x2000 pixels"),
    "ragged rows": ({"pixels": [[0] * 10] * 9 + [[0] * 9]}, 400, "rows of different lengths"),
    "3-D": ({"pixels": [[[0, 0]] * 10] * 10}, 400, "rectangular array of numbers"),
    "strings": ({"pixels": [["0"] * 10] * 10}, 400, "rectangular array of numbers"),
    "nulls": ({"pixels": [[None] * 10] * 10}, 400, "rectangular array of numbers"),
    "booleans": ({"pixels": [[True] * 10] * 10}, 400, "rectangular array of numbers"),
    "out of range": ({"pixels": [[300] * 10] * 10}, 400, "0 to 255"),
    "negative": ({"pixels": [[-1] * 10] * 10}, 400, "0 to 255"),
    "png not a string": ({"png": 12}, 400, "base64 string"),
    "png not base64": ({"png": "&&&"}, 400, "not valid base64"),
    "png not an image": ({"png": base64.b64encode(b"hello").decode()}, 400, "not an image"),
    "png data url without base64": ({"png": "data:image/png,abc"}, 400, ";base64"),
    "transform not an object": ({"pixels": WHITE, "transform": [1]}, 400, "an object"),
    "unknown transform": ({"pixels": WHITE, "transform": {"zoom": 2}}, 400, "unknown zoom"),
    "transform not a number": ({"pixels": WHITE, "transform": {"dx": "2"}}, 400, "finite number"),
    "transform out of range": ({"pixels": WHITE, "transform": {"scale": 9}}, 400, "outside"),
    "unknown method": ({"pixels": WHITE, "method": "gradcam"}, 400, "method: 'gradcam'"),
    "target not a digit": ({"pixels": WHITE, "target": 10}, 400, "target: 10"),
    "target a string": ({"pixels": WHITE, "target": "7"}, 400, "target: '7'"),
    "body a list": ([1, 2], 400, "JSON object"),
}


@pytest.mark.parametrize("case", BAD_BODIES)
def test_malformed_requests_get_a_json_error(client, case):
    body, status, words = BAD_BODIES[case]
    got, reply = answer(client, body)
    assert (got, set(reply)) == (status, {"error"}) and words in reply["error"], reply
    assert answer(client, {"pixels": drawn(1).tolist()})[0] == 200  # still serving


@pytest.mark.parametrize("data, content_type, status, words", [
    (b"{not json", "application/json", 400, "expected a JSON body"),
    (b"pixels=1", "application/x-www-form-urlencoded", 400, "expected a JSON body"),
    (b'{"pixels": [[NaN, 1]]}', "application/json", 400, "1x2 pixels"),
    (b'{"pixels": ' + b"[" + b",".join([b"[NaN" + b",0" * 9 + b"]"] * 10) + b"]}",
     "application/json", 400, "0 to 255"),
    (b"x" * (MAX_BODY + 1), "application/json", 413, "Too Large"),
    (png_bytes(np.zeros((3000, 20))), "image/png", 400, "3000x20 pixels"),
])
def test_malformed_bodies_get_a_json_error(client, data, content_type, status, words):
    reply = client.post("/api/predict", data=data, content_type=content_type)
    assert reply.status_code == status and words in reply.get_json()["error"]


def test_wrong_paths_and_methods_get_json_errors(client):
    assert client.get("/api/predict").status_code == 405
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and "error" in missing.get_json()


def test_an_unexpected_failure_is_a_500_and_the_server_goes_on(client, monkeypatch):
    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr("comparison.lab.server.predict", broken)
    reply = client.post("/api/predict", json={"pixels": WHITE})
    assert reply.status_code == 500 and "RuntimeError: boom" in reply.get_json()["error"]
    monkeypatch.undo()
    assert answer(client, {"pixels": drawn(7).tolist()})[0] == 200


def test_no_predictions_while_the_model_trains():
    models = lab_twins.LabModels()  # not started: "training", as on a first start
    client = create_app(models).test_client()
    assert client.get("/api/status").get_json()["state"] == "training"
    reply = client.post("/api/predict", json={"pixels": drawn(1).tolist()})
    assert reply.status_code == 503 and "no model yet" in reply.get_json()["error"]


def test_the_page_and_its_files_are_served_locally(client):
    page = client.get("/").get_data(as_text=True)
    assert "<canvas id=\"pad\"" in page and "http" not in page.replace("http-equiv", "")
    for path in ("/static/lab.js", "/static/lab.css"):
        assert client.get(path).status_code == 200
    # the sliders span exactly what the server accepts
    for name, (low, high, identity) in lab_predict.TRANSFORMS.items():
        slider = re.search(rf'<input id="{name}" type="range" ([^>]*)>', page).group(1)
        values = dict(re.findall(r'(\w+)="([^"]*)"', slider))
        assert (float(values["min"]), float(values["max"]), float(values["value"])) == (
            low, high, identity)


@needs_mnist
def test_random_test_digit(client):
    reply = client.get("/api/random-digit?index=3").get_json()
    assert reply["index"] == 3 and reply["label"] == 0  # MNIST's fourth test digit is a 0
    assert np.array(reply["pixels"]).shape == (28, 28)
    assert client.get("/api/random-digit?index=10000").status_code == 400
    assert 0 <= client.get("/api/random-digit").get_json()["index"] < 10_000


def test_random_test_digit_without_mnist(tmp_path):
    client = create_app(lab_twins.LabModels(untrained_twins()), data_dir=tmp_path).test_client()
    reply = client.get("/api/random-digit")
    assert reply.status_code == 404 and "no MNIST test digits" in reply.get_json()["error"]


# --- models from files --------------------------------------------------------------------

def test_models_from_either_file_or_both(tmp_path):
    twins = untrained_twins("fc128")
    twins.keras_model.save(tmp_path / "model.keras")
    save_npz(twins.numpy_model, tmp_path / "fc128.npz")
    image = drawn(7)[None, ::10, ::10] / 255.0
    expected = twins.numpy_model.forward(image[..., None])
    both = lab_twins.load_twins(tmp_path)
    (tmp_path / "keras-only").mkdir()
    os.replace(tmp_path / "model.keras", tmp_path / "keras-only" / "model.keras")
    keras_only = lab_twins.load_twins(tmp_path / "keras-only")
    numpy_only = lab_twins.load_twins(tmp_path / "fc128.npz")
    for loaded in (both, keras_only, numpy_only):
        assert loaded.arch == "fc128"
        np.testing.assert_array_equal(loaded.numpy_model.forward(image[..., None]), expected)
        lab_twins.check_same_weights(loaded)
    assert "copied" in keras_only.source and "copied" in numpy_only.source


def test_model_files_that_cannot_be_used_are_named(tmp_path):
    twins = untrained_twins("fc128")
    twins.keras_model.save(tmp_path / "model.keras")
    other = build_model("fc128", seed=1)  # another network's weights
    save_npz(other, tmp_path / "other.npz")
    with pytest.raises(lab_twins.TwinsError, match="hold different weights"):
        lab_twins.load_twins(tmp_path)
    (tmp_path / "two").mkdir()
    for name in ("a.npz", "b.npz"):
        save_npz(other, tmp_path / "two" / name)
    with pytest.raises(lab_twins.TwinsError, match="2 .npz files"):
        lab_twins.load_twins(tmp_path / "two")
    with pytest.raises(lab_twins.TwinsError, match="no such folder"):
        lab_twins.load_twins(tmp_path / "missing")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(lab_twins.TwinsError, match="broken.npz"):
        lab_twins.load_twins(tmp_path / "broken.npz")


def test_the_quick_model_trains_with_progress_and_is_cached(tmp_path, monkeypatch):
    """The first-start path, made small: progress is reported, both sides are cached,
    and the next start loads them and says so."""
    if not os.environ.get("MNIST_DIR"):
        pytest.skip("MNIST_DIR is not set (the quick model trains on MNIST)")
    monkeypatch.setattr(lab_twins, "QUICK_IMAGES", 640)
    monkeypatch.setattr(lab_twins, "QUICK_EPOCHS", 1)
    models = lab_twins.LabModels()
    seen = []
    models.start(tmp_path)
    while models.state == "training":
        seen.append(models.progress)
        time.sleep(0.05)
    assert models.wait() == "ready" and "trained on this start" in models.twins.source
    assert 0 < max(seen, default=0.5) <= 1
    lab_twins.check_same_weights(models.twins)
    again = lab_twins.LabModels()
    again.start(tmp_path)
    assert again.state == "ready" and "trained on an earlier start" in again.twins.source


# --- the command line -----------------------------------------------------------------------

def test_bad_command_lines_are_one_line_errors(tmp_path, capsys):
    import compare

    assert compare.main(["lab", "--models", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    (tmp_path / "m").mkdir()
    save_npz(build_model("fc128"), tmp_path / "m" / "fc128.npz")
    assert compare.main(["lab", "--models", str(tmp_path / "m"), "--cache-dir",
                         str(tmp_path)]) == 2
    assert "--cache-dir" in capsys.readouterr().err


def test_the_lab_serves_until_ctrl_c(tmp_path):
    """`python compare.py lab` in a process of its own: the port taken by another server is
    refused in one line; the lab answers a drawing; Ctrl-C stops it, exit 0, no traceback."""
    folder = tmp_path / "models"
    folder.mkdir()
    save_npz(build_model("convnet"), folder / "convnet.npz")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, str(ROOT / "compare.py"), "lab", "--models", str(folder)]
    lab = subprocess.Popen(command + ["--port", "0"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = lab.stdout.readline()
        assert first.startswith("twinnet lab on http://127.0.0.1:"), first
        url = first.split()[3]
        request = urllib.request.Request(url + "api/predict", headers={
            "Content-Type": "application/json"}, data=json.dumps(
                {"png": data_url(drawn(7))}).encode())
        with urllib.request.urlopen(request, timeout=60) as reply:
            assert reply.status == 200 and "twins" in json.loads(reply.read())
        port = url.rstrip("/").rsplit(":", 1)[1]
        taken = subprocess.run(command + ["--port", port], capture_output=True, text=True,
                               env=env, timeout=120)
        assert taken.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
        assert "Traceback" not in taken.stderr
    finally:
        lab.send_signal(signal.SIGINT)
        out, err = lab.communicate(timeout=30)
    assert lab.returncode == 0 and out.strip() == "lab stopped" and "Traceback" not in err


def test_compare_lab_help_lists_the_options(capsys):
    import compare

    with pytest.raises(SystemExit):
        compare.main(["lab", "--help"])
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--port", "--models", "--host", "--cache-dir"))


def test_big_pngs_are_refused_before_decoding(client, monkeypatch):
    """Sizes are read from the PNG's header: a 5000 x 5000 white PNG is a few kB, and one
    past Pillow's decompression-bomb limit (lowered here) is refused before decoding."""
    data = png_bytes(np.full((5000, 5000), 255))
    assert len(data) < MAX_BODY
    reply = client.post("/api/predict", json={"png": base64.b64encode(data).decode()})
    assert reply.status_code == 400 and "5000x5000 pixels" in reply.get_json()["error"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    reply = client.post("/api/predict", json={"png": data_url(drawn(1))})
    assert reply.status_code == 400 and "too many pixels" in reply.get_json()["error"]
