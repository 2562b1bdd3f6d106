"""Queued calls' time limits: one timer for the whole queue, not one per queued call.

With more calls in flight than the workers take (64 on two workers), every call waits in the
queue for a moment, and a TimerHandle per queued call (call_later, a done callback to cancel
it, the timer heap's cleanup) cost ~3 µs of a ~37 µs call. Here a waiter's time limit goes in
a dict that the call takes it out of when it gets its worker (`forget`); one timer is armed
for the earliest limit, and when it fires every waiter past its limit gets its error (through
``expire``), waiters found done are dropped, and the timer is armed again for the earliest
limit left. So the timer fires about once per limit's length, not once per call.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

SLACK_S = 0.001  # a limit this close when the sweep runs counts as passed

Expire = Callable[[asyncio.Future[Any], Any], None]


class QueueExpiry:
    def __init__(self, expire: Expire) -> None:
        self._expire = expire  # expire(waiter, what add() was given): fail the waiter
        self._waiting: dict[asyncio.Future[Any], tuple[float, Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf

    def add(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any], at: float,
            what: Any) -> None:
        """``waiter`` fails at loop time ``at`` unless it is done or forgotten by then."""
        self._waiting[waiter] = (at, what)
        if at < self._at:
            self._arm(loop, at)

    def forget(self, waiter: asyncio.Future[Any]) -> None:
        """``waiter`` left the queue (it got its worker): no limit any more."""
        self._waiting.pop(waiter, None)

    def clear(self) -> None:
        self._waiting.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._at = math.inf

    def __len__(self) -> int:
        return len(self._waiting)

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at = at
        self._timer = loop.call_at(at, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._at = None, math.inf
        now = loop.time() + SLACK_S
        due: list[tuple[asyncio.Future[Any], Any]] = []
        earliest = math.inf
        for waiter, (at, what) in list(self._waiting.items()):
            if waiter.done():
                del self._waiting[waiter]
            elif at <= now:
                del self._waiting[waiter]
                due.append((waiter, what))
            elif at < earliest:
                earliest = at
        if earliest < math.inf:
            self._arm(loop, earliest)
        for waiter, what in due:
            self._expire(waiter, what)
