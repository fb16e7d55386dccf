"""`python compare.py params`: parameter tables of both twins next to the zoo formulas.

Every layer's trainable count in NumPy and in Keras beside the registry's formula
(`3*3*1*32 + 32 = 320`), BatchNorm's moving statistics counted apart, and the zoo
beside the famous networks; a mismatch raises ComparisonError (exit status 1).
"""
from __future__ import annotations

from rich.table import Table

from plumbing.args import positive_int
from scratch import famous, zoo
from scratch.cli import model_name

DEFAULT_MODELS = ["fc128", "convnet"]


class ComparisonError(Exception):
    """The two implementations disagree where they must not (e.g. parameter counts)."""


# --- 1. parameter tables -------------------------------------------------------


def param_comparison(name: str) -> dict:
    """Per-layer trainable counts of both implementations next to the zoo formula, and the
    non-trainable ones (BatchNorm's moving mean and variance, which Keras's count_params()
    includes); raises on mismatch."""
    from keras_impl.zoo_model import arch_layers, build_twinnet
    from scratch.model import build_model

    declared = zoo.param_rows(name)
    numpy_model = build_model(name)
    numpy_rows = numpy_model.param_table()
    keras_model = build_twinnet(name)
    keras_layers = arch_layers(keras_model)
    rows = []
    for spec_row, numpy_row, keras_layer in zip(declared, numpy_rows, keras_layers):
        keras_count = sum(int(v.numpy().size) for v in keras_layer.trainable_weights)
        rows.append({"layer": spec_row.layer, "output_shape": list(spec_row.output_shape),
                     "formula": spec_row.formula, "declared": spec_row.count,
                     "numpy": numpy_row.count, "keras": keras_count})
    totals = {"numpy": sum(r["numpy"] for r in rows), "keras": sum(r["keras"] for r in rows)}
    non_trainable = {"numpy": numpy_model.count_non_trainable(),
                     "keras": sum(int(v.numpy().size) for v in keras_model.non_trainable_weights)}
    bad = [r["layer"] for r in rows if not r["numpy"] == r["keras"] == r["declared"]]
    if non_trainable["numpy"] != non_trainable["keras"]:
        bad.append("non-trainable weights")
    if bad or not len(rows) == len(declared) == len(keras_layers):
        raise ComparisonError(f"{name}: parameter counts differ in {', '.join(bad) or 'layers'}")
    return {"rows": rows, "totals": totals, "non_trainable": non_trainable,
            "keras_count_params": keras_model.count_params()}


def print_param_table(name: str, table: dict, console) -> None:
    out = Table(title=f"{name}: trainable parameters")
    for column in ("layer", "output shape", "formula", "NumPy", "Keras"):
        out.add_column(column, justify="right" if column in ("NumPy", "Keras") else "left")
    for r in table["rows"]:
        out.add_row(r["layer"], str(tuple(r["output_shape"])), r["formula"],
                    f"{r['numpy']:,}", f"{r['keras']:,}")
    out.add_row("total", "", "", f"{table['totals']['numpy']:,}",
                f"{table['totals']['keras']:,}", style="bold")
    moving = table["non_trainable"]
    if moving["keras"]:
        out.add_row("non-trainable", "", "BatchNorm moving mean + variance (no gradient)",
                    f"{moving['numpy']:,}", f"{moving['keras']:,}")
        out.add_row("Keras count_params()", "", "trainable + non-trainable", "",
                    f"{table['keras_count_params']:,}")
    console.print(out)


def hidden_units(text: str) -> int:
    """--hidden N: a positive N whose MLP fc<N> is small enough to build."""
    units = positive_int(text)
    model_name(f"fc{units}")
    return units


def add_arguments(parser) -> None:
    """`python compare.py params`'s own options."""
    parser.add_argument("--all", action="store_true", help="every zoo model")
    parser.add_argument("--hidden", type=hidden_units, nargs="+", metavar="N",
                        help="one-hidden-layer MLPs of N units (795N + 10)")


def main(args, console) -> dict:
    names = args.model or (zoo.model_names() if args.all else [])
    if args.hidden:
        names += [f"fc{n}" for n in args.hidden]
    names = names or DEFAULT_MODELS
    tables = {}
    for name in names:
        tables[name] = param_comparison(name)
        print_param_table(name, tables[name], console)
    for n in args.hidden or []:
        console.print(f"one hidden layer of n = {n}: 784*n + n + n*10 + 10 = 795*{n} + 10 = "
                      f"{795 * n + 10:,}  (zoo fc{n}: {zoo.count_params(f'fc{n}'):,})")
    complexity = Table(title="Complexity: zoo models next to famous networks")
    for column in ("model", "input", "trainable parameters"):
        complexity.add_column(column, justify="right" if column != "model" else "left")
    famous_totals = {name: famous.famous_total(name) for name in famous.FAMOUS}
    for name in zoo.model_names():
        complexity.add_row(name, "28x28x1", f"{zoo.count_params(name):,}")
    for name, total in famous_totals.items():
        shape = "x".join(str(d) for d in famous.famous_input_shape(name))
        complexity.add_row(name, shape, f"{total:,}")
    console.print(complexity)
    return {"models": {name: t["totals"]["numpy"] for name, t in tables.items()},
            "non_trainable": {name: t["non_trainable"]["numpy"] for name, t in tables.items()},
            "famous": famous_totals}
