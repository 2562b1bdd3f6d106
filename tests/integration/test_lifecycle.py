"""Start-up, shutdown and host death: no worker process may outlive its pool."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import runtime
from runtime import Pool, Pools, load_config
from tests.conftest import ROOT, pid_alive, wait_until


def test_close_stops_every_worker_and_removes_the_run_dir(state_dir: Path) -> None:
    pool = Pool(size=3).start()
    pids = pool.pids()
    assert len(pids) == 3 and all(pid_alive(p) for p in pids)
    run_dir = pool.instance.run_dir
    assert run_dir.is_dir() and (run_dir.stat().st_mode & 0o777) == 0o700
    pool.close()
    assert not any(pid_alive(p) for p in pids)
    assert not run_dir.exists()
    pool.close()  # idempotent


def test_close_drains_in_flight_calls_and_fails_queued_ones() -> None:
    pool = Pool(size=1, shutdown_grace_ms=3_000).start()
    running = pool.submit("sleep", {"ms": 400})
    time.sleep(0.1)
    queued = pool.submit("ping")
    time.sleep(0.05)
    pool.close()
    assert running.result()["slept_ms"] == 400
    with pytest.raises(runtime.ShutdownError):
        queued.result()
    with pytest.raises(runtime.ShutdownError):
        pool.submit("ping")


def test_an_idempotent_call_out_when_its_pool_closes_ends_with_the_close() -> None:
    """Its worker is stopped by the close: the call gets that worker's end, as one not
    idempotent does, and is not retried on a pool with no workers (the retry was queued after
    the close had emptied the queue, and the sync API's loop stopped: its caller waited for
    ever)."""
    pool = Pool(adapter="tests.adapters.sample:SampleAdapter", size=1).start()
    out = pool.submit("block", {"seconds": 30}, idempotent=True)
    time.sleep(0.5)
    pool.close(grace=0.2)
    with pytest.raises(runtime.WorkerExit):
        out.result(timeout=10)


def test_a_call_waiting_to_run_again_when_its_pool_closes_ends_with_the_close(
        tmp_path: Path) -> None:
    """Its worker died and it waits out its retry delay when the pool closes: it ends with
    ShutdownError. The retry's timer outlived the loop, and its caller waited for ever."""
    from runtime.pool.resilience import RetryPolicy

    pool = Pool(adapter="tests.adapters.sample:SampleAdapter", size=1).start()
    # white box: a retry far off (30 s), so that the close comes while the call waits for it
    pool._core.barrier.retry_policy = RetryPolicy(base_delay_s=30, max_delay_s=30, jitter=0)
    first = pool.pids()
    out = pool.submit("crash_once", {"marker": str(tmp_path / "marker")}, idempotent=True)
    # its worker died (the pool has its replacement): the call waits to run again
    assert wait_until(lambda: pool.pids() not in ([], first), timeout=30)
    assert not out.done()
    pool.close()
    with pytest.raises(runtime.ShutdownError, match="could run again"):
        out.result(timeout=10)


def test_workers_run_in_their_own_process_group_with_thread_limits() -> None:
    import os

    with Pool(adapter="tests.adapters.sample:SampleAdapter", size=1,
              env={"MKL_NUM_THREADS": "3", "PIT_TEST_VAR": "yes"}) as pool:
        pid = pool.pids()[0]
        assert os.getpgid(pid) == pid
        assert pool.execute("env", {"name": "OMP_NUM_THREADS"}) == "1"
        assert pool.execute("env", {"name": "MKL_NUM_THREADS"}) == "3"
        assert pool.execute("env", {"name": "PIT_TEST_VAR"}) == "yes"


HOST_SCRIPT = textwrap.dedent("""
    import sys, time
    from runtime import Pool
    pool = Pool(size=2).start()
    print(" ".join(map(str, pool.pids())), flush=True)
    time.sleep(60)
""")


def test_workers_exit_when_the_host_is_killed() -> None:
    host = subprocess.Popen([sys.executable, "-c", HOST_SCRIPT], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in host.stdout.readline().split()]  # type: ignore[union-attr]
        assert len(pids) == 2
        host.send_signal(signal.SIGKILL)
        host.wait()
        assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=10)
    finally:
        host.kill()


