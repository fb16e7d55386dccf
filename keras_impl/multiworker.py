"""The Keras custom loop on several workers: MultiWorkerMirroredStrategy over TF_CONFIG.

    python -m keras_impl.multiworker --hosts 10.0.0.1:2222 10.0.0.2:2222 --index 0 \\
        --model fc128 --steps 20 --out worker0.npz          # on the first machine
    python -m keras_impl.multiworker --hosts 10.0.0.1:2222 10.0.0.2:2222 --index 1 \\
        --model fc128 --steps 20 --out worker1.npz          # on the second

Every worker runs this same program; `--hosts` lists every worker's host:port (the same
list, in the same order, everywhere) and `--index` says which one this is. From them
it writes TF_CONFIG, which MultiWorkerMirroredStrategy reads: each worker starts a
gRPC server on its port, the workers find each other, and every step all-reduces the
gradients over the network (ring collectives). Each worker reads the same unshuffled
training batches and keeps its part of each (keras_impl.distribute.distribute_batches),
so W workers of one replica each compute what one process with W replicas computes.
`launch_local` starts W such workers on 127.0.0.1 with free ports: one machine
standing in for W (what `python compare.py parallel --workers 2` runs and checks).

Training runs in float64 from the weights of scratch.model.build_model(model, seed),
plain SGD, dropout off, so the runs can be compared number for number. The output
(.npz): "losses" (steps,), then every weight of the model in Keras's order
("weight_0", ...), the same on every worker.
"""
from __future__ import annotations

import plumbing.quiet  # noqa: F401  first: quiets TensorFlow's start-up (see there)
import argparse
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from plumbing.args import at_most, output_file, positive_float, positive_int, seed_number
from plumbing.files import atomic_write
from scratch.cli import model_name

WORKER_TIMEOUT = 600  # seconds for a whole local run: a hung worker must not hang the caller


def tf_config(hosts: list[str], index: int) -> str:
    """The TF_CONFIG of worker `index` in a cluster of `hosts` (host:port each)."""
    return json.dumps({"cluster": {"worker": list(hosts)},
                       "task": {"type": "worker", "index": index}})


def fixed_batches(name: str, global_batch: int, steps: int, data_dir=None):
    """The first `steps` unshuffled training batches of `global_batch` images, as NumPy
    (x, y) pairs: the same on every worker and in every process."""
    from keras_impl.data import make_dataset
    from scratch import zoo

    ds = make_dataset("train", global_batch, flat=not zoo.has_conv(name), shuffle=False,
                      data_dir=data_dir, limit=global_batch * steps, drop_remainder=True)
    batches = list(ds.as_numpy_iterator())
    if len(batches) < steps:
        raise ValueError(f"only {len(batches)} batches of {global_batch} training images, "
                         f"{steps} steps asked for")
    return batches


def train_replicated(strategy, name: str, batches, lr: float, seed: int):
    """SGD on `batches` (NumPy global batches) under `strategy`, dropout off, from the
    weights of scratch's build_model(name, seed) in the current Keras float type.
    Returns (losses per step, [every weight after the steps])."""
    import keras
    import tensorflow as tf

    from keras_impl import distribute
    from keras_impl.zoo_model import build_twinnet
    from scratch.model import build_model

    global_batch = len(batches[0][1])
    with strategy.scope():
        model = build_twinnet(name)
        optimizer = keras.optimizers.SGD(lr)
    model.set_weights([value for _, _, value in build_model(name, seed=seed).weights()])
    x = np.stack([b[0] for b in batches]).astype(keras.config.floatx())
    y = np.stack([b[1] for b in batches])
    dataset = distribute.distribute_batches(
        strategy, functools.partial(tf.data.Dataset.from_tensor_slices, (x, y)), global_batch)
    step = distribute.make_distributed_train_step(
        strategy, model, optimizer, global_batch,
        forward=functools.partial(distribute.forward_without_dropout, model))
    losses = [float(step(xs, ys)) for xs, ys in dataset]
    return losses, [w.numpy() for w in model.weights]


# --- one worker ---------------------------------------------------------------------


def worker(args) -> None:
    """This process as worker `args.index` of `args.hosts`: train, write args.out."""
    os.environ["TF_CONFIG"] = tf_config(args.hosts, args.index)
    import keras
    import tensorflow as tf

    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    batches = fixed_batches(args.model, args.batch_size, args.steps, args.data_dir)
    losses, weights = train_replicated(strategy, args.model, batches, args.lr, args.seed)
    arrays = {"losses": np.array(losses),
              **{f"weight_{i}": value for i, value in enumerate(weights)}}
    atomic_write(args.out, lambda f: np.savez(f, **arrays))


def host_port(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return text


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m keras_impl.multiworker",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", nargs="+", type=host_port, required=True,
                        help="every worker's host:port, the same list on every worker")
    parser.add_argument("--index", type=int, required=True, help="this worker's place in --hosts")
    parser.add_argument("--model", type=model_name, default="fc128")
    parser.add_argument("--steps", type=at_most(positive_int, 10_000), default=20)
    parser.add_argument("--batch-size", type=at_most(positive_int, 55_000), default=64,
                        help="global batch, divisible by the number of workers")
    parser.add_argument("--lr", type=positive_float, default=0.05, help="SGD learning rate")
    parser.add_argument("--seed", type=seed_number, default=0)
    parser.add_argument("--out", type=output_file, required=True)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    if not 0 <= args.index < len(args.hosts):
        parser.error(f"--index {args.index}: expected 0 .. {len(args.hosts) - 1}")
    if args.batch_size % len(args.hosts):
        parser.error(f"--batch-size {args.batch_size}: not divisible by {len(args.hosts)} workers")
    return args


# --- several local workers --------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` TCP ports of 127.0.0.1 free right now (held open together, so distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch_local(workers: int, options: list[str], timeout: float = WORKER_TIMEOUT) -> list[dict]:
    """Run `workers` worker processes on 127.0.0.1 (free ports) with `options` (--model,
    --steps, ...); returns each worker's arrays. RuntimeError with the failing worker's
    last error line if one fails or the run exceeds `timeout` seconds."""
    hosts = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    with tempfile.TemporaryDirectory(prefix="twinnet-workers-") as folder:
        folder = Path(folder)
        processes = []
        for index in range(workers):
            command = [sys.executable, "-m", "keras_impl.multiworker", "--hosts", *hosts,
                       "--index", str(index), "--out", str(folder / f"worker{index}.npz"),
                       *options]
            env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
            log = open(folder / f"worker{index}.log", "wb")
            processes.append((subprocess.Popen(command, stdout=log, stderr=log, env=env), log))
        deadline = time.monotonic() + timeout
        try:
            for index, (process, _) in enumerate(processes):
                try:
                    process.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise RuntimeError(f"worker {index} still running after {timeout:.0f} s "
                                       f"(log: {folder / f'worker{index}.log'})") from None
                if process.returncode:
                    lines = (folder / f"worker{index}.log").read_text(errors="replace")
                    last = next((line for line in reversed(lines.splitlines()) if line.strip()),
                                "no output")
                    raise RuntimeError(f"worker {index} exited with {process.returncode}: {last}")
        finally:
            for process, log in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                log.close()
        results = []
        for index in range(workers):
            with np.load(folder / f"worker{index}.npz") as data:
                results.append({key: data[key] for key in data.files})
        return results


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    worker(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
