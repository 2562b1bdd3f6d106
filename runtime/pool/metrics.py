"""A pool's running numbers: calls, errors, latency window, 1 s load samples, recent events.

Recording a call takes a lock: the pool's loop records, and so do blocking callers' threads
for their direct calls (see `direct`).
Readers (snapshots) compute percentiles and rates on demand.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

LATENCY_SAMPLES = 4096
HISTORY_SECONDS = 300
EVENTS_KEPT = 50


class PoolMetrics:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.completed = 0
        self.failed = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self._latency: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=LATENCY_SAMPLES)
        # one sample a second: (monotonic time, queued, busy slots, capacity, {worker: rss MiB})
        self.history: collections.deque[tuple[float, int, int, int, dict[str, float]]] = \
            collections.deque(maxlen=HISTORY_SECONDS)
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)

    def uptime(self) -> float:
        return time.monotonic() - self.started

    def record(self, latency_s: float, error_category: str | None) -> None:
        with self._lock:
            self.completed += 1
            if error_category is not None:
                self.failed += 1
                self.errors[error_category] += 1
            self._latency.append((time.monotonic(), latency_s))

    def event(self, worker: str, kind: str, detail: str = "") -> None:
        self.events.append({"at": time.time(), "worker": worker, "kind": kind,
                            "detail": detail})

    def window(self, seconds: float = 60.0) -> dict[str, float | None]:
        """Calls/s and latency percentiles (ms) over the last ``seconds``."""
        now = time.monotonic()
        recent = sorted(lat for t, lat in self._latency if now - t <= seconds)
        span = min(seconds, max(now - self.started, 1e-3))
        if not recent:
            return {"calls_per_s": 0.0, "p50_ms": None, "p95_ms": None, "p99_ms": None}

        def pct(p: float) -> float:
            return round(recent[min(len(recent) - 1, int(p * len(recent)))] * 1000, 3)

        return {"calls_per_s": round(len(recent) / span, 2), "p50_ms": pct(0.50),
                "p95_ms": pct(0.95), "p99_ms": pct(0.99)}

    def sample(self, queued: int, busy: int, capacity: int, rss: dict[str, float]) -> None:
        self.history.append((time.monotonic(), queued, busy, capacity, rss))
