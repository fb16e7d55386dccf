"""The explanations of `scratch.explain` computed by TensorFlow: GradientTape, Keras forward passes.

    maps, targets = explain(keras_model, images, "saliency")      # predicted classes
    maps, _ = explain(keras_model, images, "occlusion", targets=labels)

Same methods, same arguments, same (N, 28, 28) maps as the NumPy side (read the
definitions there): where scratch.explain runs the engine's backward pass from a one-hot
dlogits, this module asks a GradientTape for d(target logit)/d(image). The bookkeeping
that is not arithmetic of the network (the points on the integrated-gradients path, the
occlusion patches and their averaging) is the NumPy module's, shared, so a disagreement
can only come from the two networks. The model runs in inference mode; a model ending in
a Softmax layer (the graders' .h5) is explained through its logits, the layer before.

`python -m keras_impl.test --model-path M --explain [--plots DIR]` draws the figures of
this module: misclassified test digits with the saliency and integrated-gradients maps of
their true and predicted class (`plot_misclassified_explanations`), and with --apply the
maps of your own digits' predicted class (`plot_explanations`).
"""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from keras_impl.zoo_model import arch_layers, batch_input_shape
from plumbing.files import write_figure
from scratch.explain import (IG_STEPS, OCCLUSION_FILL, OCCLUSION_PATCH, OCCLUSION_STRIDE, SIDE,
                             checked_targets, occluded_copies, occlusion_map, path_points)

EXPLAINED_SHOWN = 8  # misclassified digits in the figure


