"""Opening a trained model file: a .keras or .h5 file that takes MNIST images and gives 10 scores.

`load_model(path)` is what `keras_impl.test`, `keras_impl.export` and the lab use; every
problem with the file is a ModelFileError whose message is one line naming it. Nothing
here plots, so the graders' TensorFlow 2.18 venv (no matplotlib) can import the export.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from scratch import zoo

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
MNIST_INPUTS = ((None, 784), (None, 28, 28, 1))


class ModelFileError(Exception):
    """A model file that is missing or cannot be loaded; one line naming it."""


def check_model_file(path) -> Path:
    """`path` when it names a .keras or .h5 file, else ModelFileError; no TensorFlow needed."""
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, expected a .keras or .h5 model file")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise ModelFileError(f"{path}: expected a .keras or .h5 model file")
    if suffix == ".keras" and not zipfile.is_zipfile(path):  # Keras would say "not found"
        raise ModelFileError(f"{path}: cannot load a Keras model (not a zip archive, "
                             "as every .keras file is)")
    return path


def load_model(path):
    """A keras.Model from a .keras or .h5 file, taking MNIST images and giving 10 scores
    (TwinNet is registered by importing keras_impl.zoo_model)."""
    import keras

    from keras_impl.zoo_model import TwinNet, batch_input_shape

    path = check_model_file(path)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:  # corrupt files fail in h5py, zipfile, json or Keras itself
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ModelFileError(f"{path}: cannot load a Keras model ({type(err).__name__}: "
                             f"{detail[:200]})") from None
    try:
        shape = batch_input_shape(model)
    except (AttributeError, ValueError):  # a subclassed model that never saw its input
        shape = None
    if shape not in MNIST_INPUTS:
        raise ModelFileError(f"{path}: model input {shape}, expected one of "
                             f"{' or '.join(map(str, MNIST_INPUTS))}")
    out = ((None, zoo.NUM_CLASSES) if isinstance(model, TwinNet)
           else getattr(model, "output_shape", None))
    if out != (None, zoo.NUM_CLASSES):
        raise ModelFileError(f"{path}: model output {out}, expected (None, 10)")
    return model
