"""How many threads NumPy's BLAS (every matrix product here) may use.

OpenBLAS's worker threads busy-wait for each other. When the cores are shared,
with TensorFlow's tf.data threads in the same process or with other programs,
a 2-thread product can run 5-10x slower than a 1-thread one; on idle cores the
second thread gains little for this suite's batch sizes. `python -m scratch.train
--threads N` uses this module to choose.

Works with the OpenBLAS that NumPy's wheels ship (found among the process's loaded
libraries); for any other BLAS the functions report that they could not act.
"""
from __future__ import annotations

import ctypes
import functools
import re
from pathlib import Path

import numpy as np

# OpenBLAS's entry points, by build (NumPy's wheels prefix and suffix them).
SET_NAMES = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
             "openblas_set_num_threads64_", "openblas_set_num_threads")
GET_NAMES = tuple(name.replace("set_", "get_") for name in SET_NAMES)


@functools.lru_cache(maxsize=1)
def _openblas():
    """The OpenBLAS library NumPy uses, or None."""
    np.ones((2, 2)) @ np.ones((2, 2))  # make sure NumPy has loaded its BLAS
    wheel_libs = Path(np.__file__).parent.parent / "numpy.libs"  # NumPy's own copy first
    paths = [str(p) for p in sorted(wheel_libs.glob("*openblas*"))]
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: every shared library the process has mapped
        paths += sorted(set(re.findall(r"\S*openblas\S*\.so\S*", maps.read_text())))
    for path in dict.fromkeys(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        if any(hasattr(library, name) for name in SET_NAMES):
            return library
    return None


def _function(names):
    library = _openblas()
    return next((getattr(library, n) for n in names if library is not None
                 and hasattr(library, n)), None)


def set_blas_threads(threads: int) -> bool:
    """Let matrix products use `threads` threads; False when NumPy's BLAS is not OpenBLAS."""
    function = _function(SET_NAMES)
    if function is not None:
        function(ctypes.c_int(threads))
    return function is not None


def blas_threads() -> int | None:
    """The number of threads matrix products use now, or None if unknown."""
    function = _function(GET_NAMES)
    return None if function is None else int(function())
