"""Grading a student's own layer against both twins (issue 13).

    exercise.py   an exercise file for one layer: the readable function's signature and
                  docstring, a formula hint, `raise NotImplementedError("TODO: ...")` bodies
    student.py    `python compare.py check FILE.py`: import the student's file safely,
                  run the checks, print the table and the student's own traceback lines
    checks.py     the layer checks: shapes, forward values against the reference and
                  Keras, gradients against central differences and GradientTape
    cases.py      the inputs each layer is checked on, and its Keras twin
    network.py    the layer inside a small zoo network: gradient check, lockstep with Keras
    result.py     CheckResult, one row of the table
    diagnose.py   where a wrong array goes wrong: worst entry, simple patterns, heatmap
    bugs.py       the bug zoo: documented mutations and which checks catch each
    bugtable.py   the bug zoo's table
"""
