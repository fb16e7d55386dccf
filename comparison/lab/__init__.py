"""The draw-a-digit lab: a local web page where both twins answer side by side.

    python compare.py lab [--port 8000] [--models DIR] [--host 127.0.0.1] [--cache-dir DIR]

Draw a digit with the mouse, a finger or a pen; the page shows, live, MNIST's
preprocessing step by step (the code of `keras_impl.test --apply`), the class
probabilities of the NumPy twin and of the Keras twin (the same weights), their largest
difference, and each twin's explanation map (saliency, gradient x input, integrated
gradients or occlusion; see scratch.explain and keras_impl.explain). Sliders shift,
rotate, scale and thicken the digit so you can find where the answer flips.

    cli.py     the command line
    server.py  the Flask app: routes, JSON errors, serving until Ctrl-C
    predict.py one request: checks, preprocessing, slider transforms, both twins
    twins.py   the twin pair: from --models files, or the quick convnet trained and cached
    static/    the page: index.html, lab.js, lab.css (plain files, nothing from the internet)

JSON API (what the page uses; notebooks and tests can too):

POST /api/predict, a JSON object:
    "png"        a PNG (or any image Pillow reads) as base64 or a data: URL, any size from
                 8 to 1024 pixels per side, dark ink on light or light on dark; or
    "pixels"     a list of rows of greyscale numbers 0..255 instead of "png";
    "transform"  optional {"dx": px, "dy": px, "rotate": degrees, "scale": factor,
                 "thickness": -1..1}, applied to the 28x28 field (see predict.TRANSFORMS);
    "method"     optional: "saliency" (default), "gradient_x_input", "integrated_gradients",
                 "occlusion";
    "target"     optional class 0..9 to explain (default: the NumPy twin's prediction).
  A raw PNG body (Content-Type: image/png) works too, with ?method=...&target=... .
  The answer:
    "model"      {"arch", "source"}
    "steps"      {"inverted", "size": [H, W], "crop": [top, bottom, left, right] of the ink,
                  "box": the crop resized into 20x20, "top_left": where the box went in the
                  field, "mnist": the 28x28 field, "input": the 28x28 array both twins get}
    "transform"  the slider values used; "method"; "target"
    "twins"      {"numpy": {"probabilities": [10], "digit", "map": 28x28},
                  "keras": {... the same ...}}
    "max_difference"  largest |NumPy - Keras| probability; "map_difference" the maps' largest
                 difference relative to their largest value; "milliseconds" server time.
GET /api/status        {"state": "ready" | "training" | "failed", "progress": 0..1,
                        "message", "model": {"arch", "source"} or null}
GET /api/random-digit  {"index", "label", "pixels": 28x28 of 0..255} (?index=N chooses one)

Errors: 400 malformed request, 404 unknown path or no MNIST for random digits, 405 wrong
method, 413 body over 8 MB, 422 a drawing without ink, 503 while the quick model trains;
each with {"error": "<one line>"}.
"""
