"""A clean terminal: twinnet's own output, without TensorFlow's start-up chatter.

    import plumbing.quiet  # first, in every command line module: before TensorFlow loads

Importing this module (it imports nothing heavy) quiets what is noise on every run:
  - the C++ lines TensorFlow prints while it loads ("oneDNN custom operations are on",
    "Could not find cuda drivers", cuBLAS/cuDNN factory registration, absl's "before
    InitializeLog" notice). absl writes them to file descriptor 2 before any log level
    applies, so the first `import tensorflow` (wherever it happens) runs with descriptor
    2 captured, and every captured line that is not one of those is written out again;
  - TensorFlow's C++ log after start-up: TF_CPP_MIN_LOG_LEVEL=3 unless already set;
  - Keras's notice that .h5 is a legacy format, inside `h5_notice_silenced()` (the
    graders require .h5);
  - the traceback of a Ctrl-C that nothing handles (during start-up, say): one line
    "interrupted" instead, and the exit status of a Ctrl-C (130).
`make_console()` is the rich Console twinnet prints with: in a Jupyter kernel plain text,
not rich's Jupyter mode (HTML with a text copy full of ANSI colour codes, and live
displays that only warn "install ipywidgets").
Python warnings and every other message stay. TWINNET_VERBOSE=1 turns all of this off.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
from contextlib import contextmanager

VERBOSE = os.environ.get("TWINNET_VERBOSE", "") not in ("", "0")
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers"
    r"|Unable to register cu(BLAS|DNN|FFT) factory"
    r"|cpu_feature_guard\.cc|rebuild TensorFlow with the appropriate compiler flags"
    r"|failed call to cuInit"
    r"|computation_placer\.cc.*already registered"
    r"|TF-TRT Warning: Could not find TensorRT")
H5_NOTICE = "saving your model as an HDF5 file"


@contextmanager
def startup_noise_filtered():
    """Run the block with file descriptor 2 captured; then write out again every
    captured line that is not STARTUP_NOISE."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            sys.stderr.write("".join(line for line in text.splitlines(keepends=True)
                                     if not STARTUP_NOISE.search(line)))
            sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `tensorflow` as Python would, and loads it inside `startup_noise_filtered`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finders take it from here
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            self.loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self.loader  # as if never here
        with startup_noise_filtered():
            self.loader.exec_module(module)


class _H5NoticeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return H5_NOTICE not in record.getMessage()


@contextmanager
def h5_notice_silenced():
    """Run the block (a model.save to .h5) without Keras's "legacy format" warning."""
    if VERBOSE:
        yield
        return
    logger, notice_filter = logging.getLogger("absl"), _H5NoticeFilter()
    logger.addFilter(notice_filter)
    try:
        yield
    finally:
        logger.removeFilter(notice_filter)


def make_console(**options):
    """A rich Console on stdout with `options`: colours and live progress in a terminal,
    plain text (no escape codes, no live display) in a Jupyter kernel or a file. (A
    kernel sets FORCE_COLOR=1, which would make a plain console write escape codes.)"""
    from rich.console import Console  # here: importing this module stays light

    console = Console(**options)
    if not console.is_jupyter:
        return console
    return Console(force_jupyter=False, force_terminal=False, color_system=None, **options)


def _one_line_for_ctrl_c(kind, value, traceback):
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)  # Python still exits as Ctrl-C does: 130
    else:
        sys.__excepthook__(kind, value, traceback)


if not VERBOSE:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    sys.excepthook = _one_line_for_ctrl_c
