"""The process registry: which host instances and worker processes pit started, in SQLite.

Lives in ``<state_dir>/registry.db`` (WAL mode, so `pit status` / `pit cleanup` can read while a
host writes). A host writes through one `RegistryWriter` thread that batches rows into one
transaction, so the event loop never waits on the disk.

A process counts as pit's only when pid, process create time and the markers on its command line
(``--run-id``, ``--instance-token``) all match a row: a recycled pid never does.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# psutil and .config are imported where they are used: `pit status` reads the instance index
# through process_alive() and, with no host running, never needs either (issue 20).

DB_NAME = "registry.db"
BUSY_TIMEOUT_MS = 5000
CREATE_TIME_TOLERANCE_S = 0.05

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY, token TEXT NOT NULL, pid INTEGER NOT NULL,
    create_time REAL, control_address TEXT, config_path TEXT, run_dir TEXT, pools TEXT,
    started_at REAL NOT NULL, ended_at REAL
);
CREATE TABLE IF NOT EXISTS workers (
    instance_id TEXT NOT NULL, token TEXT NOT NULL, run_id TEXT NOT NULL, pool TEXT NOT NULL,
    worker_id TEXT NOT NULL, pid INTEGER NOT NULL, pgid INTEGER, create_time REAL,
    marker TEXT NOT NULL, socket TEXT, started_at REAL NOT NULL, ended_at REAL, exit_reason TEXT,
    PRIMARY KEY (instance_id, pool, worker_id)
);
"""


@dataclass(frozen=True, slots=True)
class InstanceRow:
    instance_id: str
    token: str
    pid: int
    create_time: float | None
    control_address: str | None
    config_path: str | None
    run_dir: str | None
    pools: str | None
    started_at: float
    ended_at: float | None


@dataclass(frozen=True, slots=True)
class WorkerRow:
    instance_id: str
    token: str
    run_id: str
    pool: str
    worker_id: str
    pid: int
    pgid: int | None
    create_time: float | None
    marker: str
    socket: str | None
    started_at: float
    ended_at: float | None
    exit_reason: str | None


def connect(state_dir: Path) -> sqlite3.Connection:
    from .config import ensure_state_dir

    ensure_state_dir(state_dir)
    conn = sqlite3.connect(state_dir / DB_NAME, timeout=BUSY_TIMEOUT_MS / 1000,
                           isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    with contextlib.suppress(sqlite3.OperationalError):
        conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA)
    return conn


def process_create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_alive(pid: int, create_time: float | None) -> bool:
    """The process ``pid`` exists, is no zombie and (when known) started at ``create_time``."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < \
            CREATE_TIME_TOLERANCE_S
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def is_our_worker(row: WorkerRow) -> bool:
    """Proof that ``row.pid`` is still the worker pit started: create time and markers."""
    if row.create_time is None:
        return False  # never recorded: we cannot prove it, so we never signal it
    import psutil

    try:
        proc = psutil.Process(row.pid)
        if abs(proc.create_time() - row.create_time) >= CREATE_TIME_TOLERANCE_S:
            return False
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    # pit's own workers carry --run-id/--instance-token; Snakepit's bridge its own spelling
    run_id = flag(cmd, "--run-id") or flag(cmd, "--snakepit-run-id")
    token = flag(cmd, "--instance-token") or flag(cmd, "--snakepit-instance-token")
    return run_id == row.marker and token == row.token


def flag(cmd: list[str], name: str) -> str | None:
    """The value after ``name`` in a command line (None: absent)."""
    try:
        return cmd[cmd.index(name) + 1]
    except (ValueError, IndexError):
        return None


class Registry:
    """Reads (and small synchronous writes, for the CLI) of one state dir's registry."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / DB_NAME

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = connect(self.state_dir)
        try:
            yield conn
        finally:
            conn.close()

    def exists(self) -> bool:
        return self.path.exists()

    def instances(self, *, live_only: bool = False) -> list[InstanceRow]:
        if not self.exists():
            return []
        with self._conn() as conn:
            rows = [InstanceRow(*r) for r in conn.execute(
                "SELECT instance_id, token, pid, create_time, control_address, config_path, "
                "run_dir, pools, started_at, ended_at FROM instances WHERE ended_at IS NULL "
                "ORDER BY started_at")]
        return [r for r in rows if process_alive(r.pid, r.create_time)] if live_only else rows

    def workers(self, instance_id: str | None = None) -> list[WorkerRow]:
        if not self.exists():
            return []
        sql = ("SELECT instance_id, token, run_id, pool, worker_id, pid, pgid, create_time, "
               "marker, socket, started_at, ended_at, exit_reason FROM workers "
               "WHERE ended_at IS NULL")
        args: tuple[Any, ...] = ()
        if instance_id is not None:
            sql += " AND instance_id = ?"
            args = (instance_id,)
        with self._conn() as conn:
            return [WorkerRow(*r) for r in conn.execute(sql + " ORDER BY started_at", args)]

    def prune_ended(self, older_than_s: float) -> int:
        """Delete rows of hosts and workers that ended more than ``older_than_s`` ago."""
        if not self.exists():
            return 0
        cutoff = time.time() - older_than_s
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            n = conn.execute("DELETE FROM workers WHERE ended_at < ?", (cutoff,)).rowcount
            conn.execute("DELETE FROM instances WHERE ended_at < ?", (cutoff,))
            conn.execute("COMMIT")
            return n

    def forget_instance(self, instance_id: str) -> None:
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM workers WHERE instance_id = ?", (instance_id,))
            conn.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,))
            conn.execute("COMMIT")

    def forget_worker(self, row: WorkerRow) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM workers WHERE instance_id = ? AND pool = ? AND "
                         "worker_id = ?", (row.instance_id, row.pool, row.worker_id))


