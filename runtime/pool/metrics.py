"""A pool's running numbers: calls, errors, per-second call counts and latency histograms,
1 s load samples, recent events.

Calls/s and percentiles cover a time window (`WINDOW_S`) however busy the pool is: each
second of the window keeps its completion count and a log-scale latency histogram
(16 bins per doubling: a percentile is off by at most ~3 %). Recording a
call is a few dict operations. Only the pool's loop records and reads (direct calls are
settled there too, see `lending`); snapshots merge the seconds of the window on demand.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any

WINDOW_S = 60  # seconds of call counts and latencies kept
HISTORY_SECONDS = 300
EVENTS_KEPT = 50
BINS_PER_OCTAVE = 16


def latency_bin(seconds: float) -> int:
    """The histogram bin of a latency: BINS_PER_OCTAVE bins per doubling."""
    if seconds <= 0:
        return -1 << 30
    mantissa, exponent = math.frexp(seconds)  # seconds = mantissa * 2**exponent, m in [.5, 1)
    return exponent * BINS_PER_OCTAVE + int((mantissa - 0.5) * 2 * BINS_PER_OCTAVE)


def bin_value(index: int) -> float:
    """The middle of a bin, in seconds (what a percentile falling in it reports)."""
    exponent, sub = divmod(index, BINS_PER_OCTAVE)
    return math.ldexp(0.5 + (sub + 0.5) / (2 * BINS_PER_OCTAVE), exponent)


class _Second:
    __slots__ = ("at", "calls", "bins")

    def __init__(self) -> None:
        self.at = -1  # the whole second (monotonic) these counts belong to
        self.calls = 0
        self.bins: dict[int, int] = {}


class StreamCounts:
    """Streams since the pool started (`stream_run.StreamRun` counts them)."""

    __slots__ = ("started", "completed", "failed", "chunks", "bytes")

    def __init__(self) -> None:
        self.started = 0  # called (refused ones too: they count as failed)
        self.completed = 0  # ended, whatever the outcome
        self.failed = 0  # ... of which failed (a caller closing one early is no failure)
        self.chunks = 0  # items received for callers (unread ones of a closed stream too)
        self.bytes = 0  # ... their encoded size

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class PoolMetrics:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.completed = 0
        self.failed = 0
        self.streams = StreamCounts()
        self.errors: collections.Counter[str] = collections.Counter()
        self._seconds = [_Second() for _ in range(WINDOW_S)]  # a ring, by second
        # one sample a second: (monotonic time, queued, busy slots, capacity, {worker: rss MiB})
        self.history: collections.deque[tuple[float, int, int, int, dict[str, float]]] = \
            collections.deque(maxlen=HISTORY_SECONDS)
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)

    def uptime(self) -> float:
        return time.monotonic() - self.started

    def record(self, latency_s: float, error_category: str | None) -> None:
        now = int(time.monotonic())
        b = latency_bin(latency_s)
        self.completed += 1
        if error_category is not None:
            self.failed += 1
            self.errors[error_category] += 1
        second = self._seconds[now % WINDOW_S]
        if second.at != now:
            second.at, second.calls, second.bins = now, 0, {}
        second.calls += 1
        second.bins[b] = second.bins.get(b, 0) + 1

    def event(self, worker: str, kind: str, detail: str = "") -> None:
        self.events.append({"at": time.time(), "worker": worker, "kind": kind,
                            "detail": detail})

    def window(self, seconds: float = WINDOW_S) -> dict[str, float | None]:
        """Calls/s and latency percentiles (ms) over the last ``seconds`` (at most WINDOW_S):
        whole seconds, the current one included."""
        now_f = time.monotonic()
        now = int(now_f)
        first = now - min(int(seconds), WINDOW_S) + 1
        calls = 0
        merged: collections.Counter[int] = collections.Counter()
        for second in self._seconds:
            if first <= second.at <= now:
                calls += second.calls
                merged.update(second.bins)
        if not calls:
            return {"calls_per_s": 0.0, "p50_ms": None, "p95_ms": None, "p99_ms": None}
        # the span the counts cover: from the window's first second (or the pool's start)
        span = max(now_f - max(first, self.started), 1e-3)
        order = sorted(merged.items())

        def pct(p: float) -> float:
            rank = min(calls - 1, int(p * calls))
            seen = 0
            for index, count in order:
                seen += count
                if seen > rank:
                    return round(bin_value(index) * 1000, 3)
            return round(bin_value(order[-1][0]) * 1000, 3)

        return {"calls_per_s": round(calls / span, 2), "p50_ms": pct(0.50),
                "p95_ms": pct(0.95), "p99_ms": pct(0.99)}

    def sample(self, queued: int, busy: int, capacity: int, rss: dict[str, float]) -> None:
        self.history.append((time.monotonic(), queued, busy, capacity, rss))
