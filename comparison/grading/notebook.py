"""The layer checks from a notebook cell: the student's functions, graded in-process.

    from comparison.grading.notebook import check_layer, written_or_reference
    assert check_layer("dropout", dropout_forward=dropout_forward,
                       dropout_backward=dropout_backward)
    update = written_or_reference(my_update, reference_update)   # any other exercise

`check_layer` runs `checks.layer_checks` (the checks of `python compare.py check`) on the
functions given and prints the report of `compare.py check` at 80 columns, in plain text.
A function that is still its exercise stub (a docstring and `raise NotImplementedError`,
nothing else) is replaced by the reference, with a line saying so: a notebook whose
exercises nobody has written yet still runs top to bottom (as the test suite runs it),
and the cell shows what the checks print for a correct answer.

The student's code runs in the notebook's own process, without the time and memory
limits of `compare.py check` (`sandbox.py`): it is the student's own kernel.
"""
from __future__ import annotations

import ast
import inspect
import textwrap

from comparison.grading.checks import layer_checks
from comparison.grading.exercise import reference_functions
from comparison.grading.report import print_report
from comparison.grading.sandbox import Graded
from plumbing.quiet import make_console

WIDTH = 80


def is_stub(function) -> bool:
    """True when `function`'s body is only a docstring and `raise NotImplementedError(...)`
    (an exercise not written yet); False when its source cannot be read."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return False
    body = tree.body[0].body if tree.body and hasattr(tree.body[0], "body") else []
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    raised = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return isinstance(raised, ast.Name) and raised.id == "NotImplementedError"


def written_or_reference(function, reference, name: str | None = None):
    """`function`, or `reference` when `function` is still its exercise stub (see
    `is_stub`), with a line saying so."""
    if function is not None and not is_stub(function):
        return function
    name = name or getattr(reference, "__name__", "the function")
    why = "not given" if function is None else "still the stub"
    make_console(width=WIDTH).print(f"{name} is {why}: the reference is checked in its place",
                    highlight=False)
    return reference


def check_layer(layer: str, /, *, network: bool = True, **functions) -> bool:
    """Grade `functions` (by name: dropout_forward=..., dropout_backward=...; the loss:
    softmax_cross_entropy=...) as `layer` with every check of `compare.py check`; print
    the report; True when every check passes. Stubs still unwritten are replaced by the
    reference (said in a line above the table). network=False skips the checks inside a
    small zoo network (the slowest part)."""
    references = reference_functions(layer)
    unknown = sorted(set(functions) - set(references))
    if unknown:
        raise ValueError(f"{layer}: no function named {', '.join(unknown)}; expected "
                         f"{', '.join(references)}")
    impl = {name: written_or_reference(functions.get(name), reference, name)
            for name, reference in references.items()}
    label = "the reference" if all(impl[n] is references[n] for n in impl) else "your code"
    graded = Graded(file=label, layer=layer,
                    results=layer_checks(layer, impl, network=network))
    print_report(graded, make_console(width=WIDTH))
    return graded.passed
