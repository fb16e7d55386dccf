"""Exercise files: one layer's functions with their bodies taken out, for a student to write.

    python compare.py exercise conv2d --out my_conv.py    # then: python compare.py check my_conv.py
    python compare.py exercise --list

The file is generated, never written by hand: every kind of `scratch.registry.KINDS` has
its readable pair `<kind>_forward` / `<kind>_backward` (`scratch.layers`, the residual
block's in `scratch.residual`), and the loss has
`scratch.losses.softmax_cross_entropy`; each function keeps its real signature and
docstring (read with `inspect`), gets the hint of HINTS below it, and its body becomes
`raise NotImplementedError("TODO: ...")`. Constants the functions read (BN_EPSILON) are
copied by value, so the file imports nothing but NumPy.
"""
from __future__ import annotations

import inspect
import sys
import textwrap
import types
from pathlib import Path

from plumbing.args import output_file
from plumbing.files import write_text
from scratch import losses
from scratch.layer_classes import readable_function
from scratch.registry import KINDS

LOSS = "softmax_cross_entropy"  # the one exercise that is a loss, not a registry layer

# What a student needs beyond the docstring: the formula or the convention that the
# docstring leaves to the code. One hint per function; a new kind without one gets none.
HINTS = {
    "dense_forward": "one matrix product and a bias broadcast over the batch.",
    "dense_backward": "every gradient has the shape of what it differentiates. dbias is a "
                      "sum over the batch, not a mean: dout already carries the loss's 1/N.",
    "relu_forward": "np.maximum; the cache only has to tell where x > 0.",
    "relu_backward": "dout passes where x > 0 and is blocked elsewhere, also where x == 0.",
    "flatten_forward": "x.reshape keeps NumPy's row-major order, which is NHWC's.",
    "flatten_backward": "the inverse reshape, to the shape the cache remembers.",
    "dropout_forward": "draw the mask in one call, mask = rng.random(x.shape, dtype=x.dtype) "
                       ">= rate, so that the same rng gives you the reference's mask.",
    "dropout_backward": "out = x * scaled mask is linear in x.",
    "conv2d_forward": "'same' pads max((Ho - 1) * stride + KH - H, 0) rows in total, Ho = "
                      "ceil(H / stride), half (rounded down) on top and the rest at the "
                      "bottom (columns alike): np.pad. Tap (i, j) sees xp[:, i::sh, j::sw] "
                      "cut to Ho x Wo. Cross-correlation: the kernel is not flipped.",
    "conv2d_backward": "differentiate with respect to the padded input first (with a "
                       "stride, each tap adds only into the pixels it saw), then cut off the "
                       "rows and columns that the forward pass added, on the same sides.",
    "maxpool2d_forward": "stack each window position's strided view on a new last axis; "
                         "'same' pads with -inf, so padding is never a maximum.",
    "maxpool2d_backward": "exactly one entry per window receives dout: the first maximum in "
                          "row-major order, which np.argmax finds; overlapping windows add.",
    "avgpool2d_forward": "maxpool2d's windows, summed, divided by how many REAL values each "
                         "window holds (Keras leaves 'same' padding out of the mean).",
    "avgpool2d_backward": "each real entry of a window receives dout / count, added up over "
                          "the windows it is in; rows and columns no window covers get 0.",
    "globalavgpool2d_forward": "one mean over the two image axes, (1, 2).",
    "globalavgpool2d_backward": "every one of a channel's H*W values gets dout / (H*W).",
    "layernorm_forward": "the statistics of each position over its C channels: "
                         "axis=-1, keepdims=True; the variance divides by C.",
    "layernorm_backward": "batchnorm_backward's formula with the means taken over the "
                          "channels of one position instead of over the batch.",
    "groupnorm_forward": "reshape to (N, H, W, G, C // G) and take the statistics over "
                         "axes (1, 2, 4); gamma and beta stay per channel.",
    "groupnorm_backward": "layernorm_backward's formula on the (N, H, W, G, C // G) view, "
                          "the means over axes (1, 2, 4); reshape back at the end.",
    "residual_forward": "call conv2d_forward (with a zero bias), batchnorm_forward and "
                        "relu_forward in the order of the formula; keep every cache.",
    "residual_backward": "the addition sends d_sum to both paths unchanged; x fed both, so "
                         "its gradient is the sum of what comes back along each.",
    "batchnorm_forward": "reduce over every axis but the last, axis=tuple(range(x.ndim - 1)); "
                         "the variance divides by M (np.var's default), eps is BN_EPSILON.",
    "batchnorm_backward": "in training the mean and the variance depend on x too: x reaches "
                          "out along three paths (see the formulas above).",
    "softmax_cross_entropy": "subtract each row's maximum before np.exp; the gradient of the "
                             "mean over the batch is (softmax - target) / N.",
}


