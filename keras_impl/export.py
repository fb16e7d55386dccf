"""The graders' `.h5`: a trained zoo model in built-in Keras layers, ending in softmax.

    python -m keras_impl.export --model-path PATH(.keras|.h5) --h5 OUT.h5
    python -m keras_impl.export --print-config-keys

A grader runs `tensorflow.keras.models.load_model(file)` under TensorFlow 2.18
with any Keras from 3.5 on, reads `net.input_shape` ((None, 784) for MLPs,
(None, 28, 28, 1) for CNNs) and takes the argmax of `net.predict(x)`. The graders'
Keras has no twinnet classes, so every layer is written as the built-in layers that
compute it: a convolution with explicit padding numbers as a ZeroPadding2D and a
Conv2D, a residual block (keras_impl.blocks.ResidualBlock) as its convolutions,
BatchNormalizations, Add and ReLUs. A chain of layers is saved as a Sequential, a
model with residual blocks (a skip path) as a Functional model.

Compatibility: Keras >= 3.13 writes config keys that Keras 3.5-3.12 reject
(`quantization_config` on Dense, `input_axes`/`output_axes` on initializers,
`ragged`/`optional` on InputLayer, `renorm*` on BatchNormalization). Rather than
pin Keras, the export keeps in every serialized object's config only the keys
Keras 3.5 itself writes for that class (`KERAS_3_5_CONFIG_KEYS`: each layer kind's
from its registry entry, the rest here; the output of `--print-config-keys` under
Keras 3.5, which CI runs; Keras reads back what it writes). It then
proves nothing was lost: the running Keras must rebuild exactly the original
model config from the file, so a key is dropped only when it holds the value
Keras assumes anyway, and a model Keras 3.5 cannot express is refused.
"""
from __future__ import annotations

from plumbing.quiet import h5_notice_silenced  # first: quiets TensorFlow's start-up
import argparse
import json
import shutil
import tempfile
from pathlib import Path

import h5py
import keras

from keras_impl.blocks import ResidualBlock, built_in_copy
from keras_impl.data import run_cli
from keras_impl.zoo_model import TwinNet, input_shape, keras_layer
from keras_impl.model_files import ModelFileError, load_model
from scratch import zoo
from plumbing.args import output_file
from plumbing.files import atomic_write
from scratch.registry import KINDS, LayerSpec

MAX_BYTES = 500_000_000  # graders accept files under 500 MB
H5_SUFFIXES = (".h5", ".hdf5")  # Keras picks the format by suffix

# Keys Keras 3.5.0 writes, per class, for the probe model below: here the classes every
# export holds whatever its layers; each layer kind's own keys are in its registry entry
# (scratch/registry.py). Made with, under TF 2.18 with Keras 3.5.0 (see CONTRIBUTING.md):
#   python -m keras_impl.export --print-config-keys
GENERIC_KERAS_3_5_CONFIG_KEYS = {
    "Add": ("dtype", "name", "trainable"),
    "DTypePolicy": ("name",),
    "Functional": ("input_layers", "layers", "name", "output_layers", "trainable"),
    "GlorotUniform": ("seed",),
    "InputLayer": ("batch_shape", "dtype", "name", "sparse"),
    "L2": ("l2",),
    "Ones": (),
    "Sequential": ("build_input_shape", "dtype", "layers", "name", "trainable"),
    "Softmax": ("axis", "dtype", "name", "trainable"),
    "ZeroPadding2D": ("data_format", "dtype", "name", "padding", "trainable"),
    "Zeros": (),
    "__keras_tensor__": ("dtype", "keras_history", "shape"),
}


def built_in(kind) -> bool:
    """Whether a kind's Keras twin is a layer of Keras itself: the graders' Keras has
    no twinnet classes (keras_impl.blocks), so only those go into an .h5."""
    return hasattr(keras.layers, kind.keras_class)


KERAS_3_5_CONFIG_KEYS = {**GENERIC_KERAS_3_5_CONFIG_KEYS,
                         **{kind.keras_class: kind.keras_3_5_config_keys
                            for kind in KINDS.values() if built_in(kind)}}


