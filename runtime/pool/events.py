"""Builders for the host's telemetry events (names and fields: `runtime.telemetry.catalog`).

Each returns at once when nobody subscribed to the event, so call sites stay cheap."""

from __future__ import annotations

from typing import Any, Protocol

from .. import telemetry
from ..config import PoolConfig


class EventWorker(Protocol):
    """What worker events report of a worker (`WorkerHandle` is one)."""

    config: PoolConfig
    id: str
    served: int
    samples: Any  # `worker_handle.Samples`: rss_mb, missed_heartbeats

    @property
    def pid(self) -> int | None: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def cause(self) -> str: ...
    @property
    def exit_reason(self) -> str: ...
    def uptime(self) -> float: ...

REASON_EVENT = {"ttl": "worker.recycled", "requests": "worker.recycled",
                "memory": "worker.recycled", "manual": "worker.recycled",
                "hung": "worker.hung", "crashed": "worker.crashed",
                "cancel_timeout": "worker.crashed"}


def pool_event(name: str, pool: str, metadata: dict[str, Any] | None = None,
               **measurements: Any) -> None:
    if telemetry.enabled(name):
        telemetry.emit(name, measurements, {**(metadata or {}), "pool": pool})


def worker_event(name: str, worker: EventWorker, measurements: dict[str, Any] | None = None,
                 **metadata: Any) -> None:
    if telemetry.enabled(name):
        telemetry.emit(name, measurements or {},
                       {"pool": worker.config.name, "worker": worker.id, "pid": worker.pid,
                        **metadata})


def worker_reason(worker: EventWorker, reason: str) -> None:
    """worker.recycled / worker.hung / worker.crashed for a reason of `record_event`."""
    name = REASON_EVENT.get(reason)
    if name is None or not telemetry.enabled(name):
        return
    if name == "worker.recycled":
        worker_event(name, worker, {"requests": worker.served, "rss_mb": worker.samples.rss_mb,
                                    "uptime_s": round(worker.uptime(), 3)}, reason=reason)
    elif name == "worker.hung":
        worker_event(name, worker, {"missed": worker.samples.missed_heartbeats})
    else:
        worker_event(name, worker, {"exit_code": worker.exit_code,
                                    "uptime_s": round(worker.uptime(), 3)},
                     cause=worker.cause, reason=worker.exit_reason)


def session_event(name: str, pool: str, session: Any, now: float) -> None:
    if telemetry.enabled(name):
        meta = {"pool": pool, "session_id": session.id}
        age = {} if name == "session.created" else {"age_s": round(now - session.created, 3)}
        telemetry.emit(name, age, meta)
