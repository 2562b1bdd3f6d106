"""The fork server: workers forked from a per-pool zygote, its supervision and fallbacks."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from runtime import Pool, WorkerStartError
from runtime.registry import connect
from tests.conftest import pid_alive, wait_until, worker_processes

SAMPLE = "tests.adapters.sample"


def zygote_pid(pool: Pool) -> int:
    pid = pool.stats().forkserver_pid
    assert pid is not None
    return pid


def test_workers_are_forked_from_one_zygote_that_ran_preload() -> None:
    with Pool(adapter=f"{SAMPLE}:Preloaded", size=3) as pool:
        zygote = zygote_pid(pool)
        seen = [pool.execute("where") for _ in range(6)]
        assert {s["ppid"] for s in seen} == {zygote}
        assert {s["loaded_in"] for s in seen} == {zygote}  # preload ran once, in the zygote
        assert {s["pid"] for s in seen} <= set(pool.pids())
        for pid in pool.pids():  # each worker leads its own session (cleanup signals groups)
            assert os.getpgid(pid) == pid and os.getsid(pid) == pid
    assert not pid_alive(zygote)


def test_zygote_death_spares_the_workers_and_a_new_one_serves_replacements() -> None:
    with Pool(size=2) as pool:
        old = zygote_pid(pool)
        workers = set(pool.pids())
        os.kill(old, signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(old))
        assert pool.execute("add", {"a": 1, "b": 2}) == 3
        assert set(pool.pids()) == workers and all(pid_alive(p) for p in workers)
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)  # exit seen through a pidfd: the zygote is gone
        assert wait_until(lambda: victim not in pool.pids() and len(pool.pids()) == 2,
                          timeout=15)
        new = zygote_pid(pool)
        assert new != old and psutil.Process(max(pool.pids())).ppid() == new
        assert pool.stats().recycles.get("crashed") == 1


def test_exit_codes_come_through_the_zygote() -> None:
    with Pool(size=1) as pool:
        [pid] = pool.pids()
        os.kill(pid, signal.SIGSEGV)
        assert wait_until(lambda: pool.stats().recycles.get("crashed") == 1, timeout=10)
        [event] = [e for e in pool.stats().events if e["kind"] == "crashed"]
        assert "SIGSEGV" in event["detail"]


def test_adapter_that_is_not_fork_safe_is_spawned() -> None:
    with Pool(adapter=f"{SAMPLE}:NotForkSafe", size=1) as pool:
        assert pool.stats().forkserver_pid is None
        assert pool.execute("parent") == os.getpid()


def test_spawn_start_method_and_a_broken_adapter_in_the_zygote() -> None:
    with Pool(size=1, start_method="spawn") as pool:
        assert pool.stats().forkserver_pid is None
        assert psutil.Process(pool.pids()[0]).ppid() == os.getpid()
    with pytest.raises(WorkerStartError, match="fork server") as err:
        Pool(adapter="tests.adapters.no_such_module:X", size=1).start()
    assert "No module named 'tests.adapters.no_such_module'" in str(err.value)


def test_a_segfault_in_the_zygote_names_the_crashing_line() -> None:
    with pytest.raises(WorkerStartError, match="fork server") as err:
        Pool(adapter=f"{SAMPLE}:CrashingPreload", size=1).start()
    assert "Fatal Python error: Segmentation fault" in str(err.value)
    assert "sample.py" in str(err.value) and "in preload" in str(err.value)


def test_an_adapter_that_fails_to_import_starts_one_fork_server(
        state_dir: Path, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """Three workers wait for the zygote together: its load failure is their answer, it is
    not restarted, and the error carries that one run's output."""
    with pytest.raises(WorkerStartError, match="could not load the adapter") as err:
        Pool(adapter="tests.adapters.broken_import:Never", size=3).start()
    text = str(err.value)
    del err  # its traceback holds the pool, and so its fork server's futures
    last_line = "ImportError: pit tests: this adapter module is broken on purpose"
    assert text.splitlines().count(last_line) == 1, text
    assert text.count("Traceback (most recent call last)") == 1, text
    conn = connect(state_dir)
    try:
        started = [r[0] for r in conn.execute(
            "SELECT worker_id FROM workers WHERE worker_id LIKE 'fork-server%'")]
    finally:
        conn.close()
    assert started == ["fork-server-1"]
    gc.collect()  # an unretrieved future's exception is reported when it is collected
    assert "never retrieved" not in capfd.readouterr().err
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_a_fork_answered_while_the_pool_closes_is_killed() -> None:
    pool = Pool(size=1).start()
    zygote = zygote_pid(pool)
    os.kill(zygote, signal.SIGSTOP)  # the replacement's fork request will wait in it
    try:
        [worker] = pool.stats().workers
        pool.recycle(worker.id, wait=False)
        # the replacement is starting: its fork request is on its way to the stopped zygote
        assert wait_until(lambda: len(pool.stats().workers) == 2, timeout=5)
        time.sleep(0.3)
        closer = threading.Thread(target=pool.close)
        closer.start()
        time.sleep(1.5)  # the pool is closing; then the zygote forks the replacement
    finally:
        os.kill(zygote, signal.SIGCONT)
    closer.join(15)
    assert not closer.is_alive()
    # the fork it answered late is killed, not left to run until it notices its host
    assert wait_until(lambda: not worker_processes(os.getpid()), timeout=1.0), \
        [p.cmdline() for p in worker_processes(os.getpid())]