class ExportError(ValueError):
    """The model cannot be exported; the message is one line saying why."""


def serialized_objects(node):
    """Every serialized Keras object ({"class_name": ..., "config": {...}}) in a JSON tree.

    Outer objects come first, and an object's config is walked only after the
    caller has seen it, so the caller may edit that config in place.
    """
    if isinstance(node, dict):
        if "class_name" in node and isinstance(node.get("config"), dict):
            yield node
        for value in node.values():
            yield from serialized_objects(value)
    elif isinstance(node, list):
        for item in node:
            yield from serialized_objects(item)


def keras_3_5_config(model_config: dict) -> dict:
    """`model_config` (the .h5 JSON, edited in place) with only the keys Keras 3.5 writes."""
    for obj in serialized_objects(model_config):
        known = KERAS_3_5_CONFIG_KEYS.get(obj["class_name"])
        if known is None:
            raise ExportError(f"no Keras 3.5 config keys recorded for {obj['class_name']} "
                              "(see CONTRIBUTING.md: a layer kind's keys)")
        for key in set(obj["config"]) - set(known):
            del obj["config"][key]
    return model_config


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def _difference(before, after, where: str = "config") -> str:
    """Where two JSON-like trees first differ, e.g. "config.layers[2].config.units: 128 -> 64"."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() | after.keys()):
            if before.get(key) != after.get(key):
                return _difference(before.get(key), after.get(key), f"{where}.{key}")
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (b, a) in enumerate(zip(before, after)):
            if b != a:
                return _difference(b, a, f"{where}[{i}]")
    return f"{where}: {before!r} -> {after!r}"


def write_h5(model: keras.Model, path) -> None:
    """Save a model of built-in layers as an .h5 that Keras 3.5 and newer load.

    Written to a temporary folder, its config rewritten with `keras_3_5_config`,
    reloaded to check that every layer comes back with the same model config,
    checked against MAX_BYTES, and only then copied onto `path` atomically. (h5py
    meets a full disk with errors of its own; the copy with an OSError naming `path`.)
    """
    path = Path(path)
    if path.suffix not in H5_SUFFIXES:
        raise ExportError(f"{path}: expected a file name ending in .h5 (Keras loads by suffix)")
    with tempfile.TemporaryDirectory(prefix="twinnet-export-") as folder:
        tmp = Path(folder) / path.name
        with h5_notice_silenced():  # .h5 is what the graders load
            model.save(tmp)
        with h5py.File(tmp, "r+") as f:
            config = keras_3_5_config(json.loads(f.attrs["model_config"]))
            f.attrs["model_config"] = json.dumps(config)
        before = model.get_config()
        try:
            after = keras.models.load_model(tmp, compile=False).get_config()
        except Exception as err:  # e.g. weights of a feature Keras 3.5 lacks
            raise ExportError(f"{model.name} does not reload from Keras 3.5's config "
                              f"({_first_line(err)})") from None
        if after != before:
            raise ExportError(f"{model.name} cannot be expressed in Keras 3.5's config "
                              f"({_difference(before, after)})")
        size = tmp.stat().st_size
        if size >= MAX_BYTES:
            raise ExportError(f"{path}: {size:,} bytes, graders accept under {MAX_BYTES:,}")
        with open(tmp, "rb") as source:
            atomic_write(path, lambda f: shutil.copyfileobj(source, f))


def _kernel_l2(layers) -> float:
    """The L2 factor build_sequential put on the kernels (0.0 when none)."""
    for layer in layers:
        reg = getattr(layer, "kernel_regularizer", None)
        if reg is not None:
            return float(reg.l2)
    return 0.0


def zoo_source(model: keras.Model) -> tuple[str, float, list]:
    """(zoo name, l2, the model's layers in zoo order) of a TwinNet or a build_sequential model.

    A Sequential counts when its name is a zoo name and its layers are that
    architecture's (optionally followed by the "probabilities" softmax of an
    earlier export); anything else raises ExportError.
    """
    if isinstance(model, TwinNet):
        return model.arch, model.l2, list(model.arch_layers)
    if not isinstance(model, keras.Sequential):
        raise ExportError(f"model {model.name!r} ({type(model).__name__}) is neither a TwinNet "
                          "nor a Sequential from build_sequential")
    try:
        specs = zoo.architecture(model.name)
    except KeyError as err:
        raise ExportError(f"Sequential {model.name!r} is not a twinnet zoo model "
                          f"({err.args[0]})") from None
    layers = list(model.layers)
    if layers and layers[-1].name == "probabilities":
        layers.pop()
    if len(layers) != len(specs):
        raise ExportError(f"Sequential {model.name!r} has {len(layers)} layers, "
                          f"zoo model {model.name} has {len(specs)}")
    return model.name, _kernel_l2(layers), layers


def chain_copies(source, name: str) -> list:
    """(copy, layer) pairs of the built-in layers that compute the trained layer `source`
    (not a residual block), in order, the copies named after `name`: a layer itself, or
    for explicit padding numbers (a Sequential, keras_impl.zoo_model.keras_layer) its
    ZeroPadding2D ("<name>_padding") and its layer."""
    if isinstance(source, keras.Sequential):
        padding, layer = source.layers
        return [(built_in_copy(padding, f"{name}_padding"), padding),
                (built_in_copy(layer, name), layer)]
    return [(built_in_copy(source, name), source)]


def built_in_model(name: str, specs, sources, shape) -> keras.Model:
    """The built-in Keras model of trained layers `sources` (zoo specs `specs`, input
    `shape`), softmax appended, holding their weights: a Sequential of the layers'
    `chain_copies`, or, when a residual block is among them, a Functional model (each block
    through `ResidualBlock.built_in_graph`). Layer i is named "<kind>_<i>" (its parts
    "<kind>_<i>_<part>")."""
    names = [f"{spec.kind}_{i}" for i, spec in enumerate(specs)]
    copies = []
    if not any(isinstance(source, ResidualBlock) for source in sources):
        for source, layer_name in zip(sources, names):
            copies += chain_copies(source, layer_name)
        model = keras.Sequential([keras.Input(shape=shape, name="image"),
                                  *(copy for copy, _ in copies),
                                  keras.layers.Softmax(name="probabilities")], name=name)
    else:
        inputs = x = keras.Input(shape=shape, name="image")
        for source, layer_name in zip(sources, names):
            if isinstance(source, ResidualBlock):
                x = source.built_in_graph(x, copies, layer_name)
                continue
            for copy, layer in chain_copies(source, layer_name):
                copies.append((copy, layer))
                x = copy(x)
        outputs = keras.layers.Softmax(name="probabilities")(x)
        model = keras.Model(inputs, outputs, name=name)
    for copy, layer in copies:
        copy.set_weights(layer.get_weights())
    return model


def export_h5(model: keras.Model, path) -> keras.Model:
    """Write trained zoo model `model` as the graders' .h5 at `path`; returns what was written.

    The file holds `built_in_model` of `model`'s layers: input (None, 784) for MLPs or
    (None, 28, 28, 1) for CNNs, softmax probabilities out. Raises ExportError when
    `model` is not a twinnet zoo model or the file cannot be made compatible.
    """
    arch, l2, layers = zoo_source(model)
    specs = zoo.architecture(arch)
    shape = (None, *input_shape(arch))
    for i, (spec, source) in enumerate(zip(specs, layers)):
        reference = keras_layer(spec, l2)
        reference.build(shape)  # built, as the source is (LayerNormalization's axis: [-1])
        shape = reference.compute_output_shape(shape)
        expected = {**reference.get_config(), "name": source.name}
        if source.get_config() != expected:
            raise ExportError(f"{model.name}: layer {i} ({source.name}) is not zoo model {arch}'s "
                              f"{spec.kind} ({_difference(expected, source.get_config())})")
    grader_model = built_in_model(arch, specs, layers, input_shape(arch))
    write_h5(grader_model, path)
    return grader_model


def probe_specs() -> list:
    """The example of every registered kind with a built-in Keras twin, in an order that
    fits 28x28x1 input: the image layers, those that make an image flat (global pooling),
    a flatten, the layers that need flat input, then the logits layer (a kernel without
    L2)."""
    kinds = [kind for kind in KINDS.values() if built_in(kind) and kind.name != "flatten"]
    flat = [kind.example for kind in kinds if kind.flat_input]
    flattening = [kind.example for kind in kinds if not kind.flat_input
                  and len(kind.output_shape(kind.example, zoo.INPUT_SHAPE)) == 1]
    image = [kind.example for kind in kinds if not kind.flat_input
             and kind.example not in flattening]
    return [*image, *flattening, zoo.FLATTEN, *flat, zoo.logits()]


def probe_model() -> keras.Sequential:
    """One layer of every registered kind, with L2, plus the softmax: every class an
    export writes."""
    return keras.Sequential([keras.Input(zoo.INPUT_SHAPE)]
                            + [keras_layer(spec, l2=0.01) for spec in probe_specs()]
                            + [keras.layers.Softmax()], name="probe")


# What only some exports write: explicit padding's ZeroPadding2D, residual blocks of both
# skips (a Functional model, its Add and ReLU layers); ending in the logits, so that the
# graders' check can score it.
GRAPH_PROBE_SPECS = (LayerSpec("conv2d", filters=4, kernel_size=3, padding=1),
                     LayerSpec("residual", filters=4), LayerSpec("residual", filters=8, strides=2),
                     zoo.GLOBAL_AVERAGE, zoo.logits())


def graph_probe_model() -> keras.Model:
    """`built_in_model` of GRAPH_PROBE_SPECS' layers, as an export writes them."""
    sources, shape = [], (None, *zoo.INPUT_SHAPE)
    for i, spec in enumerate(GRAPH_PROBE_SPECS):
        layer = keras_layer(spec, name=f"{spec.kind}_{i}")
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
        sources.append(layer)
    return built_in_model("graph_probe", GRAPH_PROBE_SPECS, sources, zoo.INPUT_SHAPE)