class RegistryWriter:
    """A host's writes, on one background thread, batched into one transaction per wake-up."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="pit-registry", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = connect(self.state_dir)
        try:
            while True:
                item = self._queue.get()
                batch = [item]
                while True:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(b is None for b in batch)
                ops = [b for b in batch if b is not None and not isinstance(b, threading.Event)]
                if ops:
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                        for op in ops:
                            op(conn)
                        conn.execute("COMMIT")
                    except sqlite3.Error:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                for b in batch:
                    if isinstance(b, threading.Event):
                        b.set()
                if stop:
                    return
        finally:
            conn.close()

    def _put(self, op: Any) -> None:
        self._queue.put(op)

    def flush(self, timeout: float = 5.0) -> None:
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5.0)

    def instance_started(self, *, instance_id: str, token: str, control_address: str,
                         config_path: str | None, run_dir: str, pools: str) -> None:
        pid = os.getpid()
        create_time = process_create_time(pid)
        self._put(lambda c: c.execute(
            "INSERT OR REPLACE INTO instances VALUES (?,?,?,?,?,?,?,?,?,NULL)",
            (instance_id, token, pid, create_time, control_address, config_path, run_dir,
             pools, time.time())))

    def instance_ended(self, instance_id: str) -> None:
        """A clean stop: its rows stay, marked ended, until cleanup prunes old history."""
        now = time.time()
        self._put(lambda c: (
            c.execute("UPDATE workers SET ended_at = ?, exit_reason = COALESCE(exit_reason, "
                      "'host stopped') WHERE instance_id = ? AND ended_at IS NULL",
                      (now, instance_id)),
            c.execute("UPDATE instances SET ended_at = ? WHERE instance_id = ?",
                      (now, instance_id))))

    def worker_started(self, *, instance_id: str, token: str, pool: str, worker_id: str,
                       pid: int, socket: str) -> None:
        now = time.time()

        def op(c: sqlite3.Connection) -> None:
            create_time = process_create_time(pid)  # on this thread: psutil reads /proc
            try:
                pgid: int | None = os.getpgid(pid)
            except OSError:
                pgid = None
            c.execute("INSERT OR REPLACE INTO workers VALUES (?,?,?,?,?,?,?,?,?,?,?,NULL,NULL)",
                      (instance_id, token, instance_id, pool, worker_id, pid, pgid, create_time,
                       instance_id, socket, now))

        self._put(op)

    def worker_ended(self, *, instance_id: str, pool: str, worker_id: str,
                     reason: str) -> None:
        now = time.time()
        self._put(lambda c: c.execute(
            "UPDATE workers SET ended_at = ?, exit_reason = ? WHERE instance_id = ? AND "
            "pool = ? AND worker_id = ?", (now, reason, instance_id, pool, worker_id)))
