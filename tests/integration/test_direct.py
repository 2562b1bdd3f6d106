"""Direct calls: blocking `execute` on a worker lent to the calling thread (pool/direct.py).

Each test first makes one call through the loop, after which the pool lends the idle worker;
`stats().workers[i].lent` shows it, so every test below checks it runs the direct path."""

from __future__ import annotations

import glob
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import runtime
from runtime import Pool
from runtime.protocol import shm
from tests.conftest import pid_alive, wait_until

SAMPLE = "tests.adapters.sample:SampleAdapter"


def lent(pool: Pool) -> list[str]:
    return [w.id for w in pool.stats().workers if w.lent]


def warm(pool: Pool, tool: str = "ping") -> int:
    """One call through the loop: afterwards its worker is lent; returns its pid."""
    pool.execute(tool)
    assert wait_until(lambda: len(lent(pool)) == 1, timeout=2)
    worker = next(w for w in pool.stats().workers if w.lent)
    assert worker.pid is not None
    return worker.pid


def test_serial_calls_run_on_a_lent_worker_and_count_everywhere() -> None:
    with Pool(size=2) as pool:
        pid = warm(pool)
        served = {w.id: w.requests for w in pool.stats().workers}
        for i in range(50):
            assert pool.execute("add", {"a": i, "b": 1}) == i + 1
        stats = pool.stats()
        lent_worker = next(w for w in stats.workers if w.lent)
        assert lent_worker.pid == pid
        assert lent_worker.requests == served[lent_worker.id] + 50
        assert lent_worker.in_flight == 0  # lent and idle: nothing is running
        assert stats.calls == 51
        with pytest.raises(runtime.RemoteError, match="boom"):
            pool.execute("fail", {"message": "boom"})
        assert pool.execute("ping")["pid"] == pid  # a tool error keeps the worker lent
        assert lent(pool) == [lent_worker.id]


def test_direct_calls_off_never_lend() -> None:
    with Pool(size=1, direct_calls=False) as pool:
        for _ in range(5):
            pool.execute("ping")
        assert lent(pool) == []


def test_a_direct_call_times_out_and_the_worker_serves_again() -> None:
    with Pool(size=1) as pool:
        pid = warm(pool)
        started = time.monotonic()
        with pytest.raises(runtime.CallTimeout, match="timed out") as info:
            pool.execute("sleep", {"ms": 10_000}, timeout=0.3)
        assert time.monotonic() - started < 2.0
        assert info.value.category == "timeout"
        # Cancelled in the worker (the sleep woke), its late answer drained: the same
        # process serves the next call, and is lent again after it.
        assert pool.execute("ping", timeout=2.0)["pid"] == pid
        assert wait_until(lambda: len(lent(pool)) == 1, timeout=2)
        assert pool.execute("ping", timeout=2.0)["pid"] == pid


def test_a_direct_call_stuck_in_c_gets_its_worker_replaced() -> None:
    with Pool(adapter=SAMPLE, size=1) as pool:
        pid = warm(pool, "get_history")
        with pytest.raises(runtime.CallTimeout):
            pool.execute("block", {"seconds": 60}, timeout=0.3)
        assert pool.execute("record", {"tag": "x"}, timeout=10.0) == 1
        assert wait_until(lambda: not pid_alive(pid))
        assert pool.pids() != [pid]


def test_a_crash_during_a_direct_call_fails_that_call_and_the_pool_recovers() -> None:
    with Pool(size=1) as pool:
        pid = warm(pool)
        with pytest.raises(runtime.WorkerExit, match="exited with code 7") as info:
            pool.execute("crash", {"code": 7})
        assert info.value.details["culprit"] is True
        assert pool.execute("ping", timeout=10)["pid"] != pid
        assert pool.stats().restarts == 1


def test_a_worker_killed_under_a_direct_call_names_the_signal() -> None:
    with Pool(size=1) as pool:
        pid = warm(pool)
        threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
        with pytest.raises(runtime.WorkerExit, match="killed by SIGKILL"):
            pool.execute("sleep", {"ms": 5_000})
        assert pool.execute("ping", timeout=10)["pid"] != pid


def test_an_idempotent_direct_call_is_retried_after_a_crash(tmp_path: Path) -> None:
    with Pool(adapter=SAMPLE, size=1) as pool:
        warm(pool, "get_history")
        marker = str(tmp_path / "crashed")
        assert pool.execute("crash_once", {"marker": marker}, idempotent=True,
                            timeout=20) == "survived"