def written_config_keys() -> dict[str, list[str]]:
    """Per class, the config keys the running Keras writes into the .h5 of `probe_model()`
    and of `graph_probe_model()`."""
    keys: dict[str, set] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in (probe_model(), graph_probe_model()):
            path = Path(tmp) / f"{model.name}.h5"
            model.save(path)
            with h5py.File(path, "r") as f:
                for obj in serialized_objects(json.loads(f.attrs["model_config"])):
                    keys.setdefault(obj["class_name"], set()).update(obj["config"])
    return {name: sorted(found) for name, found in sorted(keys.items())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m keras_impl.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", help="trained model, .keras or .h5")
    parser.add_argument("--h5", type=output_file, help="where to write the graders' .h5")
    parser.add_argument("--print-config-keys", action="store_true",
                        help="print, as JSON, the config keys this Keras writes per class "
                             "(how KERAS_3_5_CONFIG_KEYS was made)")
    args = parser.parse_args(argv)
    if args.print_config_keys:
        print(json.dumps({"keras": keras.__version__, "keys": written_config_keys()}))
        return
    if not (args.model_path and args.h5):
        parser.error("give --model-path PATH and --h5 OUT.h5")
    source, out = Path(args.model_path), args.h5
    if out.suffix not in H5_SUFFIXES:
        parser.error(f"--h5 {out}: expected a file name ending in .h5")
    if not out.parent.is_dir():
        parser.error(f"--h5 {out}: folder {out.parent} does not exist")
    try:
        model = load_model(source)
    except ModelFileError as err:
        parser.error(f"--model-path {err}")
    try:
        written = export_h5(model, out)
    except ExportError as err:
        parser.error(f"--model-path {source}: {err}")
    print(f"wrote {out}: {written.name}, input {written.input_shape}, softmax output, "
          f"{out.stat().st_size:,} bytes")


if __name__ == "__main__":
    run_cli(main)
