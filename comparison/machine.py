"""Which machine a bench ran on: what its ratios belong to.

    describe()          # dict: CPU, usable cores, load, BLAS, TensorFlow, Keras, kernels' ISA
    summary(described)  # the same as a few lines of text

The NumPy / Keras ratios depend on the CPU: both engines reach a different share of
the same machine's matmul peak, and TensorFlow's convolutions (oneDNN) pick their
kernels by the instruction sets the CPU has (AVX2, AVX-512, AMX), while NumPy's
im2col and OpenBLAS are not affected the same way. So the bench records the machine.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf
from threadpoolctl import threadpool_info

from plumbing.cpus import usable_cpus

# CPU flags (/proc/cpuinfo) that decide which kernels the math libraries can run
VECTOR_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
# A small convolution run with oneDNN's verbose log on, which names the ISA it dispatches to
ONEDNN_PROBE = ("import tensorflow as tf\n"
                "x = tf.ones((2, 8, 8, 1)); k = tf.ones((3, 3, 1, 4))\n"
                "tf.nn.conv2d(x, k, 1, 'SAME').numpy()\n")


def cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_quota() -> float | None:
    """CPUs the cgroup allows (cgroup v2 cpu.max), or None when unlimited or unknown."""
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as limit:
            quota, period = limit.read().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def blas() -> dict:
    """NumPy's BLAS as threadpoolctl sees it: library, version, kernels, threads now."""
    pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    if not pools:
        return {"library": "unknown"}
    pool = pools[0]
    return {"library": pool["internal_api"], "version": pool.get("version"),
            "kernels": pool.get("architecture"), "max_threads": pool["num_threads"]}


def tensorflow_kernels() -> str:
    """The instruction set TensorFlow's oneDNN kernels dispatch to on this machine, from
    oneDNN's own log in a fresh process; "Eigen (oneDNN off)" when TF_ENABLE_ONEDNN_OPTS=0."""
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return "Eigen (oneDNN off)"
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        probe = subprocess.run([sys.executable, "-c", ONEDNN_PROBE], capture_output=True,
                               text=True, env=env, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in probe.stdout.splitlines():
        if ",isa:" in line:
            return "oneDNN " + line.split(",isa:", 1)[1].strip()
    return "unknown (oneDNN said nothing)"


def describe() -> dict:
    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    return {"cpu": info.get("model name", platform.processor() or "unknown"),
            "usable_cpus": len(usable_cpus()), "cpus_online": os.cpu_count(),
            "cpu_quota": cpu_quota(), "vector_flags": [f for f in VECTOR_FLAGS if f in flags],
            "load_average_1min": round(os.getloadavg()[0], 2),
            "blas": blas(), "numpy": np.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "tensorflow_kernels": tensorflow_kernels(),
            "python": platform.python_version()}


def summary(machine: dict) -> list[str]:
    """The description as short lines (each under 80 columns for usual names)."""
    quota = f", cgroup quota {machine['cpu_quota']:g}" if machine.get("cpu_quota") else ""
    lib = machine["blas"]
    return [f"CPU: {machine['cpu']}, {machine['usable_cpus']} usable of "
            f"{machine['cpus_online']}{quota}",
            f"vector instructions: {' '.join(machine['vector_flags']) or 'none listed'}; "
            f"load average {machine['load_average_1min']:g} at start",
            f"NumPy {machine['numpy']}: {lib['library']} {lib.get('version') or ''} "
            f"({lib.get('kernels') or '?'} kernels, up to {lib.get('max_threads')} threads)",
            f"TensorFlow {machine['tensorflow']} ({machine['tensorflow_kernels']}), "
            f"Keras {machine['keras']}"]
