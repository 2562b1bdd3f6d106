"""Snapshots of a host instance for `pit status` / `pit profile-inspector` (plain dicts, JSON).

    {"instance": id, "pid", "started_at", "config_path", "taken_at",
     "pools": [{"name", "adapter", "profile", "size", "ready", "capacity", "in_flight",
                "queued", "max_queue", "calls", "failed", "errors": {category: n},
                "calls_per_s", "p50_ms", "p95_ms", "p99_ms" (last 60 s),
                "recycles": {reason: n}, "sessions", "device", "events": [...],
                "streams": {"started", "completed", "failed", "chunks", "bytes"},
                "circuit": "closed" | "open" | "half_open",
                "history": [[seconds ago, queued, busy, capacity, {worker: rss}], ...],
                "workers": [{"id", "pid", "state", "python", "in_flight", "capacity",
                             "requests", "errors", "rss_mb", "uss_mb", "cpu_pct", "uptime_s",
                             "last_recycle_reason", "device", "free_threaded", "lent",
                             "node", "lane"}]}]}
"""

from __future__ import annotations

import os
import time
from typing import Any


def pool_snapshot(pool: Any, *, history: bool = True) -> dict[str, Any]:
    stats = pool.stats()
    m = pool.metrics
    now = time.monotonic()
    workers = [{
        "id": w.id, "pid": w.pid, "state": w.state, "python": w.python,
        "in_flight": w.in_flight, "capacity": w.capacity, "requests": w.requests,
        "errors": w.errors, "rss_mb": w.rss_mb, "uss_mb": w.uss_mb, "cpu_pct": w.cpu_pct,
        "uptime_s": w.uptime_s, "free_threaded": w.free_threaded,
        "last_recycle_reason": w.last_recycle_reason, "missed_heartbeats": w.missed_heartbeats,
        "lent": w.lent, "node": w.node, "lane": w.lane,
        "device": pool.device.name if pool.device else None,
    } for w in stats.workers]
    snap = {
        "name": stats.name, "adapter": stats.adapter, "profile": stats.profile,
        "backend": stats.backend,
        "size": stats.size, "ready": stats.ready,
        "capacity": sum(w["capacity"] for w in workers),
        "in_flight": sum(w["in_flight"] for w in workers),
        "queued": stats.queued, "max_queue": stats.max_queue,
        "calls": m.completed, "failed": m.failed, "errors": dict(m.errors),
        **m.window(60.0),
        "recycles": dict(stats.recycles), "restarts": stats.restarts,
        "sessions": stats.sessions, "streams": dict(stats.streams), "circuit": stats.circuit,
        "device": pool.device.name if pool.device else None,
        "events": list(m.events)[-10:], "workers": workers,
        "uptime_s": round(now - m.started, 1),
    }
    if history:
        snap["history"] = [[round(now - t, 1), q, b, c, rss] for t, q, b, c, rss in m.history]
    return snap


def instance_snapshot(instance: Any, pool: str = "", *, history: bool = True) -> dict[str, Any]:
    return {
        "instance": instance.id, "pid": os.getpid(), "started_at": instance.started_at,
        "config_path": str(instance.config_path) if instance.config_path else None,
        "taken_at": time.time(),
        "pools": [pool_snapshot(p, history=history) for p in instance.cores
                  if not pool or p.name == pool],
    }
