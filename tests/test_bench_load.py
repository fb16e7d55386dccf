"""The NumPy engine's BLAS threads chosen from the free CPUs (plumbing.cpus), the bench's
machine description (comparison.machine) and its --busy and --quick modes.

No timing is asserted: the figures belong to the machine and its load. What is tested is
the arithmetic of the choice, that the busy processes end, and what the bench reports.
"""
import json

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from helpers import needs_mnist
from plumbing import cpus


def blas_threads_now() -> int:
    return max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")


@pytest.mark.parametrize("free, most, threads", [
    (None, 2, 1), (0.0, 2, 1), (1.0, 2, 1), (1.74, 2, 1), (1.75, 2, 2), (2.0, 2, 2),
    (4.0, 2, 2), (3.9, 4, 4), (3.7, 4, 3)])
def test_one_thread_per_free_cpu_with_a_margin(free, most, threads):
    assert cpus.threads_for(free, most) == threads


def test_free_cpus_leave_out_this_process(monkeypatch):
    """Over one second the machine was busy 1.5 CPU-seconds, 1.0 of them this process's:
    the rest of the machine held 0.5 CPUs, so 1.5 of 2 are free."""
    readings = iter([(0.0, 100.0, 10.0), (1.0, 101.5, 11.0)])
    now = {}

    def advance():
        now["t"], now["busy"], now["own"] = next(readings)

    monkeypatch.setattr(cpus, "usable_cpus", lambda: [0, 1])
    monkeypatch.setattr(cpus.time, "monotonic", lambda: now["t"])
    monkeypatch.setattr(cpus, "busy_seconds", lambda _: now["busy"])
    monkeypatch.setattr(cpus, "own_seconds", lambda: now["own"])
    advance()
    free = cpus.FreeCpus()
    advance()
    assert free.free() == pytest.approx(1.5)


def test_blas_threads_follow_the_free_cpus(monkeypatch):
    if not any(pool["user_api"] == "blas" for pool in threadpool_info()):
        pytest.skip("threadpoolctl sees no BLAS under NumPy")
    free = iter([2.0, 0.4, 2.0])
    monkeypatch.setattr(cpus.FreeCpus, "free", lambda self: next(free))
    monkeypatch.setattr(cpus, "FIRST_LOOK", 0.0)
    monkeypatch.setattr(cpus, "INTERVAL", 0.0)
    with threadpool_limits(limits=1, user_api="blas"):  # restored afterwards
        with cpus.BlasThreads(most=2) as threads:
            assert threads.threads == 2 == blas_threads_now()
            assert threads.adjust() == 1 == blas_threads_now()
            assert threads.adjust() == 2 == blas_threads_now()
        assert blas_threads_now() == 1  # the count before the block
    assert threads.history == {1: 1, 2: 1}


def test_busy_processes_end_with_their_block():
    with pytest.raises(RuntimeError):
        with cpus.busy_processes(2) as procs:
            assert len(procs) == 2 and all(p.poll() is None for p in procs)  # spinning
            raise RuntimeError("the block fails")
    assert all(p.returncode is not None for p in procs)


@pytest.mark.slow  # times every engine idle and beside a busy process: minutes
@needs_mnist
def test_quick_busy_bench_names_its_machine_and_each_engines_slowdown(tmp_path, capsys):
    import compare

    out = tmp_path / "bench.json"
    assert compare.main(["bench", "--quick", "--model", "tiny", "--busy", "1",
                         "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    machine = results["machine"]
    assert machine["cpu"] and machine["usable_cpus"] >= 1
    assert machine["blas"]["library"] and machine["tensorflow"] and machine["keras"]
    assert machine["tensorflow_kernels"]  # oneDNN's ISA, or Eigen when oneDNN is off
    tiny = results["models"]["tiny"]
    for engine in ("numpy", "numpy_all_cpus", "numpy_1thread", "keras_fit"):
        idle_seconds = tiny[f"{engine}_s_per_epoch"] * tiny["fraction_timed"]
        assert tiny[f"{engine}_slowdown"] == pytest.approx(tiny[f"{engine}_busy_s"]
                                                           / idle_seconds)
        assert tiny[f"{engine}_fair_slowdown"] >= 1
    printed = capsys.readouterr().out
    assert f"CPU: {machine['cpu']}" in printed and "Slowdown beside 1" in printed
    assert max(len(line) for line in printed.splitlines()) <= 80
