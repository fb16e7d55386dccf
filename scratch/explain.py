"""Why did the network say 7? Explanations of a prediction, from the engine's own backward pass.

Every method answers "which pixels matter for the score of class c?" with a map the size
of the image. The gradient methods need dS_c/dx, the derivative of the class score (the
logit of class c, before softmax) with respect to every input pixel. Training already
computes a derivative with respect to the input: `Model.backward(dlogits, input_grad=True)`
backpropagates any dL/dlogits to dL/dx. Start it from a one-hot vector instead of the
loss gradient, dlogits = e_c, and what comes out is dS_c/dx: no new backward code.

    maps, targets = explain(model, images, "integrated_gradients")   # predicted classes
    maps, _ = explain(model, images, "saliency", targets=[3, 5])     # chosen classes

  saliency              |dS_c/dx| (Simonyan et al. 2013): how much a small change of each
                        pixel moves the score, either way.
  gradient_x_input      dS_c/dx * x: the first-order contribution of each pixel, signed;
                        0 wherever the image is black, since changing nothing costs nothing.
  integrated_gradients  (x - x0) * mean of dS_c/dx along the straight path from a baseline
                        x0 (black) to x (Sundararajan et al. 2017), the mean taken at the
                        midpoints of `steps` equal pieces. Completeness: the map sums to
                        S_c(x) - S_c(x0), up to the error of that average.
  occlusion             forward passes only (Zeiler and Fergus 2014): slide a grey patch over
                        the image; each pixel gets the mean drop of the class probability
                        over the patch positions that hide it (negative: hiding it helps).

and for convolutional models `activation_maps`: what every conv layer outputs.

Images are (N, 28, 28) arrays in [0, 1]; every map is (N, 28, 28), in the model's dtype.
The model runs in inference mode (dropout off, BatchNorm on its moving statistics).
keras_impl.explain computes the same maps with TensorFlow's GradientTape, and the tests
prove the two agree in float64 to 1e-7.
"""
from __future__ import annotations

import numpy as np

from scratch.layer_classes import Conv2D
from scratch.model import Model

IG_STEPS = 32  # integrated gradients: points on the path from the baseline to the image
OCCLUSION_PATCH = 4  # pixels on a side of the grey square
OCCLUSION_STRIDE = 2  # pixels between patch positions
OCCLUSION_FILL = 0.5  # the grey of the patch: half-way between background and ink
SIDE = 28


def model_input(model: Model, images) -> np.ndarray:
    """images (N, 28, 28) -> (N, 28, 28, 1) in the model's dtype (MLPs flatten it themselves)."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise ValueError(f"images: expected shape (N, {SIDE}, {SIDE}), got {images.shape}")
    return images[..., None].astype(model.dtype)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities (N, K) from logits (N, K), max-shifted so nothing overflows."""
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def class_scores(model: Model, images) -> np.ndarray:
    """Logits (N, 10) in inference mode."""
    return model.forward(model_input(model, images), training=False)


def resolve_targets(model: Model, images, targets=None) -> np.ndarray:
    """The classes to explain, (N,) integers: `targets` when given, else the predictions."""
    if targets is None:
        return class_scores(model, images).argmax(axis=1)
    return checked_targets(targets, len(images))


def checked_targets(targets, count: int) -> np.ndarray:
    """`targets` as (count,) integers in 0..9, or a ValueError saying what is wrong."""
    targets = np.asarray(targets)
    if targets.shape != (count,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets: expected {count} integers, got {targets.shape} "
                         f"{targets.dtype}")
    if targets.size and (targets.min() < 0 or targets.max() > 9):
        raise ValueError(f"targets: expected classes 0..9, got {targets.min()}..{targets.max()}")
    return targets


def score_gradient(model: Model, images, targets) -> np.ndarray:
    """dS_c/dx (N, 28, 28): the gradient of each image's target logit, by backprop.

    The backward pass of training, started from dlogits = one-hot(target) instead of
    dL/dlogits: it returns d(sum_n S_{c_n}(x_n))/dx, and image n's score depends on image
    n only, so row n is image n's own gradient.
    """
    logits = class_scores(model, images)
    dlogits = np.zeros_like(logits)
    dlogits[np.arange(len(logits)), targets] = 1.0
    return model.backward(dlogits, input_grad=True).reshape(len(logits), SIDE, SIDE)


def saliency(model: Model, images, targets) -> np.ndarray:
    """|dS_c/dx| (N, 28, 28)."""
    return np.abs(score_gradient(model, images, targets))


def gradient_x_input(model: Model, images, targets) -> np.ndarray:
    """dS_c/dx * x (N, 28, 28)."""
    return score_gradient(model, images, targets) * model_input(model, images)[..., 0]


