"""NumPy's BLAS threads matched to the CPUs that are free right now.

    threads = BlasThreads()          # before a loop of NumPy steps
    threads.adjust()                 # between steps: cheap; re-decides once a second

OpenBLAS splits a matrix product evenly over its threads and waits for the last one.
When another program holds one of the cores, the thread scheduled there runs a fraction
of the time and the others wait for it (busy-waiting, so they take CPU from that program
too): two threads beside two busy processes on two cores made a convnet step 4x slower,
one thread 1.4x. So the engine uses as many threads as there are CPUs free:

    free = usable CPUs - CPU time the rest of the machine used over the last second

(the machine's busy time from /proc/stat over the CPUs this process may run on, minus
this process's own CPU time). A second thread is used only when at least 1 + MARGIN CPUs
are free. Where /proc/stat is missing the engine keeps one thread.

`busy_processes(n)` runs n CPU-bound processes beside a block (the bench's --busy).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

STARTUP = 0.3  # seconds for busy_processes' interpreters to start and spin
INTERVAL = 1.0  # seconds between decisions; CPU times tick every 10 ms
FIRST_LOOK = 0.2  # seconds of the machine watched before the first step
MARGIN = 0.75  # CPUs free beyond a whole one before another thread is added
# /proc/stat columns counted as busy: user nice system idle iowait irq softirq steal
BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity; cgroup quotas are not seen)."""
    return sorted(os.sched_getaffinity(0))


def busy_seconds(cpus) -> float | None:
    """CPU seconds the machine has spent busy on `cpus` since boot (None: no /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            lines = stat.read().splitlines()
    except OSError:
        return None
    wanted, ticks = {f"cpu{n}" for n in cpus}, 0
    for line in lines:
        name, *columns = line.split()
        if name in wanted:
            ticks += sum(int(columns[i]) for i in BUSY_COLUMNS if i < len(columns))
    return ticks / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds this process's threads have used (user + system)."""
    times = os.times()
    return times.user + times.system


class FreeCpus:
    """How many of the usable CPUs the rest of the machine left free since the last call."""

    def __init__(self):
        self.cpus = usable_cpus()
        self._last = (time.monotonic(), busy_seconds(self.cpus), own_seconds())

    def free(self) -> float | None:
        now = (time.monotonic(), busy_seconds(self.cpus), own_seconds())
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        self._last = now
        if busy0 is None or busy1 is None or t1 <= t0:
            return None
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)
        return max(0.0, len(self.cpus) - others)


def threads_for(free: float | None, most: int) -> int:
    """BLAS threads for `free` CPUs: n threads when n - 1 + MARGIN CPUs are free, at least 1
    and at most `most`; 1 when nothing is known."""
    if free is None:
        return 1
    return max(1, min(most, int((free - MARGIN) // 1) + 1))


class BlasThreads:
    """NumPy's BLAS thread count, re-decided from the free CPUs every INTERVAL seconds.

        with BlasThreads() as threads:   # the count before it is restored on leaving
            for batch in batches:
                threads.adjust()
                ...

    most: the largest count to use (default: every usable CPU). The count in force is
    `threads`; `history` counts the steps run at each count.
    """

    def __init__(self, most: int | None = None):
        self.most = most or len(usable_cpus())
        self._free = FreeCpus()
        self._controller = ThreadpoolController()
        self._original = None  # the first limiter, which remembers the count before
        self._checked = time.monotonic()
        self.threads = 0
        self.history: dict[int, int] = {}
        time.sleep(FIRST_LOOK)  # this process idle: what is busy is the rest of the machine
        self._set(threads_for(self._free.free(), self.most))

    def _set(self, threads: int) -> None:
        if threads != self.threads:
            limiter = self._controller.limit(limits=threads, user_api="blas")
            self._original = self._original or limiter
            self.threads = threads

    def adjust(self) -> int:
        """Call between NumPy steps; returns the thread count for the next step."""
        now = time.monotonic()
        if now - self._checked >= INTERVAL:
            self._checked = now
            self._set(threads_for(self._free.free(), self.most))
        self.history[self.threads] = self.history.get(self.threads, 0) + 1
        return self.threads

    def __enter__(self) -> BlasThreads:
        return self

    def __exit__(self, *exc) -> None:
        if self._original is not None:
            self._original.restore_original_limits()


# A loop that only burns CPU: what a compile, a browser tab or a classmate's job does to a
# benchmark, reproducibly (python -c, so nothing is imported).
SPIN = "while True: pass"


@contextmanager
def busy_processes(count: int):
    """`count` CPU-bound processes running beside the block, ended when it ends (also on
    an exception or Ctrl-C). They get a moment to start before the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL)
             for _ in range(count)]
    try:
        if procs:
            time.sleep(STARTUP)
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
