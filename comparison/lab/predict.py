"""`POST /api/predict` without the web: read a request, preprocess, run both twins, answer.

    reply = predict(twins, {"png": "data:image/png;base64,...", "transform": {"rotate": 20}})

The drawing goes through `keras_impl.digits` exactly as `python -m keras_impl.test --apply`
sends a file (a PNG is read by the same `load_grey`, then `mnist_steps`, whose field is
`to_mnist`'s result), then through the slider transforms (keras_impl.augment's `thicken`
and `affine`, the ops of the --augment pipeline and the --shifted test), and the result is
the one array both twins see. Every check of the request raises RequestError with a message
naming the field, which the server turns into a 4xx JSON answer.
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from keras_impl import explain as keras_explain
from keras_impl.augment import affine, thicken
from keras_impl.digits import DigitImageError, load_grey, mnist_steps
from scratch import explain as numpy_explain

MIN_SIDE, MAX_SIDE = 8, 1024  # pixels per side of a drawing
# name -> (lowest, highest, identity): the sliders; shifts in pixels of the 28x28 field,
# rotation in degrees anticlockwise, scale as a factor, thickness as augment.thicken's amount
TRANSFORMS = {"dx": (-10.0, 10.0, 0.0), "dy": (-10.0, 10.0, 0.0), "rotate": (-90.0, 90.0, 0.0),
              "scale": (0.4, 2.0, 1.0), "thickness": (-1.0, 1.0, 0.0)}
IG_STEPS = 16  # fewer than the figures' 32: the lab answers while you draw


class RequestError(ValueError):
    """A request the lab cannot answer; status 400 (malformed) or 422 (no digit in it)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"{name}: expected a finite number, got {value!r:.40}")
    return float(value)


def read_png(text) -> np.ndarray:
    """Greyscale (H, W) of a base64 PNG (a data: URL or bare base64), read by load_grey."""
    if not isinstance(text, str):
        raise RequestError("png: expected a base64 string or a data:image/png;base64 URL")
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise RequestError("png: expected a data URL with ;base64")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("png: not valid base64") from None
    return read_image_bytes(data)


def read_image_bytes(data: bytes) -> np.ndarray:
    """Greyscale (H, W) of an image file's bytes; its size is checked before decoding."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:  # far beyond MAX_SIDE: refused from the header
        raise RequestError(f"png: too many pixels; expected {MIN_SIDE} to {MAX_SIDE} "
                           "pixels per side") from None
    except (UnidentifiedImageError, OSError):
        raise RequestError("png: not an image Pillow can read") from None
    _check_size(height, width, "png")
    with tempfile.TemporaryDirectory() as folder:  # load_grey reads files, as --apply does
        path = Path(folder) / "drawing.png"
        path.write_bytes(data)
        try:
            return load_grey(path)
        except DigitImageError as err:
            raise RequestError(f"png: {str(err).split(': ', 1)[-1]}") from None


def read_pixels(pixels) -> np.ndarray:
    """Greyscale (H, W) from a list of H rows of W numbers in [0, 255] (dark ink or light)."""
    if not isinstance(pixels, list) or not pixels or not isinstance(pixels[0], list):
        raise RequestError("pixels: expected a list of rows, each a list of numbers")
    _check_size(len(pixels), len(pixels[0]), "pixels")
    try:
        grey = np.array(pixels)
    except ValueError:  # rows of different lengths
        raise RequestError("pixels: rows of different lengths") from None
    if grey.ndim != 2 or grey.dtype.kind not in "iuf":  # strings, None, booleans, nesting
        raise RequestError("pixels: expected a rectangular array of numbers")
    grey = grey.astype(np.float64)
    if not np.isfinite(grey).all() or grey.min() < 0 or grey.max() > 255:
        raise RequestError("pixels: expected numbers from 0 to 255")
    return grey


def _check_size(height: int, width: int, name: str) -> None:
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
        raise RequestError(f"{name}: {height}x{width} pixels; expected {MIN_SIDE} to "
                           f"{MAX_SIDE} pixels per side")


def read_transform(given) -> dict[str, float]:
    """The slider values, each checked against TRANSFORMS; missing ones are the identity."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise RequestError("transform: expected an object such as {\"rotate\": 15}")
    unknown = sorted(set(given) - set(TRANSFORMS))
    if unknown:
        raise RequestError(f"transform: unknown {', '.join(unknown)} (expected "
                           f"{', '.join(TRANSFORMS)})")
    values = {}
    for name, (low, high, identity) in TRANSFORMS.items():
        value = _number(given.get(name, identity), f"transform.{name}")
        if not low <= value <= high:
            raise RequestError(f"transform.{name}: {value:g} is outside {low:g} .. {high:g}")
        values[name] = value
    return values