def test_loop_calls_take_a_lent_worker_back() -> None:
    with Pool(size=1) as pool:
        warm(pool)
        # submit() goes through the loop: the idle lent worker is taken back for it.
        assert pool.submit("ping").result(timeout=5)["pong"] is True
        # A loop call that arrives while a direct call is out waits for it, then runs.
        box: dict[str, object] = {}
        warm(pool)
        direct = threading.Thread(
            target=lambda: box.update(a=pool.execute("sleep", {"ms": 400})))
        direct.start()
        time.sleep(0.1)
        started = time.monotonic()
        assert pool.submit("ping").result(timeout=5)["pong"] is True
        assert time.monotonic() - started > 0.15  # it waited for the direct call
        direct.join(5)
        assert box["a"] == {"slept_ms": 400, "cancelled": False}


def test_a_session_pinned_to_a_lent_worker_gets_it() -> None:
    with Pool(adapter=SAMPLE, size=1) as pool:
        warm(pool, "get_history")
        with pool.session(affinity="strict_queue") as session:
            assert session.execute("remember", {"item": "a"})["items"] == ["a"]
            warm(pool, "get_history")  # lent again between the session's calls
            assert session.execute("remember", {"item": "b"})["items"] == ["a", "b"]


def test_max_requests_recycles_a_lent_worker() -> None:
    with Pool(size=1, max_requests=5) as pool:
        pids = {warm(pool)}
        deadline = time.monotonic() + 20
        while pool.stats().recycles.get("requests", 0) < 3 and time.monotonic() < deadline:
            pids.add(pool.execute("ping", timeout=10)["pid"])
            time.sleep(0.005)  # a replacement takes ~15 ms to start; calls go on meanwhile
        assert pool.stats().recycles.get("requests", 0) >= 3
        assert len(pids) >= 3


def test_close_waits_for_a_direct_call_and_leaves_nothing() -> None:
    pool = Pool(size=1).start()
    warm(pool)
    pid = pool.pids()[0]
    box: dict[str, object] = {}
    t = threading.Thread(target=lambda: box.update(r=pool.execute("sleep", {"ms": 300})))
    t.start()
    time.sleep(0.1)
    pool.close()
    t.join(5)
    assert box["r"] == {"slept_ms": 300, "cancelled": False}
    assert not pid_alive(pid)


def test_threads_share_lent_workers() -> None:
    with Pool(size=2) as pool:
        errors: list[BaseException] = []
        counts: list[int] = []

        def work(n: int) -> None:
            try:
                for i in range(100):
                    assert pool.execute("add", {"a": n, "b": i}) == n + i
                counts.append(n)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors and sorted(counts) == list(range(6))
        assert sum(w.requests for w in pool.stats().workers) == 600


def test_thread_profile_workers_are_not_lent() -> None:
    with Pool(adapter="tests.adapters.sample:ThreadedAdapter", size=1, profile="thread",
              threads_per_worker=2) as pool:
        for _ in range(5):
            pool.execute("nap", {"ms": 1})
        assert lent(pool) == []


def test_an_interrupted_direct_call_is_cancelled_in_its_worker() -> None:
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    with Pool(size=1) as pool:
        pid = warm(pool)
        old = signal.signal(signal.SIGUSR1, interrupt)
        try:
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1)).start()
            started = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                pool.execute("sleep", {"ms": 10_000})
        finally:
            signal.signal(signal.SIGUSR1, old)
        assert time.monotonic() - started < 2.0
        # Cancelled in the worker, not killed: the same process answers at once.
        assert pool.execute("ping", timeout=3.0)["pid"] == pid


def test_a_tool_with_large_results_goes_through_shared_memory() -> None:
    with Pool(adapter=SAMPLE, size=1) as pool:
        warm(pool, "get_history")
        n = 2 * 1024 * 1024
        # The first large result comes inline on the direct connection; from then on the
        # tool's calls take the loop's path, which offers a shared-memory arena for it.
        for _ in range(3):
            assert pool.execute("make_bytes", {"n": n}) == b"x" * n
        assert glob.glob(f"{shm.PREFIX}{pool.instance.id}-*"), "no arena was used"
        assert pool.execute("get_history") == []  # small calls are lent the worker again
        assert wait_until(lambda: len(lent(pool)) == 1, timeout=2)
