"""Telemetry from adapter code, delivered to the host's bus as ``adapter.<name>``.

    from runtime.worker import telemetry

    telemetry.emit("cache.miss", {"keys": 3}, {"table": "users"})
    with telemetry.span("load_model", {"model": name}):      # adapter.load_model.span
        ...                                                  # duration_ms, status ok|error

Events wait in a bounded buffer (BUFFER_EVENTS, $PIT_TELEMETRY_BUFFER) until the host's
``StreamTelemetry`` takes them: emitting never blocks and never fails the tool; when the
buffer is full new events are dropped and counted (the host sees a ``telemetry.dropped``
event). The host adds the worker id, the pool and the correlation id of the call the event
was emitted in.

The worker itself reports through the same buffer (`unserializable_results`): those events
(`protocol.RUNTIME_EVENTS`, listed in the host's catalog) keep their names on the host.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from ..protocol import RESULT_UNSERIALIZABLE, RUNTIME_EVENTS
from .context import current_call

BUFFER_EVENTS = int(os.environ.get("PIT_TELEMETRY_BUFFER", "4096"))  # events held at most

# (name, measurements, metadata, timestamp_ns, correlation_id)
Record = tuple[str, dict[str, float | int | str], dict[str, str], int, str]


class _Buffer:
    def __init__(self, size: int) -> None:
        self.size = size
        self.items: collections.deque[Record] = collections.deque()
        self.dropped = 0
        self.enabled = True
        self.wake = threading.Event()
        self._lock = threading.Lock()
        # (event name, tool, type) -> count since the last take: counted, not queued per call
        self.counts: dict[tuple[str, str, str], int] = {}

    def put(self, record: Record, wake: bool = True) -> bool:
        """Queue ``record``; without ``wake`` it waits for the stream's next take (within
        0.5 s), sharing one wake-up with what comes meanwhile."""
        with self._lock:
            if not self.enabled:
                return False
            if len(self.items) >= self.size:
                self.dropped += 1
                return False
            self.items.append(record)
        if wake:
            self.wake.set()
        return True

    def count(self, name: str, tool: str, kind: str, n: int) -> None:
        """Add ``n`` to a counter sent as one event at the next take (the stream takes at
        least every 0.5 s): no wake-up, no event per call, so a tool that returns a marker
        every call costs next to nothing more than one that does not."""
        key = (name, tool, kind)
        with self._lock:
            if self.enabled:
                self.counts[key] = self.counts.get(key, 0) + n

    def take(self) -> tuple[list[Record], int]:
        """Everything buffered (counters as events), and the drops since the last take."""
        with self._lock:
            items, self.items = list(self.items), collections.deque()
            dropped, self.dropped = self.dropped, 0
            counts, self.counts = self.counts, {}
            self.wake.clear()
        now = time.time_ns()
        items += [(name, {"count": n}, {"tool": tool, "type": kind}, now, "")
                  for (name, tool, kind), n in counts.items()]
        return items, dropped


buffer = _Buffer(BUFFER_EVENTS)


def _clean_measurements(measurements: Mapping[str, Any] | None) -> dict[str, float | int | str]:
    out: dict[str, float | int | str] = {}
    for key, value in (measurements or {}).items():
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float, str)):
            raise TypeError(f"telemetry measurement {key!r} must be a number or a string, "
                            f"got {type(value).__name__}")
        out[str(key)] = value
    return out


def emit(name: str, measurements: Mapping[str, Any] | None = None,
         metadata: Mapping[str, Any] | None = None) -> bool:
    """Queue one event for the host; False when it was dropped (buffer full or disabled).
    ``measurements``: numbers or strings; ``metadata``: converted to strings."""
    if not isinstance(name, str) or not name or name.startswith(".") or name.endswith("."):
        raise ValueError(f"telemetry event name must be a dotted name such as 'model.loaded', "
                         f"got {name!r}")
    if name in RUNTIME_EVENTS:
        raise ValueError(f"telemetry event name {name!r} is the worker runtime's own; "
                         "choose another")
    return _put(name, measurements, metadata)


def unserializable_results(tool_name: str, counts: dict[str, int]) -> None:
    """A result held values that became markers (`runtime.protocol.graceful`): counted per
    tool and type (never a repr: no secrets), sent as one event per pair and ``count``
    within 0.5 s (`_Buffer.count`)."""
    for type_name, count in counts.items():
        buffer.count(RESULT_UNSERIALIZABLE, tool_name, type_name, count)


def _put(name: str, measurements: Mapping[str, Any] | None,
         metadata: Mapping[str, Any] | None) -> bool:
    ctx = current_call.get()
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    if ctx is not None:
        meta.setdefault("tool", ctx.tool_name)
        if ctx.session_id:
            meta.setdefault("session_id", ctx.session_id)
    return buffer.put((name, _clean_measurements(measurements), meta, time.time_ns(),
                       ctx.correlation_id if ctx is not None else ""))


@contextlib.contextmanager
def span(name: str, metadata: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Time a block: emits ``<name>.span`` with ``duration_ms`` and ``status`` (ok | error)
    when the block ends, whether it raised or not."""
    start = time.perf_counter()
    status = "error"
    try:
        yield
        status = "ok"
    finally:
        emit(f"{name}.span", {"duration_ms": (time.perf_counter() - start) * 1000},
             {**(metadata or {}), "status": status})
