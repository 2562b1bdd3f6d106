"""What `pit status` shows at one moment, and how a watch follows hosts that come and go.

    StatusWatcher.frame() --> live_instances() (the index; dead hosts' entries pruned)
                          --> client.get_status() of each (an unanswered one: exited or not
                              answering, never gRPC's own words)
                          --> hosts seen before and gone now: ``exited``, reported once
                          --> orphaned_workers() of their state dirs (what `pit cleanup` stops)
    --> StatusFrame (plain data; `snakecli.status_view` draws it)
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .index import LiveInstance, live_instances

# The gRPC client and the cleanup module (registry, psutil) are imported where they are used:
# with no host running and no registry, `pit status` needs neither (issue 20).

ORPHAN_CHECK_S = 5.0  # a watch re-reads the registries at most this often


@dataclass(frozen=True, slots=True)
class ExitedHost:
    instance: str
    pid: int


@dataclass(frozen=True, slots=True)
class StatusFrame:
    taken_at: float
    snapshots: list[dict[str, Any]]  # `runtime.control.snapshot`, or {"instance", "pid", "error"}
    exited: list[ExitedHost] = field(default_factory=list)  # gone since the previous frame
    orphans: int = 0  # worker processes left alive by dead hosts


def matching_instances(prefix: str | None) -> list[LiveInstance]:
    found = live_instances()
    return [i for i in found if i.instance_id.startswith(prefix)] if prefix else found


def config_state_dir() -> Path | None:
    """The state dir of the config found from here (None: a broken config)."""
    with contextlib.suppress(Exception):
        from ..config import load_config

        return load_config().state_dir
    return None


def count_orphans(dirs: list[Path]) -> int:
    from ..registry import Registry

    dirs = [d for d in dirs if Registry(d).exists()]  # no registry, no orphans: and no need
    if not dirs:  # to import cleanup's modules (a hostless `pit status` stays quick)
        return 0
    from ..cleanup import orphaned_workers

    total = 0
    for d in dirs:
        with contextlib.suppress(Exception):  # unreadable registry: nothing to say about it
            total += len(orphaned_workers(d))
    return total


class StatusWatcher:
    """Successive frames for ``pit status [--watch]``: ``instance`` is an id prefix (None: all
    hosts), ``pool`` a pool name ('' : all)."""

    def __init__(self, instance: str | None = None, pool: str = "") -> None:
        self.instance = instance
        self.pool = pool
        self._shown: dict[str, int] = {}  # instance id -> pid, of the previous frame
        self._orphans = 0
        self._orphans_at = float("-inf")
        own = config_state_dir()
        self._dirs: set[Path] = {own} if own else set()  # where orphans are looked for

    def frame(self) -> StatusFrame:
        found = matching_instances(self.instance)
        snapshots, exited = [], []
        if found:
            from .client import get_status
        for inst in found:
            snap = get_status(inst, self.pool)
            if snap.get("state") == "exited":
                exited.append(ExitedHost(inst.instance_id, inst.pid))
            else:
                snapshots.append(snap)
        alive = {s["instance"] for s in snapshots}
        exited += [ExitedHost(i, pid) for i, pid in self._shown.items()
                   if i not in alive and all(e.instance != i for e in exited)]
        if not self._shown:  # the first frame: hosts already gone are not news
            exited = []
        self._shown = {s["instance"]: s["pid"] for s in snapshots}
        return StatusFrame(time.time(), snapshots, exited, self._count_orphans(found))

    def _count_orphans(self, found: list[LiveInstance]) -> int:
        dirs = {Path(i.state_dir) for i in found if i.state_dir} | self._dirs  # and the
        # dirs of hosts seen before: one that exited may have left workers there
        now = time.monotonic()
        if dirs != self._dirs or now - self._orphans_at >= ORPHAN_CHECK_S:
            self._dirs = dirs
            self._orphans = count_orphans(sorted(dirs))
            self._orphans_at = now
        return self._orphans
