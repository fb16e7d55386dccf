"""Peak resident memory of a NumPy training, measured in a fresh process.

    numpy_training_peak_mb("best", data_dir)   # -> e.g. 1051.9 (MB)

The peak resident set size (the most physical memory the process ever held) is a
property of a whole process: TensorFlow's libraries (loaded for the tf.data
pipeline the NumPy engine trains on), the training split as one tensor, the
pipeline's batches in flight, and the engine's arrays of one step: activations,
im2col buffers, gradients and Adam's moments. A process that already ran other
models would report their peak, so the training runs in a process of its own,
started afresh (`python -m comparison.memory`), as
`python -m comparison.scratch_train` would run it:
the whole training split, PEAK_STEPS Adam steps at batch BATCH in training mode,
then the validation pass. The kernel reports the peak (VmHWM, see peak_resident_bytes).
"""
from __future__ import annotations

import plumbing.quiet  # noqa: F401  first: `python -m` this module is a command

import json
import subprocess
import sys
from itertools import islice
from pathlib import Path

from keras_impl.data import make_dataset
from scratch import zoo
from scratch.model import build_model
from scratch.optim import make_optimizer
from scratch.train import evaluate, train_epoch

PEAK_STEPS = 5  # every array of a step exists from the first; later steps reuse memory
BATCH = 128


def numpy_training_peak_mb(name: str, data_dir=None, steps: int = PEAK_STEPS,
                           batch_size: int = BATCH) -> float:
    """Peak resident memory, in MB (1e6 bytes), of a fresh process that trains zoo model
    `name` with the NumPy engine for `steps` steps of `batch_size` on the training
    split, then evaluates it on the validation split."""
    # `python -m` this module: the new process imports only what the training needs.
    done = subprocess.run([sys.executable, "-m", __name__, json.dumps(
        {"name": name, "data_dir": None if data_dir is None else str(data_dir),
         "steps": steps, "batch_size": batch_size})],
        capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the memory probe of {name} failed: {done.stderr.strip()}")
    return float(done.stdout.split()[-1])


def _train_and_measure(name: str, data_dir, steps: int, batch_size: int) -> float:
    flat = not zoo.has_conv(name)
    train_ds = make_dataset("train", batch_size, flat=flat, seed=0, data_dir=data_dir)
    model = build_model(name, seed=0)
    train_epoch(model, make_optimizer("adam"), islice(train_ds.as_numpy_iterator(), steps))
    val_ds = make_dataset("val", batch_size, flat=flat, data_dir=data_dir)
    evaluate(model, val_ds.as_numpy_iterator())
    return peak_resident_bytes() / 1e6


def peak_resident_bytes() -> int:
    """This process's peak resident set size: VmHWM of /proc/self/status on Linux.

    Not getrusage's ru_maxrss: Linux carries that over from before exec, so a process
    started by a big one (the bench, 1.5 GB) would report its parent's size."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    import resource  # elsewhere (macOS: bytes), without that carry-over

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":  # the fresh process of numpy_training_peak_mb
    print(_train_and_measure(**json.loads(sys.argv[1])))