def test_interpreter_exit_closes_forgotten_pools() -> None:
    script = "from runtime import Pool\np = Pool(size=2).start()\nprint(*p.pids())\n"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    pids = [int(p) for p in out.stdout.split()]
    assert out.returncode == 0 and len(pids) == 2
    assert wait_until(lambda: not any(pid_alive(p) for p in pids))


INTERRUPTED_CLOSE = textwrap.dedent("""
    import os, signal, threading, psutil
    from runtime import Pool
    pool = Pool(size=1, shutdown_grace_ms=3000).start()
    pool.submit("sleep", {"ms": 1500})  # the close drains it: the Ctrl-C lands in the drain
    print(*[p.pid for p in psutil.Process().children(recursive=True)], flush=True)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        pool.close()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    pool.close()  # waits for the close that runs on, and ends it
    print("closed", flush=True)
""")


def test_a_close_interrupted_by_ctrl_c_runs_on_and_a_second_close_ends_it() -> None:
    # the interrupted close was cancelled half-way: the fork server stayed up until the host
    # exited, and the second close, finding the pool closing, returned at once
    host = subprocess.Popen([sys.executable, "-c", INTERRUPTED_CLOSE], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert host.stdout is not None
        kids = [int(p) for p in host.stdout.readline().split()]
        assert len(kids) >= 2  # the fork server and the worker
        assert host.stdout.readline().strip() == "interrupted"
        assert host.stdout.readline().strip() == "closed"
        assert not [p for p in kids if pid_alive(p)], "processes outlived the second close"
        assert host.wait(timeout=30) == 0, host.stderr.read() if host.stderr else ""
    finally:
        host.kill()
        host.wait()


def test_pools_from_config_start_every_named_pool(tmp_path: Path) -> None:
    (tmp_path / "pit.toml").write_text(textwrap.dedent("""
        [pools.default]
        size = 1
        [pools.sample]
        adapter = "tests.adapters.sample:SampleAdapter"
        size = 2
    """))
    with Pools(load_config(tmp_path / "pit.toml")) as pools:
        assert set(pools) == {"default", "sample"}
        assert pools.default().execute("add", {"a": 1, "b": 2}) == 3
        assert pools["sample"].execute("renamed", {"x": 4}) == 40
        assert len(pools["sample"].pids()) == 2
        with pytest.raises(runtime.PoolNotFound):
            pools["missing"]
    with Pools(load_config(tmp_path / "pit.toml"), only=["sample"]) as pools:
        assert list(pools) == ["sample"]


def test_streams_end_early_and_report_errors() -> None:
    with Pool(adapter="tests.adapters.sample:SampleAdapter", size=1) as pool:
        assert list(pool.stream("async_stream", {"n": 4})) == [0, 1, 2, 3]
        items = []
        with pytest.raises(runtime.RemoteError, match="stream broke"):
            for item in pool.stream("broken_stream", {"n": 3}):
                items.append(item)
        assert items == [0, 1, 2]
        gen = pool.stream("async_stream", {"n": 1000})
        assert next(gen) == 0
        gen.close()
        assert pool.execute("record", {"tag": "x"}) == 1  # the slot came back


def test_streams_never_overlap_pipelined_calls() -> None:
    with Pool(adapter="tests.adapters.sample:SampleAdapter", size=1) as pool:
        for _ in range(50):  # tiny calls: the worker gets pipelined
            pool.execute("guarded")
        futures = [pool.submit("guarded") for _ in range(200)]
        streamed = list(pool.stream("guarded_stream", {"n": 20}))
        futures += [pool.submit("guarded") for _ in range(200)]
        for f in futures:
            f.result()
        assert streamed == list(range(20))
        assert pool.execute("guarded") == 0  # no two calls ever ran at once


def test_close_runs_the_adapters_cleanup(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    with Pool(adapter="tests.adapters.sample:CleanupMarker", size=1) as pool:
        pool.execute("mark_on_cleanup", {"path": str(marker)})
        pid = pool.pids()[0]
    assert marker.read_text() == str(pid)


def test_a_missing_interpreter_is_named() -> None:
    with pytest.raises(runtime.EnvironmentProblem, match="no executable file at /no/such/python"):
        Pool(size=1, python="/no/such/python").start()


def test_python_setting_picks_the_workers_interpreter() -> None:
    import os

    with Pool(size=1, python=sys.executable) as pool:
        assert pool.stats().workers[0].python == ".".join(map(str, sys.version_info[:3]))
        assert pool.execute("ping")["pid"] != os.getpid()
