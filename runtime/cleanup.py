"""Finding and removing what dead pit hosts left behind: worker processes, run directories,
sockets and registry rows. Used by every host at start (and on a timer) and by `pit cleanup`.

Only processes proven to be pit's (`registry.is_our_worker`) are ever signalled.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from .registry import InstanceRow, Registry, WorkerRow, is_our_worker, process_alive

TERM_GRACE_S = 2.0
HOST_PING_TIMEOUT_S = 2.0
ENDED_HISTORY_S = 24 * 3600.0  # rows of cleanly ended hosts are kept this long
NEW_RUN_DIR_S = 60.0  # an unregistered run dir younger than this may be a host starting up


@dataclass(frozen=True, slots=True)
class CleanupItem:
    kind: str  # "worker" | "shm" | "run_dir" | "instance" | "ray_actor"
    target: str  # pid, path or instance id
    instance_id: str
    reason: str
    action: str  # "terminate" | "remove" | "forget" | "kept"
    pool: str = ""
    worker_id: str = ""
    done: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class CleanupReport:
    state_dir: str
    dry_run: bool
    items: tuple[CleanupItem, ...] = field(default_factory=tuple)

    @property
    def left_behind(self) -> int:
        """Things that still need attention after this run (0: nothing is left)."""
        if self.dry_run:
            return sum(1 for i in self.items if i.action != "kept")
        return sum(1 for i in self.items if i.action != "kept" and not i.done)


def host_responds(row: InstanceRow, timeout: float = HOST_PING_TIMEOUT_S) -> bool:
    """Does a live host still answer on its BridgeService socket?"""
    if not row.control_address:
        return False
    import grpc

    from .protocol import pb, pb_grpc

    try:
        with grpc.insecure_channel(row.control_address) as channel:
            pb_grpc.BridgeServiceStub(channel).Ping(pb.PingRequest(message="cleanup"),
                                                     timeout=timeout)
        return True
    except grpc.RpcError:
        return False


def _dead_reason(row: InstanceRow, force: bool) -> str | None:
    if not process_alive(row.pid, row.create_time):
        return f"host pid {row.pid} is gone"
    if force and not host_responds(row):
        return f"host pid {row.pid} is alive but does not respond"
    return None


def terminate_groups(rows: list[WorkerRow], grace: float = TERM_GRACE_S) -> list[str]:
    """SIGTERM the process group of every worker first, then wait once, up to ``grace``, for
    all of them together; SIGKILL those left and wait up to ``grace`` again. A worker's own
    shutdown may take its whole grace (its host's connections held open), so one at a time
    would cost ``len(rows)`` graces. Each row is checked to still be pit's worker right before
    its signal. Returns one error per row ('' when it is gone)."""
    errors = ["" for _ in rows]
    sent: list[int] = []  # indexes of the rows signalled
    for i, row in enumerate(rows):
        if not is_our_worker(row):
            errors[i] = "not ours any more"
            continue
        errors[i] = _signal(row, signal.SIGTERM)
        if not errors[i]:
            sent.append(i)
    sent = _alive_after(rows, sent, grace)
    for i in sent:  # still the processes signalled: process_alive compares the start time
        errors[i] = _signal(rows[i], signal.SIGKILL)
    for i in _alive_after(rows, sent, grace):
        errors[i] = errors[i] or "still running"
    return errors


def _alive_after(rows: list[WorkerRow], indexes: list[int], grace: float) -> list[int]:
    """Wait up to ``grace`` for the processes of ``rows[indexes]`` to end; those still
    alive."""
    deadline = time.monotonic() + grace
    while True:
        indexes = [i for i in indexes if process_alive(rows[i].pid, rows[i].create_time)]
        if not indexes or time.monotonic() >= deadline:
            return indexes
        time.sleep(0.02)


def _signal(row: WorkerRow, sig: int) -> str:
    """Send ``sig`` to the group the worker leads (else to the worker); an error or ''."""
    pgid = row.pgid if row.pgid == row.pid else None  # only a group the worker leads
    try:
        if pgid is not None:
            os.killpg(pgid, sig)
        else:
            os.kill(row.pid, sig)
    except ProcessLookupError:
        pass  # gone already
    except PermissionError as exc:
        return str(exc)
    return ""


def cleanup(state_dir: Path, *, dry_run: bool = False, force: bool = False,
            exclude_instance: str | None = None, ray_address: str | None = None
            ) -> CleanupReport:
    """Remove what dead hosts left in ``state_dir``; ``force`` also treats unresponsive
    live hosts as dead. ``exclude_instance`` is never touched (the calling host).
    ``ray_address``: also kill the Ray worker actors of those dead hosts on that cluster
    (found by the run id in their names; Ray ends a host's actors with it, this is for
    what it could not)."""
    registry = Registry(state_dir)
    items: list[CleanupItem] = []
    known_run_dirs: set[str] = set()
    dead: list[tuple[InstanceRow, str, list[WorkerRow]]] = []
    for inst in registry.instances():
        if inst.instance_id == exclude_instance:
            if inst.run_dir:
                known_run_dirs.add(inst.run_dir)
            continue
        reason = _dead_reason(inst, force)
        if reason is None:
            if inst.run_dir:
                known_run_dirs.add(inst.run_dir)
            continue
        dead.append((inst, reason, [w for w in registry.workers(inst.instance_id)
                                    if is_our_worker(w)]))
    # Every orphan of every dead host is signalled before any is waited for.
    orphans = [w for _, _, workers in dead for w in workers]
    errors = iter([""] * len(orphans) if dry_run else terminate_groups(orphans))
    for inst, reason, workers in dead:
        for w in workers:
            err = next(errors)
            items.append(CleanupItem("worker", str(w.pid), inst.instance_id,
                                     f"orphan of {reason}", "terminate", w.pool,
                                     w.worker_id, done=not dry_run and not err, error=err))
        for arena in leftover_arenas(inst.instance_id):
            if not dry_run:
                with contextlib.suppress(OSError):
                    os.unlink(arena)
            items.append(CleanupItem("shm", arena, inst.instance_id, reason, "remove",
                                     done=not dry_run))
        if inst.run_dir and Path(inst.run_dir).exists():
            if not dry_run:
                shutil.rmtree(inst.run_dir, ignore_errors=True)
            items.append(CleanupItem("run_dir", inst.run_dir, inst.instance_id, reason,
                                     "remove", done=not dry_run))
        if not dry_run:
            registry.forget_instance(inst.instance_id)
        items.append(CleanupItem("instance", inst.instance_id, inst.instance_id, reason,
                                 "forget", done=not dry_run))
    if ray_address and dead:
        items += _ray_actors(ray_address, {inst.instance_id: reason for inst, reason, _ in dead},
                             dry_run)
    # Run directories that no registered live instance owns (a host killed before it wrote
    # its row, or a registry that was deleted).
    run_root = state_dir / "run"
    if run_root.is_dir():
        for d in sorted(run_root.iterdir()):
            if str(d) in known_run_dirs or any(i.target == str(d) for i in items):
                continue
            if _unowned_run_dir_in_use(d):
                continue
            if not dry_run:
                shutil.rmtree(d, ignore_errors=True)
            items.append(CleanupItem("run_dir", str(d), d.name, "no live host owns it",
                                     "remove", done=not dry_run))
    if not dry_run:
        registry.prune_ended(ENDED_HISTORY_S)
    return CleanupReport(str(state_dir), dry_run, tuple(items))


def orphaned_workers(state_dir: Path) -> list[WorkerRow]:
    """Worker processes still alive whose host is gone (what `pit cleanup` would stop), read
    without changing anything."""
    registry = Registry(state_dir)
    return [w for inst in registry.instances() if _dead_reason(inst, False) is not None
            for w in registry.workers(inst.instance_id) if is_our_worker(w)]


def _ray_actors(address: str, reasons: dict[str, str], dry_run: bool) -> list[CleanupItem]:
    from .pool.ray_cluster import remove_actors

    return [CleanupItem("ray_actor", name or address, run_id,
                        f"orphan of {reasons[run_id]}" if run_id else "cluster unreachable",
                        "kill", done=bool(name) and not dry_run and not error, error=error)
            for name, run_id, error in remove_actors(address, set(reasons), dry_run=dry_run)]


def leftover_arenas(instance_id: str) -> list[str]:
    """Shared-memory arenas of an instance (`runtime.pool.shm`) still in /dev/shm."""
    from .protocol.shm import PREFIX

    return sorted(glob.glob(f"{PREFIX}{instance_id}-*"))


def _unowned_run_dir_in_use(path: Path) -> bool:
    """A run dir without a registry row may belong to a host that is just starting."""
    try:
        if time.time() - path.stat().st_mtime < NEW_RUN_DIR_S:
            return True
    except OSError:
        return False
    sock = path / "host.sock"
    if not sock.exists():
        return False
    row = InstanceRow(path.name, "", 0, None, f"unix:{sock}", None, str(path), None, 0.0, None)
    return host_responds(row, timeout=0.5)
