"""profile = "thread": one worker runs several calls at once."""

from __future__ import annotations

import time

import pytest

import runtime
from runtime import Pool

THREADED = "tests.adapters.sample:ThreadedAdapter"


def test_one_worker_runs_eight_sleeps_at_once() -> None:
    with Pool(adapter=THREADED, size=1, profile="thread", threads_per_worker=8) as pool:
        pool.execute("nap", {"ms": 1})
        started = time.monotonic()
        futures = [pool.submit("nap", {"ms": 200}) for _ in range(8)]
        peaks = [f.result()["peak"] for f in futures]
        wall = time.monotonic() - started
        assert wall < 0.8, f"8 x 200 ms took {wall:.2f} s: not concurrent"
        assert max(peaks) <= 8 and pool.execute("peak") == 8
        assert pool.stats().workers[0].capacity == 8


def test_capacity_is_never_exceeded() -> None:
    with Pool(adapter=THREADED, size=1, profile="thread", threads_per_worker=3) as pool:
        futures = [pool.submit("nap", {"ms": 30}) for _ in range(30)]
        for f in futures:
            f.result()
        assert pool.execute("peak") == 3


def test_thread_sensitive_tools_run_one_at_a_time() -> None:
    with Pool(adapter=THREADED, size=1, profile="thread", threads_per_worker=4) as pool:
        futures = [pool.submit("serial", {"ms": 30}) for _ in range(6)]
        futures += [pool.submit("nap", {"ms": 30}) for _ in range(6)]
        for f in futures:
            f.result()
        assert pool.execute("serial", {"ms": 0}) == 0


def test_thread_profile_needs_a_thread_safe_adapter() -> None:
    with pytest.raises(runtime.WorkerStartError, match="not thread_safe") as info:
        Pool(adapter="tests.adapters.sample:SampleAdapter", size=1, profile="thread").start()
    assert "thread_safe = True" in str(info.value)


def test_thread_profile_sets_math_threads_to_the_thread_count() -> None:
    with Pool(adapter=THREADED, size=1, profile="thread", threads_per_worker=3) as pool:
        import os

        pid = pool.pids()[0]
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        assert b"OMP_NUM_THREADS=3" in env
        assert os.getpid() != pid
