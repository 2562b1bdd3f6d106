"""Which pit worker processes a test left alive: only those of the host instances the test
itself started, never another pit process's on the same machine (a second checkout's tests, a
demo, a module-scoped pool's recycled worker).

A host instance registers itself in its state dir's registry when it starts (in this process,
or in a subprocess given the same ``PIT_STATE_DIR``); its workers carry ``--run-id <instance
id>`` and ``--host-pid`` on their command lines, Snakepit bridge workers
``--snakepit-run-id``. So the instances registered during a test are the test's, and their live
workers are what it leaked.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..registry import DB_NAME, InstanceRow, connect, flag

LEAK_GRACE_S = 5.0  # how long a test's workers may take to exit after its teardown
POLL_S = 0.05


def pit_processes(*, host_pid: int | None = None,
                  instance_ids: Collection[str] = frozenset()) -> list[psutil.Process]:
    """Live pit worker and fork-server processes whose host is ``host_pid`` (--host-pid) or
    whose instance is one of ``instance_ids`` (--run-id), and Snakepit bridge workers of
    those instances (--snakepit-run-id)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            ours = "runtime.worker" in cmd and (
                (host_pid is not None and flag(cmd, "--host-pid") == str(host_pid))
                or flag(cmd, "--run-id") in instance_ids)
            bridge = flag(cmd, "--snakepit-run-id") in instance_ids  # Snakepit's bridge
            if (ours or bridge) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def registered_instances(state: Path) -> list[InstanceRow]:
    """Every host registered in ``state``, running or ended: the hosts a test started (in
    this process or in a subprocess it gave the same PIT_STATE_DIR)."""
    if not (state / DB_NAME).exists():
        return []
    conn = connect(state)
    try:
        return [InstanceRow(*r) for r in conn.execute(
            "SELECT instance_id, token, pid, create_time, control_address, config_path, "
            "run_dir, pools, started_at, ended_at FROM instances")]
    finally:
        conn.close()


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass(frozen=True, slots=True)
class Leak:
    """Workers of the instances ``instance_ids`` still alive ``LEAK_GRACE_S`` after the
    test (they have been killed since)."""

    instance_ids: frozenset[str]
    pids: tuple[int, ...]

    def message(self) -> str:
        return (f"the test left {len(self.pids)} pit process(es) alive (workers and fork "
                f"servers, pids {', '.join(map(str, self.pids))}) of pools it started and did "
                "not close; "
                "they have been killed. Close every pool the test starts: `with Pool(...) as "
                "pool:`, pool.close(), or use the pit_pool fixture, which closes its pools")


def alive_after(instance_ids: Collection[str], *, host_pid: int | None = None,
                grace: float = LEAK_GRACE_S) -> list[psutil.Process]:
    """These instances' workers (and ``host_pid``'s, when given) still alive after up to
    ``grace`` seconds: a closed pool's workers are given that long to exit."""
    if not instance_ids and host_pid is None:
        return []
    deadline = time.monotonic() + grace
    left = pit_processes(host_pid=host_pid, instance_ids=instance_ids)
    while left and time.monotonic() < deadline:
        time.sleep(POLL_S)
        left = [p for p in left if pid_alive(p.pid)]
    return left


def kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def survivors(instance_ids: Collection[str], *, host_pid: int | None = None,
              grace: float = LEAK_GRACE_S) -> list[int]:
    """Pids of `alive_after`'s processes, killed before returning."""
    left = alive_after(instance_ids, host_pid=host_pid, grace=grace)
    kill(left)
    return [p.pid for p in left]


def instance_ids(state: Path) -> frozenset[str]:
    return frozenset(i.instance_id for i in registered_instances(state))