def model_input(model, images) -> tf.Tensor:
    """images (N, 28, 28) -> the model's input shape, (N, 784) or (N, 28, 28, 1), in its dtype."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise ValueError(f"images: expected shape (N, {SIDE}, {SIDE}), got {images.shape}")
    shape = (len(images), *batch_input_shape(model)[1:])
    return tf.convert_to_tensor(images.reshape(shape), dtype=model.compute_dtype)


def class_scores(model, x) -> tf.Tensor:
    """Logits (N, 10) of model input x, layer by layer in inference mode (a final Softmax
    layer left out)."""
    for layer in arch_layers(model):
        x = layer(x, training=False)
    return x


def resolve_targets(model, images, targets=None) -> np.ndarray:
    """The classes to explain: `targets` when given, else the predictions."""
    if targets is None:
        return class_scores(model, model_input(model, images)).numpy().argmax(axis=1)
    return checked_targets(targets, len(images))


def score_gradient(model, images, targets) -> np.ndarray:
    """dS_c/dx (N, 28, 28): the gradient of each image's target logit, from a GradientTape."""
    x = model_input(model, images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = class_scores(model, x)
        score = tf.reduce_sum(tf.gather(logits, np.asarray(targets)[:, None], batch_dims=1))
    return tape.gradient(score, x).numpy().reshape(len(images), SIDE, SIDE)


def saliency(model, images, targets) -> np.ndarray:
    """|dS_c/dx| (N, 28, 28)."""
    return np.abs(score_gradient(model, images, targets))


def gradient_x_input(model, images, targets) -> np.ndarray:
    """dS_c/dx * x (N, 28, 28)."""
    x = model_input(model, images).numpy().reshape(len(images), SIDE, SIDE)
    return score_gradient(model, images, targets) * x


def integrated_gradients(model, images, targets, steps: int = IG_STEPS,
                         baseline: float = 0.0) -> np.ndarray:
    """(x - x0) * mean_k dS_c/dx(x0 + a_k (x - x0)), (N, 28, 28); all steps in one batch."""
    if steps < 1:
        raise ValueError(f"steps {steps}: expected >= 1")
    points = path_points(images, steps, baseline)
    n = points.shape[1]
    grads = score_gradient(model, points.reshape(steps * n, SIDE, SIDE), np.tile(targets, steps))
    x = model_input(model, images).numpy().reshape(n, SIDE, SIDE)
    return (x - baseline) * grads.reshape(steps, n, SIDE, SIDE).mean(axis=0)


def occlusion(model, images, targets, patch: int = OCCLUSION_PATCH,
              stride: int = OCCLUSION_STRIDE, fill: float = OCCLUSION_FILL) -> np.ndarray:
    """Occlusion sensitivity (N, 28, 28); one Keras forward batch per image."""
    dtype = np.dtype(model.compute_dtype)
    maps = []
    for image, target in zip(images, targets):
        copies, masks = occluded_copies(image, patch, stride, fill)
        batch = np.concatenate([np.asarray(image)[None], copies])
        probabilities = tf.nn.softmax(class_scores(model, model_input(model, batch))).numpy()
        maps.append(occlusion_map(probabilities, target, masks))
    return np.stack(maps).astype(dtype) if maps else np.zeros((0, SIDE, SIDE), dtype)


METHOD_FUNCTIONS = {"saliency": saliency, "gradient_x_input": gradient_x_input,
                    "integrated_gradients": integrated_gradients, "occlusion": occlusion}
METHODS = tuple(METHOD_FUNCTIONS)


def explain(model, images, method: str, targets=None, **options):
    """(maps (N, 28, 28), targets (N,)) of one METHODS entry; targets default to the
    predicted classes (options as in scratch.explain.explain)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    targets = resolve_targets(model, images, targets)
    return METHOD_FUNCTIONS[method](model, images, targets, **options), targets


def activation_maps(model, images) -> dict[str, np.ndarray]:
    """Every Conv2D layer's output: layer name -> (N, H, W, F). Empty for MLPs."""
    maps = {}
    x = model_input(model, images)
    for layer in arch_layers(model):
        x = layer(x, training=False)
        if isinstance(layer, keras.layers.Conv2D):
            maps[layer.name] = x.numpy()
    return maps


# --- the figures of `keras_impl.test --explain` -------------------------------------------

def _show_map(ax, values, signed: bool) -> None:
    """Saliency in one colour from 0; signed maps red (for the class) / blue (against),
    symmetric about 0 so white means nothing."""
    largest = float(np.abs(values).max()) or 1.0
    if signed:
        ax.imshow(values, cmap="RdBu_r", vmin=-largest, vmax=largest)
    else:
        ax.imshow(values, cmap="magma", vmin=0, vmax=largest)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_explanations(model, images, captions, classes, path, title: str) -> Path:
    """One row per image: the digit, then saliency and integrated gradients of each class.

    images (N, 28, 28); captions: N row titles; classes: [(label, targets (N,)), ...],
    e.g. [("true", labels), ("predicted", predictions)].
    """
    columns = [(label, method, targets) for label, targets in classes
               for method in ("saliency", "integrated_gradients")]
    if not len(images):  # e.g. a model that gets every test digit right
        fig = Figure(figsize=(6, 1.5))
        fig.text(0.5, 0.5, f"{title}: none", ha="center", va="center")
        write_figure(fig, path, dpi=110)
        return Path(path)
    maps = [METHOD_FUNCTIONS[method](model, images, targets) for _, method, targets in columns]
    fig = Figure(figsize=(1.9 * (1 + len(columns)), 2.0 * len(images)), layout="constrained")
    axes = fig.subplots(len(images), 1 + len(columns), squeeze=False)
    for i, row in enumerate(axes):
        row[0].imshow(images[i], cmap="gray_r", vmin=0, vmax=1)
        row[0].set_xticks([])
        row[0].set_yticks([])
        row[0].set_ylabel(captions[i], fontsize=8)
        for ax, (label, method, targets), values in zip(row[1:], columns, maps):
            _show_map(ax, values[i], signed=method == "integrated_gradients")
            name = "saliency" if method == "saliency" else "integr. gradients"
            ax.set_title(f"{name}, {label} {targets[i]}", fontsize=8)
    fig.suptitle(f"{title}\nsaliency |dS/dx| (bright: sensitive); integrated gradients "
                 "(red: for the class, blue: against)", fontsize=9)
    write_figure(fig, path, dpi=110)
    return Path(path)


def figure_path(folder) -> Path:
    """folder/explanations.png, the folder created when missing."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder) / "explanations.png"


def plot_misclassified_explanations(model, images, labels, probs, folder) -> Path:
    """The first EXPLAINED_SHOWN misclassified digits, explained for their true and their
    predicted class, in folder/explanations.png. images (N, 28, 28) in [0, 1], labels (N,),
    probs (N, 10)."""
    predictions = probs.argmax(axis=1)
    wrong = np.flatnonzero(predictions != labels)[:EXPLAINED_SHOWN]
    captions = [f"test #{i}: true {labels[i]}, said {predictions[i]}" for i in wrong]
    return plot_explanations(model, images[wrong], captions,
                             [("true", labels[wrong].astype(np.int64)),
                              ("predicted", predictions[wrong])],
                             figure_path(folder), "misclassified test digits: what pushed "
                             "the network")


def plot_own_explanations(model, images, names, probs, folder) -> Path:
    """Your digits (`--apply`), explained for their predicted class, in folder/explanations.png."""
    predictions = probs.argmax(axis=1)
    captions = [f"{Path(name).name}: {digit}" for name, digit in zip(names, predictions)]
    return plot_explanations(model, images, captions, [("predicted", predictions)],
                             figure_path(folder), "your digits: what the network looked at")