def read_options(body: dict) -> tuple[str, int | None]:
    """(method, target class or None for the prediction)."""
    method = body.get("method", "saliency")
    if method not in numpy_explain.METHODS:
        raise RequestError(f"method: {method!r:.40}; expected one of "
                           f"{', '.join(numpy_explain.METHODS)}")
    target = body.get("target")
    if target is not None and (isinstance(target, bool) or not isinstance(target, int)
                               or not 0 <= target <= 9):
        raise RequestError(f"target: {target!r:.40}; expected a digit 0 to 9 or null")
    return method, target


def apply_transform(field: np.ndarray, values: dict[str, float]) -> np.ndarray:
    """The slider transforms on the 28x28 field: thickness first, then rotation, scale and
    shift about the centre (the order of augment.augment_batch), clipped to [0, 1]."""
    if all(values[name] == identity for name, (_, _, identity) in TRANSFORMS.items()):
        return field
    images = thicken(field[None, :, :, None], [values["thickness"]])
    images = affine(images, [values["rotate"]], [values["scale"]],
                    np.array([[values["dx"], values["dy"]]], np.float32))
    return np.clip(images.numpy()[0, :, :, 0], 0.0, 1.0)


def _rows(array, digits: int = 6) -> list:
    """An array as nested lists of floats rounded to `digits` significant digits (maps and
    images: a screen shows no more; probabilities are sent in full)."""
    return np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[float])(array).tolist()


def predict(twins, body) -> dict:
    """The answer to one request body (a dict parsed from JSON); see comparison.lab."""
    started = time.perf_counter()
    if not isinstance(body, dict):
        raise RequestError("expected a JSON object with \"png\" or \"pixels\"")
    if ("png" in body) == ("pixels" in body):
        raise RequestError("give exactly one of \"png\" and \"pixels\"")
    grey = read_png(body["png"]) if "png" in body else read_pixels(body["pixels"])
    transform = read_transform(body.get("transform"))
    method, target = read_options(body)
    try:
        steps = mnist_steps(grey, "drawing")
    except DigitImageError:
        raise RequestError("no digit found: the drawing is one flat colour", 422) from None
    image = apply_transform(steps.field, transform)
    with twins.lock:
        answer = both_twins(twins, image, method, target)
    return {"model": {"arch": twins.arch, "source": twins.source},
            "steps": {"inverted": steps.inverted, "size": list(grey.shape),
                      "crop": list(steps.crop), "box": _rows(steps.box),
                      "top_left": list(steps.top_left), "mnist": _rows(steps.field),
                      "input": image.astype(float).tolist()},
            "transform": transform, "method": method, **answer,
            "milliseconds": round(1000 * (time.perf_counter() - started), 1)}


def both_twins(twins, image: np.ndarray, method: str, target: int | None) -> dict:
    """Probabilities and the `method` map of `target` (default: the NumPy twin's prediction,
    explained on both sides) for one 28x28 image."""
    images = image[None]
    numpy_probs = numpy_explain.softmax(numpy_explain.class_scores(twins.numpy_model, images))[0]
    keras_scores = keras_explain.class_scores(twins.keras_model,
                                              keras_explain.model_input(twins.keras_model, images))
    keras_probs = tf.nn.softmax(keras_scores).numpy()[0]
    target = int(numpy_probs.argmax()) if target is None else target
    options = {"steps": IG_STEPS} if method == "integrated_gradients" else {}
    maps = {"numpy": numpy_explain.explain(twins.numpy_model, images, method, [target],
                                           **options)[0][0],
            "keras": keras_explain.explain(twins.keras_model, images, method, [target],
                                           **options)[0][0]}
    probs = {"numpy": numpy_probs.astype(np.float64), "keras": keras_probs.astype(np.float64)}
    return {"target": target,
            "twins": {side: {"probabilities": probs[side].tolist(),
                             "digit": int(probs[side].argmax()), "map": _rows(maps[side])}
                      for side in ("numpy", "keras")},
            "max_difference": float(np.abs(probs["numpy"] - probs["keras"]).max()),
            "map_difference": float(np.abs(maps["numpy"] - maps["keras"]).max()
                                    / max(np.abs(maps["numpy"]).max(), 1e-12))}