def layer_names() -> list[str]:
    """Every layer there is an exercise for: the registry's kinds, then the loss."""
    return [*KINDS, LOSS]


def reference_functions(layer: str) -> dict[str, types.FunctionType]:
    """The readable reference functions of `layer`, by name, in the order they run."""
    if layer == LOSS:
        return {LOSS: losses.softmax_cross_entropy}
    if layer not in KINDS:
        raise ValueError(f"unknown layer {layer!r}: expected one of {', '.join(layer_names())}")
    names = (f"{layer}_forward", f"{layer}_backward")
    functions = {name: readable_function(name) for name in names}
    missing = [name for name, function in functions.items() if function is None]
    if missing:  # CONTRIBUTING.md: every registry kind has its readable pair
        raise ValueError(f"scratch.layers has no {', '.join(missing)} for kind {layer!r}")
    return functions


def constants_read_by(functions) -> dict[str, object]:
    """The module-level numbers and strings the functions read (not np, not helpers)."""
    found = {}
    for function in functions:
        for name, value in inspect.getclosurevars(function).globals.items():
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                found[name] = value
    return found


def stub(function) -> str:
    """`function`'s def line and docstring (plus its hint), body raising NotImplementedError."""
    name = function.__name__
    doc = inspect.getdoc(function) or ""
    if name in HINTS:
        doc += "\n\n" + textwrap.fill(f"Hint: {HINTS[name]}", 88)
    body = textwrap.indent(f'"""{doc}\n"""\nraise NotImplementedError("TODO: write {name}")',
                           "    ")
    return f"def {name}{inspect.signature(function)}:\n{body}\n"


def exercise_source(layer: str, filename: str = "THIS_FILE.py") -> str:
    """The text of the exercise file for `layer`, to be saved as `filename`."""
    functions = list(reference_functions(layer).values())
    source = inspect.getsourcefile(functions[0])
    origin = Path(source).relative_to(Path(__file__).resolve().parents[2]).as_posix()
    names = ", ".join(f.__name__ for f in functions)
    header = (f'"""Exercise: write {names}.\n\n'
              f"Generated by `python compare.py exercise {layer}` from twinnet's {origin}:\n"
              "the same signatures and docstrings (every array's shape is there), a hint\n"
              "under each. Replace each `raise NotImplementedError` by your NumPy code, then\n"
              "grade it (shapes, values, gradients against central differences and\n"
              "TensorFlow, then a small network trained with your layer against Keras):\n\n"
              f"    python compare.py check {filename}\n"
              '"""\nimport numpy as np\n')
    constants = "".join(f"\n{name} = {value!r}  # as in {origin}"
                        for name, value in constants_read_by(functions).items())
    return "\n\n".join([header + constants + "\n", *map(stub, functions)])


def write_exercise(layer: str, out: Path, force: bool = False) -> Path:
    """Write the exercise for `layer` to `out`; an existing file (a student's work) is kept
    unless `force`: FileExistsError."""
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists: choose another --out, or --force to overwrite it")
    write_text(out, exercise_source(layer, out.name))
    return out


def add_arguments(parser) -> None:
    """The arguments of `python compare.py exercise`."""
    parser.add_argument("layer", nargs="?", choices=layer_names(), metavar="LAYER",
                        help=f"the layer to write: {', '.join(layer_names())}")
    parser.add_argument("--out", type=output_file, help="the file to write (default exercise_LAYER.py)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.add_argument("--list", action="store_true", help="list the layers and exit")


def main(args, console) -> dict:
    """`python compare.py exercise`: write one file, or list the layers."""
    if args.list:
        for layer in layer_names():
            console.print(f"{layer:24} {', '.join(reference_functions(layer))}")
        return {"layers": layer_names()}
    if args.layer is None:
        print(f"error: give a LAYER ({', '.join(layer_names())}) or --list", file=sys.stderr)
        return {"passed": False}
    out = write_exercise(args.layer, args.out or Path(f"exercise_{args.layer}.py"), args.force)
    console.print(f"wrote {out}: write {', '.join(reference_functions(args.layer))} in it")
    console.print(f"then grade them: python compare.py check {out}", soft_wrap=True)
    return {"layer": args.layer, "file": str(out)}
