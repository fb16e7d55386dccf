"""Files written whole or not at all.

    write_json(path, report)          # the whole file or the old one
    atomic_write(path, lambda f: f.write(data))

A temporary file next to the target, flushed to disk, then renamed onto it: a crash,
Ctrl-C or a full disk mid-write leaves the previous file (or none), never half a file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def atomic_write(path, write) -> None:
    """Call write(binary file) on a temporary file next to `path`, then os.replace it
    onto `path`: a crash mid-write leaves the previous file intact, never half a file.
    Creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, data) -> None:
    """`data` as JSON (indent 2, a final newline), written atomically; creates the folder."""
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
