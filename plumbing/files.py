"""Files written whole or not at all.

    write_json(path, report)                    # the whole file or the old one
    atomic_write(path, lambda f: f.write(data))
    write_figure(fig, "loss.png", dpi=100)       # matplotlib, the same way
    with atomic_path("model.keras") as tmp:     # for libraries that want a file name
        model.save(tmp)

A temporary file next to the target, flushed to disk, then renamed onto it: a crash,
Ctrl-C or a full disk mid-write leaves the previous file (or none), never half a file.
A write that fails raises WriteError, an OSError whose message is one line naming the
target: "runs/run.json: cannot write (No space left on device)". Folders made for a
write that then fails are removed again.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path

# How TensorFlow reports a file it could not write (a checkpoint, an event file):
# "{{function_node ...}} PATH; No space left on device ..."
TENSORFLOW_WRITE_FAILURE = re.compile(r"(\S+); (No space left on device|Disk quota exceeded|"
                                      r"Read-only file system|Permission denied)")


class WriteError(OSError):
    """A file that could not be written; str() is "PATH: cannot write (reason)"."""

    def __init__(self, path, reason: str, errno: int | None = None):
        super().__init__(errno, reason, str(path))
        self.path, self.reason = Path(path), reason

    def __str__(self) -> str:
        return f"{self.path}: cannot write ({self.reason})"


def tensorflow_write_failure(err: BaseException) -> WriteError | None:
    """The WriteError naming the file when `err` is TensorFlow failing to write one (a full
    disk under TensorBoard's event files, say), else None. Imports no TensorFlow."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(err, tf.errors.OpError):
        return None
    found = TENSORFLOW_WRITE_FAILURE.search(err.message)
    return WriteError(found[1], found[2]) if found else None


def make_folders(folder: Path) -> list[Path]:
    """mkdir -p `folder`; returns the folders made, outermost first. When one cannot be
    made, those made before it are removed and the OSError raised."""
    made = []
    try:
        for path in reversed([p for p in (folder, *folder.parents) if not p.exists()]):
            path.mkdir()
            made.append(path)
    except OSError:
        remove_folders(made)
        raise
    return made


def remove_folders(made: list[Path]) -> None:
    """Remove the folders make_folders made (innermost first) that are still empty."""
    for path in reversed(made):
        with contextlib.suppress(OSError):
            path.rmdir()


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path beside `path` (same suffix: Keras and h5py pick the format
    by it) for a library to write; on success it is renamed onto `path`, else removed.
    Any OSError becomes a WriteError naming `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{suffix or path.suffix}")
    made = []
    try:
        made = make_folders(path.parent)
        yield tmp
        os.replace(tmp, path)
        made = []
    except WriteError:
        raise
    except OSError as err:
        reason = err.strerror or (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WriteError(path, reason, err.errno) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
        remove_folders(made)


def atomic_write(path, write) -> None:
    """Call write(binary file) on a temporary file next to `path`, then os.replace it
    onto `path`: a crash mid-write leaves the previous file intact, never half a file.
    Creates the folder."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def write_json(path, data) -> None:
    """`data` as JSON (indent 2, a final newline), written atomically; creates the folder."""
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def write_text(path, text: str) -> None:
    """`text` as UTF-8, written atomically; creates the folder."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_figure(fig, path, **savefig_args) -> None:
    """matplotlib's fig.savefig(path, ...), written atomically (format from the suffix)."""
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".").lower(),
                                             **savefig_args))
