"""The host's telemetry bus: `subscribe(pattern, handler)` to the events of `catalog.CATALOG`
and to ``adapter.*`` events emitted by adapter code in workers.

    from runtime import telemetry

    def on_call(event):                       # telemetry.Event
        print(event.name, event.measurements["duration_ms"], event.metadata["tool"])

    sub = telemetry.subscribe("pool.call.completed", on_call)   # glob: "worker.*", "*"
    ...
    sub.cancel()

Handlers run synchronously on the pool's event loop thread (a direct call's pool.call.* events
too: the loop emits them when it settles the call, within 50 ms of its end): keep them short,
hand heavy work to a queue. A handler that raises is logged (``pit.telemetry``)
and keeps its subscription. With no subscriber for a name, emitting it costs one dict lookup.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ..logs import logger
from .catalog import CATALOG, EventSpec

__all__ = ["CATALOG", "Event", "EventSpec", "Subscription", "emit", "enabled", "subscribe"]

log = logger("telemetry")


class Event(NamedTuple):
    name: str
    measurements: Mapping[str, float | int | str]
    metadata: Mapping[str, Any]
    timestamp_ns: int


Handler = Callable[[Event], Any]


class Subscription:
    def __init__(self, pattern: str, handler: Handler) -> None:
        self.pattern = pattern
        self.handler = handler

    def cancel(self) -> None:
        """Stop receiving events (idempotent)."""
        _bus.remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class _Bus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: tuple[Subscription, ...] = ()
        self._by_name: dict[str, tuple[Subscription, ...]] = {}  # cache, rebuilt on change

    def add(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = (*self._subs, sub)
            self._by_name = {}

    def remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)
            self._by_name = {}

    def matching(self, name: str) -> tuple[Subscription, ...]:
        by_name = self._by_name
        subs = by_name.get(name)
        if subs is None:
            subs = tuple(s for s in self._subs if fnmatch.fnmatchcase(name, s.pattern))
            by_name[name] = subs
        return subs


_bus = _Bus()


def subscribe(pattern: str, handler: Handler) -> Subscription:
    """Call ``handler(event)`` for every event whose name matches the glob ``pattern``."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("pattern must be an event name or a glob such as 'worker.*'")
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {type(handler).__name__}")
    known = [n for n in CATALOG if fnmatch.fnmatchcase(n, pattern)]
    if not known and not pattern.startswith(("adapter.", "*", "?", "[")):
        raise ValueError(f"no event matches {pattern!r}; events: {', '.join(CATALOG)} "
                         "(and adapter.<name> for events emitted by adapter code)")
    sub = Subscription(pattern, handler)
    _bus.add(sub)
    return sub


def enabled(name: str) -> bool:
    """Whether anyone listens to ``name`` (to skip building an event nobody reads)."""
    return bool(_bus.matching(name))


def emit(name: str, measurements: Mapping[str, Any] | None = None,
         metadata: Mapping[str, Any] | None = None, timestamp_ns: int | None = None) -> None:
    """Deliver one event to its subscribers, now, on this thread."""
    subs = _bus.matching(name)
    if not subs:
        return
    event = Event(name, measurements or {}, metadata or {}, timestamp_ns or time.time_ns())
    for sub in subs:
        try:
            sub.handler(event)
        except Exception:  # noqa: BLE001 - a subscriber's bug must not break the pool
            log.exception("telemetry handler %r for %r failed", sub.handler, sub.pattern)
