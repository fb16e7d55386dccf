"""Ctrl-C and SIGTERM during a training: one way to stop, never in the middle of a checkpoint.

    with sigterm_as_interrupt():     # SIGTERM now raises Terminated, a KeyboardInterrupt
        train()                      # ... so one `except KeyboardInterrupt` handles both
    with interrupts_deferred():
        manager.save()               # a Ctrl-C or SIGTERM arriving now acts after the save

Python delivers Ctrl-C as KeyboardInterrupt wherever the main thread happens to be.
SIGTERM (what `kill`, a batch scheduler or a container stop sends) ends the process at
once by default; inside `sigterm_as_interrupt` it is raised as `Terminated` instead, so
the training loops stop the same way for both. A signal arriving inside
`interrupts_deferred` is only noted, and delivered again once the block is done: a
checkpoint is never left half-written.
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
