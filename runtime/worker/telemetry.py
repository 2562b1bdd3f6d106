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

The host's TelemetryControl messages (`runtime.telemetry.control`: toggle, sampling, allow /
deny globs on the names the host sees) are applied here, before an event is buffered: a muted
event is never sent. With none set (`Filter` None) an event costs one attribute check more.
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import os
import random
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from ..protocol import CONTROL_APPLIED, RESULT_UNSERIALIZABLE, RUNTIME_EVENTS, SPAN_EVENT
from .context import current_call

ENV_BUFFER = "PIT_TELEMETRY_BUFFER"
BUFFER_EVENTS = 4096  # events held at most, unless $PIT_TELEMETRY_BUFFER says otherwise

VERDICTS_KEPT = 4096  # event names whose filter verdict is remembered

# (name, measurements, metadata, timestamp_ns, correlation_id)
Record = tuple[str, dict[str, float | int | str], dict[str, str], int, str]


class Filter:
    """The host's sampling and allow / deny globs (replaced whole when the host changes them,
    so tool threads read one consistent rule set without a lock)."""

    def __init__(self, sample: float, allow: tuple[str, ...], deny: tuple[str, ...]) -> None:
        self.sample, self.allow, self.deny = sample, allow, deny
        self._verdicts: dict[str, bool] = {}  # host name -> passes the globs (few names)

    def passes(self, host_name: str) -> bool:
        """Whether the globs let an event of this name through (no sampling)."""
        verdict = self._verdicts.get(host_name)
        if verdict is None:
            verdict = not any(fnmatch.fnmatchcase(host_name, g) for g in self.deny) and (
                not self.allow or any(fnmatch.fnmatchcase(host_name, g) for g in self.allow))
            if len(self._verdicts) < VERDICTS_KEPT:  # names built from data: not all kept
                self._verdicts[host_name] = verdict
        return verdict

    def admits(self, host_name: str) -> bool:
        """The globs, then sampling: whether to send this one event."""
        return self.passes(host_name) and (self.sample >= 1.0 or random.random() < self.sample)


def host_name(name: str) -> str:
    """The name the host's subscribers see for an event emitted here as ``name``."""
    return name if name in RUNTIME_EVENTS else f"adapter.{name}"


class Buffer:
    def __init__(self, size: int) -> None:
        self.size = size
        self.items: collections.deque[Record] = collections.deque()
        self.dropped = 0
        self.enabled = True
        self.wake = threading.Event()
        self._lock = threading.Lock()
        # (event name, tool, type) -> count since the last take: counted, not queued per call
        self.counts: dict[tuple[str, str, str], int] = {}
        self.filter: Filter | None = None  # the host's sampling and globs; None: send all
        self.applied = 0  # TelemetryControl messages applied (the stream acknowledges them)
        self._acked = 0  # ... of which the stream has acknowledged
        # A Snakepit host drives this worker: its globs name events as emitted (no adapter.
        # prefix: it adds none) and it knows no acknowledgement event (`snakepit_servicer`).
        self.snakepit_host = False

    def put(self, record: Record, wake: bool = True) -> bool:
        """Queue ``record``; without ``wake`` it waits for the stream's next take (within
        0.5 s), sharing one wake-up with what comes meanwhile."""
        with self._lock:
            if not self.enabled and record[0] != SPAN_EVENT:  # spans are not events to mute
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
        rules = self.filter
        if rules is not None and not rules.passes(name):
            return
        with self._lock:
            if self.enabled:
                self.counts[key] = self.counts.get(key, 0) + n

    def control(self, which: str, control: Any) -> None:
        """Apply one TelemetryControl message (``which`` is its oneof: toggle, sampling or
        filter); the stream then acknowledges it to the host (`CONTROL_APPLIED`)."""
        if which == "toggle":
            self.enabled = control.toggle.enabled
        elif which in ("sampling", "filter"):
            old = self.filter or Filter(1.0, (), ())
            if which == "sampling":  # its event_patterns are ignored, as Snakepit's are
                rate = min(max(control.sampling.sampling_rate, 0.0), 1.0)
                new = Filter(rate, old.allow, old.deny)
            else:
                new = Filter(old.sample, tuple(control.filter.allow),
                             tuple(control.filter.deny))
            self.filter = None if new.sample >= 1.0 and not new.allow and not new.deny else new
        with self._lock:
            self.applied += 1
        self.wake.set()

    def take(self) -> tuple[list[Record], int]:
        """Everything buffered (counters as events), and the drops since the last take."""
        with self._lock:
            items, self.items = list(self.items), collections.deque()
            dropped, self.dropped = self.dropped, 0
            counts, self.counts = self.counts, {}
            applied = self.applied if self.applied != self._acked else 0
            self._acked = self.applied
            self.wake.clear()
        now = time.time_ns()
        items += [(name, {"count": n}, {"tool": tool, "type": kind}, now, "")
                  for (name, tool, kind), n in counts.items()]
        if applied and not self.snakepit_host:  # after the events taken with it: those
            # came before the change
            items.append((CONTROL_APPLIED, {"count": applied}, {}, now, ""))
        return items, dropped


def buffer_events(environ: Mapping[str, str] | None = None) -> int:
    """The buffer's size for a worker with this environment: read as the worker starts
    serving (`main.serve`), not at import: a fork server imports this module before it knows
    its pool's environment (a warm zygote is started with its host's)."""
    env = os.environ if environ is None else environ
    return int(env.get(ENV_BUFFER) or BUFFER_EVENTS)


buffer = Buffer(buffer_events())


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
    if name in RUNTIME_EVENTS or name == CONTROL_APPLIED:
        raise ValueError(f"telemetry event name {name!r} is the worker runtime's own; "
                         "choose another")
    return _put(name, measurements, metadata)


def unserializable_results(tool_name: str, counts: dict[str, int]) -> None:
    """A result held values that became markers (`runtime.protocol.graceful`): counted per
    tool and type (never a repr: no secrets), sent as one event per pair and ``count``
    within 0.5 s (`Buffer.count`)."""
    for type_name, count in counts.items():
        buffer.count(RESULT_UNSERIALIZABLE, tool_name, type_name, count)


def _put(name: str, measurements: Mapping[str, Any] | None,
         metadata: Mapping[str, Any] | None) -> bool:
    clean = _clean_measurements(measurements)  # a bad value raises, sampled out or not
    rules = buffer.filter
    if rules is not None and not rules.admits(
            name if buffer.snakepit_host else host_name(name)):
        return False  # muted by the host: never buffered, never sent
    ctx = current_call.get()
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    if ctx is not None:
        meta.setdefault("tool", ctx.tool_name)
        if ctx.session_id:
            meta.setdefault("session_id", ctx.session_id)
    return buffer.put((name, clean, meta, time.time_ns(),
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
