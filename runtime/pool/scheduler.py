"""Pure scheduling bookkeeping: which worker takes a call, and the FIFO queue of waiting calls.

No processes and no I/O here, so unit tests drive it directly. A "worker" is anything with
``id``, ``accepting``, ``in_flight``, ``capacity``, ``limit`` (capacity plus any pipeline) and
``served``; a "waiter" is a future-like
object (``done()``, ``set_result(worker)``). Capacity moves with the call: `release` hands a
freed slot straight to the oldest live waiter, so a queued call never loses its turn to a call
that arrives later.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol


class SchedWorker(Protocol):
    id: str
    accepting: bool
    in_flight: int
    capacity: int
    limit: int
    served: int


class Saturated(Exception):
    """The queue is full."""


class Scheduler:
    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.workers: list[Any] = []
        self.queue: deque[Any] = deque()

    def add(self, worker: Any) -> None:
        """A worker became ready: register it and hand it waiting calls up to its capacity."""
        if worker not in self.workers:
            self.workers.append(worker)
        self._feed(worker)

    def remove(self, worker: Any) -> None:
        if worker in self.workers:
            self.workers.remove(worker)

    def acquire(self) -> Any | None:
        """Take a slot on the least-loaded accepting worker, or None when all are full."""
        if self.queue:
            self._prune()
            if self.queue:
                return None  # earlier callers are waiting: join the queue behind them
        best = None
        best_key: tuple[float, int] = (2.0, 0)
        for w in self.workers:
            if w.accepting and w.in_flight < w.limit:
                key = (w.in_flight / w.capacity, w.served)
                if best is None or key < best_key:
                    best, best_key = w, key
        if best is not None:
            best.in_flight += 1
        return best

    def enqueue(self, waiter: Any) -> None:
        self._prune()
        if len(self.queue) >= self.max_queue:
            raise Saturated(len(self.queue))
        self.queue.append(waiter)

    def discard(self, waiter: Any) -> None:
        try:
            self.queue.remove(waiter)
        except ValueError:
            pass

    def release(self, worker: Any) -> None:
        """A call on ``worker`` ended: give its slot to the next waiter, or free it."""
        worker.in_flight -= 1
        if worker.accepting and worker in self.workers:
            self._feed(worker)

    def _feed(self, worker: Any) -> None:
        while worker.accepting and worker.in_flight < worker.limit and self.queue:
            waiter = self.queue.popleft()
            if waiter.done():
                continue
            worker.in_flight += 1
            waiter.set_result(worker)

    def _prune(self) -> None:
        while self.queue and self.queue[0].done():
            self.queue.popleft()

    def drain_queue(self) -> list[Any]:
        """Remove and return every waiting call (at shutdown)."""
        waiting = [w for w in self.queue if not w.done()]
        self.queue.clear()
        return waiting

    @property
    def depth(self) -> int:
        return sum(1 for w in self.queue if not w.done())

    @property
    def in_flight(self) -> int:
        return sum(w.in_flight for w in self.workers)
