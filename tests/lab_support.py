"""What the lab's tests share: digits drawn as strokes, and the quick twin trained once.

STROKES holds a 1 and a 7 as polylines on the lab's 280x280 pad; the API tests rasterise
them with Pillow, the browser tests draw them with the mouse.
"""
import base64
import io

import numpy as np
from PIL import Image, ImageDraw

PAD = 280  # the page's drawing pad, in pixels
PEN = 18  # its pen width (lab.js INK)
STROKES = {
    1: [[(150, 40), (140, 240)]],
    7: [[(70, 60), (210, 60), (120, 240)]],
}


def drawn(digit: int) -> np.ndarray:
    """The digit's strokes on white paper: greyscale (280, 280) uint8, black ink."""
    image = Image.new("L", (PAD, PAD), 255)
    pen = ImageDraw.Draw(image)
    for line in STROKES[digit]:
        pen.line(line, fill=0, width=PEN, joint="curve")
        for x, y in (line[0], line[-1]):  # round ends, as the page's pen has
            pen.ellipse((x - PEN / 2, y - PEN / 2, x + PEN / 2, y + PEN / 2), fill=0)
    return np.asarray(image)


def png_bytes(grey: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.asarray(grey, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def data_url(grey: np.ndarray) -> str:
    """What the page sends: canvas.toDataURL("image/png")."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(grey)).decode()


def quick_models(config, tmp_path_factory):
    """The lab's models as `python compare.py lab` starts them without --models: the quick
    convnet, trained on first use and cached in pytest's cache (.pytest_cache), so a
    machine trains it once for all later runs (in a temporary folder when pytest runs
    without its cache, `-p no:cacheprovider`)."""
    from comparison.lab.twins import LabModels

    models = LabModels()
    cache = getattr(config, "cache", None)
    models.start(cache.mkdir("twinnet-lab") if cache else tmp_path_factory.mktemp("twinnet-lab"))  # loads it, or trains it in a thread
    assert models.wait() == "ready", models.message
    return models
