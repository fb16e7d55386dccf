"""Ctrl-C held off while something must not be torn in half (a checkpoint being written).

    with sigint_deferred():
        manager.save()          # a Ctrl-C pressed now is raised after the save

Python delivers Ctrl-C as KeyboardInterrupt wherever the main thread happens to be. A
press in the middle of writing a checkpoint would leave a half-written one behind;
inside `sigint_deferred` the press is only noted, and raised once the block is done.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


@contextmanager
def sigint_deferred():
    """Run the block with Ctrl-C noted rather than raised; raise it afterwards if pressed."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can install signal handlers (and receives SIGINT)
        return
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda *_: pressed.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt
