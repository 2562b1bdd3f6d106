"""A host that is paused (SIGSTOP, a debugger): its dependent workers leave on time, and
`pit cleanup --force` run meanwhile does not stop it from working once it resumes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from runtime.cleanup import cleanup
from runtime.registry import Registry
from tests.conftest import ROOT, pid_alive, wait_until

RESUMING_HOST = textwrap.dedent("""
    import sys, time
    import runtime
    pool = runtime.Pool(size=2, dependent_timeout_ms=600_000).start()
    print(*pool.pids(), flush=True)
    sys.stdin.readline()  # paused and cleaned up meanwhile
    deadline = time.monotonic() + 30
    while True:
        try:
            print("answer", pool.execute("add", {"a": 2, "b": 3}), flush=True)
            break
        except runtime.PitError as exc:
            if time.monotonic() > deadline:
                print("failed", type(exc).__name__, str(exc).splitlines()[0], flush=True)
                break
            time.sleep(0.2)
    print(*pool.pids(), flush=True)
    sys.stdin.readline()
    pool.close()
""")


def _host(script: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def _kill_all(host: subprocess.Popen[str], pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    host.kill()
    host.wait()


def test_a_host_resumed_after_cleanup_force_starts_workers_again(state_dir: Path) -> None:
    host = _host(RESUMING_HOST)
    assert host.stdin is not None and host.stdout is not None
    pids: list[int] = []
    try:
        pids = [int(p) for p in host.stdout.readline().split()]
        assert len(pids) == 2
        (instance,) = Registry(state_dir).instances()
        host.send_signal(signal.SIGSTOP)
        report = cleanup(state_dir, force=True)
        assert {i.kind for i in report.items} >= {"worker", "run_dir", "instance"}
        assert not Path(instance.run_dir or "").exists() and not Registry(state_dir).instances()
        host.send_signal(signal.SIGCONT)
        host.stdin.write("go\n")
        host.stdin.flush()
        assert host.stdout.readline().split() == ["answer", "5"]
        new_pids = [int(p) for p in host.stdout.readline().split()]
        pids += new_pids
        assert len(new_pids) == 2 and not set(new_pids) & set(pids[:2])
        # It is registered again, so `pit status` and the next cleanup see it as alive.
        assert wait_until(lambda: [i.instance_id for i in Registry(state_dir).instances()]
                          == [instance.instance_id])
        assert Path(instance.run_dir or "").is_dir()
        host.stdin.write("done\n")
        host.stdin.flush()
        assert host.wait(timeout=30) == 0
    finally:
        _kill_all(host, pids)


def test_dependent_workers_of_a_paused_host_exit_after_dependent_timeout() -> None:
    # dependent_timeout 1 s: the worker used to linger for the lane's and the gRPC server's
    # shutdown grace (2 s each) on connections the paused host would never close. The bound
    # below leaves 2 s of slack over the documented timeout; the old code needed 4 s more.
    script = textwrap.dedent("""
        import sys, runtime
        pool = runtime.Pool(size=1, dependent_timeout_ms=1000,
                            heartbeat_interval_ms=300).start()
        pool.execute("ping")
        print(*pool.pids(), flush=True)
        sys.stdin.readline()
    """)
    host = _host(script)
    assert host.stdout is not None
    pids: list[int] = []
    try:
        pids = [int(p) for p in host.stdout.readline().split()]
        host.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        assert wait_until(lambda: not pid_alive(pids[0]), timeout=20)
        assert time.monotonic() - stopped < 1.0 + 2.0
    finally:
        _kill_all(host, pids)
