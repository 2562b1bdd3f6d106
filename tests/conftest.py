"""Shared fixtures: an isolated state dir per test, and a check that the test left nothing
behind: no worker process, shared-memory arena or run dir of the hosts it started.

The process and registry probes are those of pit's own pytest plugin (`runtime.testing`),
which users' projects get; this suite's check goes further (arenas, run dirs, a state dir
per test). It looks only at what the test itself started (the hosts registered in its own
state dir, and the workers of this pytest process): another pit process on the machine (a second
checkout's tests, a demo) has arenas and workers of its own that are none of its business.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from runtime.cleanup import leftover_arenas
from runtime.registry import InstanceRow
from runtime.testing.leaks import pid_alive, pit_processes, registered_instances, survivors

__all__ = ["ROOT", "left_behind", "pid_alive", "pit_processes", "registered_instances",
           "wait_until", "worker_processes"]

ROOT = Path(__file__).resolve().parent.parent


def worker_processes(host_pid: int) -> list[psutil.Process]:
    """Live worker processes whose host is ``host_pid`` (from their --host-pid marker)."""
    return pit_processes(host_pid=host_pid)


def left_behind(instances: list[InstanceRow]) -> tuple[list[str], list[str]]:
    """(shared-memory arenas, run dirs) that these hosts left: arenas are named
    ``pit-<instance id>-...``, so those of other pit processes never count; a run dir counts
    once its host has stopped cleanly (a killed host's is `pit cleanup`'s to remove)."""
    arenas: list[str] = []
    run_dirs: list[str] = []
    for inst in instances:
        arenas += leftover_arenas(inst.instance_id)
        if inst.ended_at is not None and inst.run_dir and Path(inst.run_dir).exists():
            run_dirs.append(inst.run_dir)
    return arenas, run_dirs


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own PIT_STATE_DIR; afterwards nothing of what it started may be
    left: worker processes, shared-memory arenas, run dirs."""
    state = tmp_path / "state"
    monkeypatch.setenv("PIT_STATE_DIR", str(state))
    monkeypatch.setenv("PIT_INDEX_DIR", str(tmp_path / "index"))  # never the user's own
    monkeypatch.delenv("PIT_CONFIG", raising=False)
    monkeypatch.chdir(ROOT)
    yield state
    instances = registered_instances(state)
    ids = frozenset(i.instance_id for i in instances)
    left = survivors(ids, host_pid=os.getpid())  # killed once found
    assert not left, f"worker processes left alive: {left}"
    arenas, run_dirs = left_behind(instances)
    for arena in arenas:  # reported below; not left to fill /dev/shm
        with contextlib.suppress(OSError):
            os.unlink(arena)
    assert not arenas, f"shared-memory arenas left behind: {arenas}"
    assert not run_dirs, f"run dirs left behind: {run_dirs}"


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


os.environ.setdefault("NO_COLOR", "1")
