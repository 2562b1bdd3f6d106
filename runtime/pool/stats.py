"""Snapshots of a pool for `stats()` (and, later, `pit status`): frozen values, no behaviour."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class WorkerStats:
    id: str
    pid: int | None
    state: str
    in_flight: int
    capacity: int
    requests: int
    errors: int
    uptime_s: float
    python: str
    rss_mb: float
    uss_mb: float = 0.0
    cpu_pct: float = 0.0
    free_threaded: bool = False  # the worker's interpreter runs without a GIL
    missed_heartbeats: int = 0  # > 0: the worker is not answering pings (hung?)
    last_recycle_reason: str = ""  # why it is being replaced, else why its predecessor was
    lane: str = ""  # how calls travel: "socket" | "grpc" (CallLane) | "unary" | "ray-actor"
    lent: bool = False  # lent to blocking callers, who call it directly (see pool/direct.py)
    host_watch: str = ""  # how it notices a wedged host: "pings" | "heartbeat" | "none"
    node: str = ""  # a Ray-placed worker's node: "<ip> <node id prefix>" ("": this host)


@dataclass(frozen=True, slots=True)
class PoolStats:
    name: str
    adapter: str
    size: int
    ready: int
    queued: int
    max_queue: int
    restarts: int
    workers: tuple[WorkerStats, ...]
    recycles: Mapping[str, int]  # workers ended by the pool or by themselves, by reason
    profile: str = "process"
    sessions: int = 0
    calls: int = 0  # calls completed since the pool started
    failed: int = 0  # ... of which failed
    forkserver_pid: int | None = None  # the zygote workers are forked from; None: spawned
    events: tuple[Mapping[str, Any], ...] = ()  # the latest recycles and crashes, oldest first
    # streams since the start: started, completed (any outcome), failed, chunks, bytes
    streams: Mapping[str, int] = field(default_factory=dict)
    circuit: str = "closed"  # the crash barrier's circuit: closed | open | half_open
    backend: str = "local"  # where its workers run: "local" | "ray"
