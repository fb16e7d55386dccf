"""Grading a student's own layer against both twins.

    exercise.py   an exercise file for one layer: the readable function's signature and
                  docstring, a formula hint, `raise NotImplementedError("TODO: ...")` bodies
    student.py    `python compare.py check FILE.py|FOLDER`: its arguments, loading the
                  student's file (one line for what cannot be graded), one file or a class
    sandbox.py    one file graded in a child process with time, memory and output limits
    child.py      that child process: `python -m comparison.grading.child`
    report.py     one file's report: the table, checks not run, the student's lines
    notebook.py   the same checks from a notebook cell: check_layer, a stub's fallback
    classroom.py  a folder of submissions: gradebook CSV, common mistakes, Gradescope JSON
    checks.py     the layer checks: shapes, forward values against the reference and
                  Keras, gradients against central differences and GradientTape
    cases.py      the inputs each layer is checked on, and its Keras twin
    network.py    the layer inside a small zoo network: gradient check, lockstep with Keras
    result.py     CheckResult, one row of the table
    diagnose.py   where a wrong array goes wrong: worst entry, simple patterns, heatmap
    bugs.py       the bug zoo: documented mutations and which checks catch each
    bugtable.py   the bug zoo's table
"""
