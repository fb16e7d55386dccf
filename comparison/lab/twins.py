"""The twin pair the lab serves: loaded from files, or trained quickly on first start and cached.

    twins = load_twins("runs/convnet-custom")       # model.keras and/or a .npz, the other derived
    models = LabModels(); models.start(cache_dir)    # quick convnet, in a thread, with progress

A twin pair is one zoo architecture with the same weights twice: a Keras model and a
NumPy model. From a folder, the Keras side is `model.keras` (what keras_impl.train writes;
else the folder's only .keras or .h5 file) and the NumPy side its only .npz (what
comparison.scratch_train --save writes); when only one side is there, the other is built
from the zoo and given its weights through the layout helper (comparison.layout).
When both are there, they must hold the same weights.

Without files, `LabModels` trains the Keras convnet on the first QUICK_IMAGES training
images for QUICK_EPOCHS epochs with the quickstart's train step (about 98% validation
accuracy in well under a minute on two cores), copies the weights to NumPy and caches both
in the cache folder (default ~/.cache/twinnet/lab), so the next start loads in a second.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from comparison import layout
from keras_impl.export import ExportError, zoo_source
from keras_impl.zoo_model import build_twinnet
from plumbing.files import atomic_path, write_json
from scratch.model import CheckpointError, build_model, load_npz, save_npz

QUICK_ARCH = "convnet"
QUICK_IMAGES = 20_000
QUICK_EPOCHS = 2
QUICK_BATCH = 64
QUICK_LR = 2e-3
QUICK_NAME = f"quick-{QUICK_ARCH}-{QUICK_IMAGES}x{QUICK_EPOCHS}-b{QUICK_BATCH}-lr{QUICK_LR:g}"
SAME_WEIGHTS = 1e-6  # largest relative difference of two files holding "the same" weights


class TwinsError(Exception):
    """Model files the lab cannot use; the message is one line naming them."""


@dataclass
class Twins:
    """Both implementations of one architecture with the same weights, and where they came from.

    `lock` serialises computations: a NumPy model keeps each layer's cache between its
    forward and backward pass, so two requests must not run it at once.
    """

    arch: str
    keras_model: keras.Model
    numpy_model: object
    source: str
    lock: threading.Lock = field(default_factory=threading.Lock)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "twinnet" / "lab"


def _one(paths: list[Path], what: str, folder: Path) -> Path | None:
    if len(paths) > 1:
        names = ", ".join(p.name for p in paths)
        raise TwinsError(f"{folder}: {len(paths)} {what} files ({names}): keep one")
    return paths[0] if paths else None


def model_files(folder) -> tuple[Path | None, Path | None]:
    """(Keras file, .npz file) of a folder, either may be None; or of one file given directly."""
    folder = Path(folder)
    if folder.is_file():
        suffix = folder.suffix.lower()
        if suffix not in (".keras", ".h5", ".npz"):
            raise TwinsError(f"{folder}: expected a folder, or a .keras, .h5 or .npz file")
        return (None, folder) if suffix == ".npz" else (folder, None)
    if not folder.is_dir():
        raise TwinsError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if (folder / "model.keras").is_file():
        keras_file = folder / "model.keras"  # keras_impl.train's; its model.h5 is the same
    else:
        keras_file = (_one([p for p in files if p.suffix == ".keras"], ".keras", folder)
                      or _one([p for p in files if p.suffix == ".h5"], ".h5", folder))
    npz_file = _one([p for p in files if p.suffix == ".npz"], ".npz", folder)
    if keras_file is None and npz_file is None:
        raise TwinsError(f"{folder}: no model files (.keras, .h5 or .npz)")
    return keras_file, npz_file


def load_twins(folder) -> Twins:
    """The twin pair stored in `folder` (see the module docstring); TwinsError otherwise."""
    from keras_impl.model_files import ModelFileError, load_model

    keras_file, npz_file = model_files(folder)
    try:
        keras_model = load_model(keras_file) if keras_file else None
        numpy_model = load_npz(npz_file) if npz_file else None
    except (ModelFileError, CheckpointError) as err:
        raise TwinsError(str(err)) from None
    if keras_model is not None:
        try:
            arch, l2, _ = zoo_source(keras_model)
        except ExportError as err:
            raise TwinsError(f"{keras_file}: not a twinnet zoo model ({err})") from None
        if numpy_model is None:
            numpy_model = build_model(arch, l2=l2)
            layout.to_numpy(keras_model, numpy_model)
            return Twins(arch, keras_model, numpy_model,
                         f"{arch} from {keras_file}, NumPy side copied from it")
        if numpy_model.name != arch:
            raise TwinsError(f"{keras_file} is a {arch}, {npz_file} a {numpy_model.name}")
        twins = Twins(arch, keras_model, numpy_model, f"{arch} from {keras_file} and {npz_file}")
        check_same_weights(twins)
        return twins
    keras_model = build_twinnet(numpy_model.name, l2=numpy_model.l2)
    layout.to_keras(numpy_model, keras_model)
    return Twins(numpy_model.name, keras_model, numpy_model,
                 f"{numpy_model.name} from {npz_file}, Keras side copied from it")


def check_same_weights(twins: Twins) -> float:
    """The largest relative difference between the two sides' weights; TwinsError if they
    are not the same weights (two separately trained files, say)."""
    try:
        pairs = layout.paired_weights(twins.keras_model, twins.numpy_model)
    except ValueError as err:
        raise TwinsError(f"{twins.source}: the two files do not match ({err})") from None
    worst = max(float(np.abs(v.numpy() - layer.params[key]).max()
                      / max(np.abs(layer.params[key]).max(), 1e-12))
                for _, v, layer, key in pairs)
    if worst > SAME_WEIGHTS:
        raise TwinsError(f"{twins.source}: the two files hold different weights (largest "
                         f"relative difference {worst:.1e}); give matching files, or one of "
                         "them and the other side is derived")
    return worst


# --- the quick twin ---------------------------------------------------------------------

def train_quick(folder: Path, progress, should_stop, data_dir=None) -> Twins | None:
    """Train the quick Keras convnet, copy it to NumPy, save both in `folder`.

    progress(fraction, message) is called after every step; should_stop() ends the
    training early (returns None, nothing saved).
    """
    from keras_impl.data import make_dataset, seed_tensorflow
    from keras_impl.train import EpochMetrics, make_loss_fn, make_test_step, make_train_step

    started = time.perf_counter()
    keras.utils.set_random_seed(0)
    seed_tensorflow(0)
    model = build_twinnet(QUICK_ARCH)
    train_ds = make_dataset("train", QUICK_BATCH, seed=0, data_dir=data_dir, limit=QUICK_IMAGES)
    val_ds = make_dataset("val", 500, data_dir=data_dir)
    train_step = make_train_step(model, keras.optimizers.Adam(QUICK_LR), make_loss_fn())
    steps = QUICK_EPOCHS * -(-QUICK_IMAGES // QUICK_BATCH)
    done = 0
    for epoch in range(QUICK_EPOCHS):
        for x, y in train_ds:
            train_step(x, y)
            done += 1
            progress(done / steps, f"training the quick {QUICK_ARCH}: epoch {epoch + 1} of "
                                   f"{QUICK_EPOCHS}, step {done} of {steps}")
            if should_stop():
                return None
    metrics = EpochMetrics("val")
    test_step = make_test_step(model, make_loss_fn(), metrics)
    for x, y in val_ds:
        test_step(x, y)
    accuracy = float(metrics.accuracy.result())
    numpy_model = build_model(QUICK_ARCH)
    layout.to_numpy(model, numpy_model)
    with atomic_path(folder / "model.keras") as tmp:
        model.save(tmp)
    save_npz(numpy_model, folder / "model.npz")
    info = {"arch": QUICK_ARCH, "images": QUICK_IMAGES, "epochs": QUICK_EPOCHS,
            "val_accuracy": accuracy, "seconds": round(time.perf_counter() - started, 1)}
    write_json(folder / "info.json", info)
    return Twins(QUICK_ARCH, model, numpy_model, quick_source(folder, info, trained_now=True))


def quick_source(folder: Path, info: dict, trained_now: bool) -> str:
    when = (f"trained on this start in {info['seconds']:.0f} s" if trained_now
            else "trained on an earlier start")
    return (f"the quick {info['arch']} ({info['images']:,} MNIST training images, "
            f"{info['epochs']} epochs, validation accuracy {info['val_accuracy']:.1%}), {when}, "
            f"cached in {folder}")


def load_quick(folder: Path) -> Twins | None:
    """The cached quick twin, or None when there is none (or it is unreadable)."""
    try:
        info = json.loads((folder / "info.json").read_text())
        twins = load_twins(folder)
    except (OSError, ValueError, KeyError, TwinsError):
        return None
    twins.source = quick_source(folder, info, trained_now=False)
    return twins


class LabModels:
    """What the lab serves: ready Twins, or a quick training under way (state and progress).

    state: "ready", "training" or "failed"; the Flask views read `status()` and `twins`.
    """

    def __init__(self, twins: Twins | None = None):
        self.twins = twins
        self.state = "ready" if twins else "training"
        self.progress, self.message = (1.0, "") if twins else (0.0, "starting")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, cache_dir, data_dir=None) -> None:
        """Load the cached quick twin, or train it in a background thread."""
        folder = Path(cache_dir) / QUICK_NAME
        cached = load_quick(folder)
        if cached:
            self._ready(cached)
            return
        self._thread = threading.Thread(target=self._train, args=(folder, data_dir),
                                        name="quick-twin", daemon=True)
        self._thread.start()

    def _train(self, folder, data_dir) -> None:
        def progress(fraction, message):
            self.progress, self.message = fraction, message

        try:
            twins = train_quick(folder, progress, self._stop.is_set, data_dir)
        except Exception as err:  # shown on the page; the server keeps running
            self.state, self.message = "failed", f"training failed: {type(err).__name__}: {err}"
            return
        if twins:
            self._ready(twins)

    def _ready(self, twins: Twins) -> None:
        self.twins, self.progress, self.message = twins, 1.0, twins.source
        self.state = "ready"

    def wait(self, timeout: float | None = None) -> str:
        """Wait for a quick training to finish; returns the state."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state

    def stop(self, timeout: float = 10.0) -> None:
        """Ask a running training to stop and wait for it (Ctrl-C)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict:
        model = ({"arch": self.twins.arch, "source": self.twins.source}
                 if self.state == "ready" else None)
        return {"state": self.state, "progress": round(self.progress, 4),
                "message": self.message, "model": model}