def path_points(images, steps: int, baseline: float) -> np.ndarray:
    """(steps, N, 28, 28): x0 + a_k (x - x0) at the midpoints a_k = (k + 1/2) / steps."""
    alphas = (np.arange(steps) + 0.5) / steps
    images = np.asarray(images, dtype=np.float64)
    return baseline + alphas[:, None, None, None] * (images - baseline)


def integrated_gradients(model: Model, images, targets, steps: int = IG_STEPS,
                         baseline: float = 0.0) -> np.ndarray:
    """(x - x0) * mean_k dS_c/dx(x0 + a_k (x - x0)), (N, 28, 28); all steps in one batch."""
    if steps < 1:
        raise ValueError(f"steps {steps}: expected >= 1")
    points = path_points(images, steps, baseline)
    n = points.shape[1]
    grads = score_gradient(model, points.reshape(steps * n, SIDE, SIDE), np.tile(targets, steps))
    mean_grad = grads.reshape(steps, n, SIDE, SIDE).mean(axis=0)
    return (model_input(model, images)[..., 0] - baseline) * mean_grad


def patch_corners(patch: int, stride: int) -> list[int]:
    """Top (or left) edges of the patch positions along one side; the last one touches the
    border, so every pixel is hidden at least once."""
    if not 1 <= stride <= patch <= SIDE:  # a stride beyond the patch would skip pixels
        raise ValueError(f"patch {patch}, stride {stride}: expected 1 <= stride <= patch "
                         f"<= {SIDE}")
    corners = list(range(0, SIDE - patch + 1, stride))
    return corners if corners[-1] == SIDE - patch else corners + [SIDE - patch]


def occluded_copies(image, patch: int, stride: int, fill: float):
    """(P, 28, 28) copies of one image, each with one patch position set to `fill`, and
    the (P, 28, 28) boolean masks of the hidden pixels."""
    corners = patch_corners(patch, stride)
    masks = np.zeros((len(corners) ** 2, SIDE, SIDE), dtype=bool)
    for k, (top, left) in enumerate((t, l) for t in corners for l in corners):
        masks[k, top:top + patch, left:left + patch] = True
    return np.where(masks, fill, np.asarray(image)[None]), masks


def occlusion_map(probabilities, target: int, masks) -> np.ndarray:
    """Per pixel, the mean drop of P(target) over the patches hiding it (28, 28).

    probabilities: (P + 1, 10), the unoccluded image's first, then one row per mask (P, 28, 28).
    """
    drops = probabilities[0, target] - probabilities[1:, target]  # (P,)
    return np.tensordot(drops, masks, axes=1) / masks.sum(axis=0)


def occlusion(model: Model, images, targets, patch: int = OCCLUSION_PATCH,
              stride: int = OCCLUSION_STRIDE, fill: float = OCCLUSION_FILL) -> np.ndarray:
    """Occlusion sensitivity (N, 28, 28); one forward batch per image."""
    maps = []
    for image, target in zip(images, targets):
        copies, masks = occluded_copies(image, patch, stride, fill)
        batch = np.concatenate([np.asarray(image)[None], copies])
        maps.append(occlusion_map(softmax(class_scores(model, batch)), target, masks))
    return np.stack(maps).astype(model.dtype) if maps else np.zeros((0, SIDE, SIDE), model.dtype)


METHOD_FUNCTIONS = {"saliency": saliency, "gradient_x_input": gradient_x_input,
                    "integrated_gradients": integrated_gradients, "occlusion": occlusion}
METHODS = tuple(METHOD_FUNCTIONS)


def explain(model: Model, images, method: str, targets=None, **options):
    """(maps (N, 28, 28), targets (N,)) of one METHODS entry; targets default to the
    predicted classes. options: steps/baseline (integrated_gradients), patch/stride/fill
    (occlusion)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    targets = resolve_targets(model, images, targets)
    return METHOD_FUNCTIONS[method](model, images, targets, **options), targets


def activation_maps(model: Model, images) -> dict[str, np.ndarray]:
    """Every conv layer's output as Keras's Conv2D layer returns it: layer name ->
    (N, H, W, F), after the layer's own activation. Empty for MLPs."""
    maps = {}
    out = model_input(model, images)
    for layer in model.layers:
        out = layer.forward(out, training=False)
        if isinstance(layer, Conv2D):
            # A fast model leaves a ReLU that pooling follows to the pooling layer;
            # applying it here once more changes nothing where it was already applied.
            maps[layer.name] = np.maximum(out, 0) if layer.activation == "relu" else out.copy()
    return maps
