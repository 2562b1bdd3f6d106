"""Shared fixtures: an isolated state dir per test, and a check that no worker survives it."""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


def worker_processes(host_pid: int) -> list[psutil.Process]:
    """Live worker processes whose host is ``host_pid`` (from their --host-pid marker)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if ("runtime.worker" in cmd and "--host-pid" in cmd
                    and cmd[cmd.index("--host-pid") + 1] == str(host_pid)
                    and proc.status() != psutil.STATUS_ZOMBIE):
                found.append(proc)
        except (psutil.NoSuchProcess, IndexError):
            continue
    return found


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own PIT_STATE_DIR; afterwards no worker of it may be alive."""
    state = tmp_path / "state"
    monkeypatch.setenv("PIT_STATE_DIR", str(state))
    monkeypatch.setenv("PIT_INDEX_DIR", str(tmp_path / "index"))  # never the user's own
    monkeypatch.delenv("PIT_CONFIG", raising=False)
    monkeypatch.chdir(ROOT)
    arenas_before = set(glob.glob("/dev/shm/pit-*"))
    yield state
    deadline = time.monotonic() + 5
    left = worker_processes(os.getpid())
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if pid_alive(p.pid)]
    for proc in left:
        proc.kill()
    assert not left, f"worker processes left alive: {[p.pid for p in left]}"
    leaked = set(glob.glob("/dev/shm/pit-*")) - arenas_before
    assert not leaked, f"shared-memory arenas left behind: {sorted(leaked)}"


def pid_alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


os.environ.setdefault("NO_COLOR", "1")
