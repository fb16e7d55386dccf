"""The lab's web server: a Flask app around `predict`, the static page, and a clean Ctrl-C.

    app = create_app(models, data_dir)     # routes, JSON errors, body limit
    serve(app, models, "127.0.0.1", 8000)  # until Ctrl-C or SIGTERM

Every answer of /api/... is JSON. A request the lab cannot use gets a 4xx status and
{"error": "<one line>"}; an unexpected failure inside a request is logged with its
traceback, answered with 500 and {"error": ...}, and the server goes on serving. The app
keeps no state per visitor, so any number of tabs can use it at once.
"""
from __future__ import annotations

import base64
import logging
import secrets
import socket
import sys
import threading

from flask import Flask, jsonify, request
from threadpoolctl import threadpool_limits
from werkzeug.exceptions import HTTPException
from werkzeug.serving import WSGIRequestHandler, make_server

from plumbing.interrupts import sigterm_as_interrupt
from comparison.lab.predict import RequestError, predict

MAX_BODY = 8 * 1024 * 1024  # bytes: a 1024x1024 drawing sent as JSON numbers fits
log = logging.getLogger("twinnet.lab")


class RandomDigits:
    """The MNIST test set, read on first use (for the "random test digit" button)."""

    def __init__(self, data_dir=None):
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._digits = None

    def get(self):
        """(images (N, 28, 28) uint8, labels (N,)); RequestError 404 when MNIST is missing."""
        from keras_impl.data import MnistError, load_mnist

        with self._lock:
            if self._digits is None:
                try:
                    self._digits = load_mnist("test", self.data_dir)
                except MnistError as err:
                    raise RequestError(f"no MNIST test digits here ({err})", 404) from None
            return self._digits


def error(status: int, message: str):
    return jsonify({"error": message}), status


def read_body() -> dict:
    """The request as predict() takes it: a JSON object, or a raw PNG body (Content-Type
    image/png) with method and target in the query string."""
    if request.mimetype == "image/png":
        body = {"png": base64.b64encode(request.get_data()).decode("ascii"),
                "method": request.args.get("method", "saliency")}
        if "target" in request.args:
            target = request.args["target"]
            body["target"] = int(target) if target.isdigit() else target
        return body
    body = request.get_json(silent=True)
    if body is None:
        raise RequestError("expected a JSON body (Content-Type: application/json) or a PNG "
                           "(Content-Type: image/png)")
    return body


def create_app(models, data_dir=None) -> Flask:
    """The Flask app serving `models` (a twins.LabModels); data_dir: MNIST for random digits."""
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False  # answers keep the documented order
    digits = RandomDigits(data_dir)

    @app.get("/")
    def page():
        return app.send_static_file("index.html")

    @app.get("/api/status")
    def status():
        return jsonify(models.status())

    @app.post("/api/predict")
    def predict_view():
        if models.state != "ready":
            return error(503, f"no model yet: {models.message}")
        return jsonify(predict(models.twins, read_body()))

    @app.get("/api/random-digit")
    def random_digit():
        images, labels = digits.get()
        index = request.args.get("index", type=int)
        if index is None:
            index = secrets.randbelow(len(labels))
        if not 0 <= index < len(labels):
            raise RequestError(f"index: expected 0 to {len(labels) - 1}")
        return jsonify({"index": index, "label": int(labels[index]),
                        "pixels": images[index].tolist()})

    @app.errorhandler(RequestError)
    def request_error(err):
        return error(err.status, str(err))

    @app.errorhandler(HTTPException)
    def http_error(err):  # 404, 405, 413 (body over MAX_BODY), ...
        return error(err.code, f"{err.name}: {err.description}")

    @app.errorhandler(Exception)
    def unexpected(err):
        log.exception("request failed")
        return error(500, f"internal error: {type(err).__name__}: {str(err)[:200]}")

    return app


class QuietRequests(WSGIRequestHandler):
    """Logs only server errors: a drawing sends a request per stroke."""

    def log_request(self, code="-", size="-"):
        if str(code).startswith("5"):
            super().log_request(code, size)


def serve(app: Flask, models, host: str, port: int, data_dir=None, cache_dir=None,
          start_models: bool = False) -> int:
    """Listen on host:port, then (start_models) load or train the quick twin, and serve
    until Ctrl-C or SIGTERM. Returns the exit code: 0, or 2 when the port cannot be had."""
    try:  # bound here, not by werkzeug, whose bind errors exit with its own two lines
        listener = socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as err:
        print(f"error: cannot listen on {host}:{port} ({err.strerror or err}); choose another "
              "--port or --host", file=sys.stderr)
        return 2
    with listener:  # werkzeug serves a duplicate of its descriptor
        server = make_server(host, port, app, threaded=True, request_handler=QuietRequests,
                             fd=listener.fileno())
    # The lab's NumPy matrices are small (one image, or one IG path): a second BLAS thread
    # only waits for the first, and fights TensorFlow's threads for the cores.
    threadpool_limits(limits=1, user_api="blas")
    if start_models:
        models.start(cache_dir, data_dir)
    shown = f"[{host}]" if ":" in host else host
    print(f"twinnet lab on http://{shown}:{server.port}/  (Ctrl-C stops it)", flush=True)
    try:
        with sigterm_as_interrupt():
            server.serve_forever()  # werkzeug's returns on Ctrl-C
    except KeyboardInterrupt:  # one arriving just outside its loop
        pass
    finally:
        server.server_close()
        models.stop()
    print("lab stopped", flush=True)
    return 0
