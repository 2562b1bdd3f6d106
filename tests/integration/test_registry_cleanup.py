"""Process registry, orphan cleanup and `pit cleanup`, with real hosts killed for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime import Pool
from runtime.cleanup import cleanup
from runtime.registry import Registry, is_our_worker
from tests.conftest import ROOT, pid_alive, wait_until

HOST = textwrap.dedent("""
    import sys, time
    from runtime import Pool
    pool = Pool(size=int(sys.argv[1]), dependent=sys.argv[2] == "1",
                dependent_timeout_ms=2000, heartbeat_interval_ms=int(sys.argv[3]),
                **({"adapter": sys.argv[4]} if len(sys.argv) > 4 else {})).start()
    print(" ".join(map(str, pool.pids())), flush=True)
    print(" ".join(w.host_watch for w in pool.stats().workers), flush=True)
    time.sleep(120)
""")


def start_host(state: Path, size: int, dependent: bool, ping_ms: int = 2000,
               adapter: str | None = None,
               env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], list[int]]:
    env = {**os.environ, "PIT_STATE_DIR": str(state), **(env_extra or {})}
    host = subprocess.Popen([sys.executable, "-c", HOST, str(size), "1" if dependent else "0",
                             str(ping_ms), *([adapter] if adapter else [])],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    pids = [int(p) for p in host.stdout.readline().split()]  # type: ignore[union-attr]
    watch = host.stdout.readline().split()  # type: ignore[union-attr]
    assert len(pids) == size
    assert set(watch) == ({"pings"} if dependent and ping_ms * 3 <= 2000 else
                          {"heartbeat"} if dependent else {"none"})
    return host, pids


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_registry_lists_the_running_instance_and_its_workers(state_dir: Path) -> None:
    with Pool(size=2) as pool:
        inst = pool.instance
        inst.registry.flush()  # type: ignore[union-attr]
        reg = Registry(state_dir)
        [row] = reg.instances(live_only=True)
        assert row.instance_id == inst.id and row.pid == os.getpid()
        rows = reg.workers(inst.id)
        workers = [w for w in rows if not w.worker_id.startswith("fork-server")]
        assert sorted(w.pid for w in workers) == sorted(pool.pids())
        # the fork server is registered too, so that cleanup finds it (forked workers carry
        # its command line, markers included)
        [zygote] = [w for w in rows if w.worker_id.startswith("fork-server")]
        assert zygote.pid == pool.stats().forkserver_pid
        assert all(w.pgid == w.pid and is_our_worker(w) for w in rows)
    # A clean stop marks the rows ended: nothing is listed as running any more.
    assert Registry(state_dir).instances() == [] and Registry(state_dir).workers() == []
    assert Registry(state_dir).prune_ended(0) == 3  # two workers and the fork server


def test_killed_dependent_host_leaves_no_worker(state_dir: Path) -> None:
    host, pids = start_host(state_dir, 8, dependent=True)
    host.kill()
    host.wait()
    try:
        assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=10)
    finally:
        kill_all(pids)


# 500: the host pings often enough that workers judge it by those pings; 2000: too rarely
# for a 2 s dependent_timeout, so each worker heartbeats the host itself.
@pytest.mark.parametrize("ping_ms", [500, 2000])
def test_wedged_host_is_left_by_dependent_workers(state_dir: Path, ping_ms: int) -> None:
    host, pids = start_host(state_dir, 1, dependent=True, ping_ms=ping_ms)
    try:
        host.send_signal(signal.SIGSTOP)  # alive, so no parent-death signal: only heartbeats
        assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=10)
    finally:
        host.kill()
        host.wait()
        kill_all(pids)


def test_cleanup_removes_orphans_and_spares_a_decoy(state_dir: Path, tmp_path: Path) -> None:
    host, pids = start_host(state_dir, 8, dependent=False)
    # A process with a look-alike command line but no registry row: never ours.
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              "runtime.worker", "--run-id", "x", "--instance-token", "y"])
    try:
        host.kill()
        host.wait()
        assert all(pid_alive(p) for p in pids)  # independent workers outlive their host
        env = {**os.environ, "PIT_STATE_DIR": str(state_dir), "NO_COLOR": "1",
               "PYTHONPATH": str(ROOT)}
        dry = subprocess.run([sys.executable, "-m", "snakecli", "cleanup", "--dry-run",
                              "--json"], env=env, cwd=tmp_path, capture_output=True, text=True)
        plan = json.loads(dry.stdout)
        assert dry.returncode == 1 and plan["dry_run"] is True
        assert sorted(int(i["target"]) for i in plan["items"] if i["kind"] == "worker") == \
            sorted(pids)
        assert all(pid_alive(p) for p in pids)  # a dry run touches nothing
        out = subprocess.run([sys.executable, "-m", "snakecli", "cleanup"], env=env,
                             cwd=tmp_path, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "8 worker process(es)" in out.stdout
        assert not any(pid_alive(p) for p in pids)
        assert decoy.poll() is None  # untouched
        assert Registry(state_dir).instances() == []
        assert not any((state_dir / "run").iterdir())
        again = subprocess.run([sys.executable, "-m", "snakecli", "cleanup"], env=env,
                               cwd=tmp_path, capture_output=True, text=True)
        assert again.returncode == 0 and "Nothing to clean up" in again.stdout
    finally:
        decoy.kill()
        kill_all(pids)


def test_a_new_host_sweeps_what_a_dead_one_left(state_dir: Path) -> None:
    host, pids = start_host(state_dir, 2, dependent=False)
    host.kill()
    host.wait()
    try:
        with Pool(size=1) as pool:
            assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=10)
            assert pool.execute("ping")["pid"] not in pids  # our own worker is untouched
    finally:
        kill_all(pids)


def test_cleanup_never_touches_a_live_hosts_workers(state_dir: Path) -> None:
    with Pool(size=2) as pool:
        pool.instance.registry.flush()  # type: ignore[union-attr]
        report = cleanup(state_dir)
        assert [i for i in report.items if i.kind == "worker"] == []
        assert all(pid_alive(p) for p in pool.pids())
        assert pool.execute("ping")["pong"] is True


def test_force_stops_the_workers_of_an_unresponsive_host(state_dir: Path, tmp_path: Path) -> None:
    host, pids = start_host(state_dir, 2, dependent=False)
    env = {**os.environ, "PIT_STATE_DIR": str(state_dir), "NO_COLOR": "1",
           "PYTHONPATH": str(ROOT)}
    try:
        host.send_signal(signal.SIGSTOP)  # alive, but it answers nothing
        plain = subprocess.run([sys.executable, "-m", "snakecli", "cleanup"], env=env,
                               cwd=tmp_path, capture_output=True, text=True)
        assert plain.returncode == 0 and all(pid_alive(p) for p in pids)
        refused = subprocess.run([sys.executable, "-m", "snakecli", "cleanup", "--force"],
                                 env=env, cwd=tmp_path, capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL)
        assert refused.returncode == 2 and "--yes" in refused.stderr
        forced = subprocess.run([sys.executable, "-m", "snakecli", "cleanup", "--force",
                                 "--yes", "--json"], env=env, cwd=tmp_path,
                                capture_output=True, text=True)
        assert forced.returncode == 0, forced.stdout + forced.stderr
        report = json.loads(forced.stdout)
        assert {i["reason"] for i in report["items"] if i["kind"] == "worker"} == {
            f"orphan of host pid {host.pid} is alive but does not respond"}
        assert not any(pid_alive(p) for p in pids)
    finally:
        host.kill()
        host.wait()
        kill_all(pids)


def test_force_signals_every_worker_before_waiting_for_any(state_dir: Path,
                                                         tmp_path: Path) -> None:
    """Workers that survive SIGTERM: each must get it while all the others still live (all
    were signalled before any was waited for and killed), and SIGKILL then ends them all."""
    folder = tmp_path / "term"
    folder.mkdir()
    host, pids = start_host(state_dir, 3, dependent=False,
                            adapter="tests.adapters.sample:IgnoresTerm",
                            env_extra={"PIT_TEST_TERM_DIR": str(folder)})
    env = {**os.environ, "PIT_STATE_DIR": str(state_dir), "NO_COLOR": "1",
           "PYTHONPATH": str(ROOT)}
    try:
        host.send_signal(signal.SIGSTOP)  # alive, but it answers nothing
        forced = subprocess.run([sys.executable, "-m", "snakecli", "cleanup", "--force",
                                 "--yes", "--json"], env=env, cwd=tmp_path,
                                capture_output=True, text=True)
        assert forced.returncode == 0, forced.stdout + forced.stderr
        report = json.loads(forced.stdout)
        workers = [i for i in report["items"] if i["kind"] == "worker"]
        assert sorted(int(i["target"]) for i in workers if i["worker_id"].startswith(
            "worker-")) == sorted(pids)
        assert all(i["done"] for i in workers)
        assert not any(pid_alive(p) for p in pids)
        got_term = [json.loads(line) for line in
                    (folder / "term.log").read_text().splitlines()]
        assert sorted(r["pid"] for r in got_term) == sorted(pids)
        assert [r["alive"] for r in got_term] == [len(pids)] * len(pids), got_term
    finally:
        host.kill()
        host.wait()
        kill_all(pids)
