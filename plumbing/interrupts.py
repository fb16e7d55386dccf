"""Ctrl-C and SIGTERM during a training: one way to stop, never in the middle of a step
or of a checkpoint.

    with stops_between_steps() as stop:   # Ctrl-C and SIGTERM are now only noted
        for batch in batches:
            train_step(batch)
            stop.check()                  # ... and raised here: KeyboardInterrupt, Terminated
    with sigterm_as_interrupt():     # SIGTERM now raises Terminated, a KeyboardInterrupt
        save()                       # ... so one `except KeyboardInterrupt` handles both
    with interrupts_deferred():
        manager.save()               # a Ctrl-C or SIGTERM arriving now acts after the save

Python delivers Ctrl-C as KeyboardInterrupt wherever the main thread happens to be.
SIGTERM (what `kill`, a batch scheduler or a container stop sends) ends the process at
once by default; inside `sigterm_as_interrupt` it is raised as `Terminated` instead, so
the training loops stop the same way for both. Raised inside TensorFlow's own Python
code (an iterator's, a tf.function call's), such an exception can leave TensorFlow's
state half-changed: in about one run in twenty, the process then crashed (SIGSEGV) as it
exited. The training loops therefore use `stops_between_steps`, where the exception is
raised only where the loop calls `check()`, between its calls into TensorFlow. A signal
arriving inside `interrupts_deferred` is only noted, and delivered again once the block
is done: a checkpoint is never left half-written.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt (and caught with it)."""


def _raise_terminated(signum, frame):
    raise Terminated


def stop_signal_name(stop: KeyboardInterrupt) -> str:
    """"SIGTERM" for a Terminated, "SIGINT" for any other KeyboardInterrupt (a Ctrl-C)."""
    return "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"


def _in_main_thread() -> bool:
    # Only the main thread receives signals and may install handlers.
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_interrupt():
    """Run the block with SIGTERM raised as `Terminated`; the old handler afterwards."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopRequest:
    """The Ctrl-C or SIGTERM noted by `stops_between_steps`'s handlers, if any."""

    def __init__(self):
        self.signum = None

    def note(self, signum, frame) -> None:
        """The signal handler: note the first signal; a second one (the user insists)
        is raised at once."""
        if self.signum is None:
            self.signum = signum
        else:
            self.check()

    def check(self) -> None:
        """Raise the signal noted, if any: Terminated for SIGTERM, KeyboardInterrupt for
        Ctrl-C."""
        if self.signum == signal.SIGTERM:
            raise Terminated
        if self.signum is not None:
            raise KeyboardInterrupt


@contextmanager
def stops_between_steps():
    """Run the block with Ctrl-C and SIGTERM noted in the StopRequest it yields, raised
    where the block calls its `check()` (or as it ends, if it ends without another
    check); the old handlers afterwards. Outside the main thread (no signals there) the
    StopRequest never holds one."""
    stop = StopRequest()
    if not _in_main_thread():
        yield stop
        return
    previous = {signum: signal.signal(signum, stop.note) for signum in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    stop.check()  # one that came after the block's last check is not lost


@contextmanager
def interrupts_deferred():
    """Run the block with Ctrl-C and SIGTERM noted rather than acted on; afterwards the
    first one noted is delivered again, to whatever handled it before the block."""
    if not _in_main_thread():
        yield
        return
    noted = []
    previous = {signum: signal.signal(signum, lambda received, _: noted.append(received))
                for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if noted:
        signal.raise_signal(noted[0])  # its handler runs now (KeyboardInterrupt, Terminated)
