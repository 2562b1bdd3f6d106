from __future__ import annotations

from dataclasses import dataclass

import pytest

from runtime.pool.scheduler import Saturated, Scheduler


@dataclass(eq=False)
class W:
    id: str
    capacity: int = 1
    extra: int = 0
    accepting: bool = True
    in_flight: int = 0
    served: int = 0
    exclusive_calls: int = 0
    recycle_reason: str = ""

    @property
    def limit(self) -> int:
        return self.capacity + (0 if self.exclusive_calls else self.extra)


class Waiter:
    def __init__(self) -> None:
        self.result = None
        self.cancelled = False

    def done(self) -> bool:
        return self.result is not None or self.cancelled

    def set_result(self, w: W) -> None:
        self.result = w


def test_least_loaded_worker_is_chosen() -> None:
    s = Scheduler(max_queue=10)
    a, b = W("a", capacity=2), W("b", capacity=2)
    s.add(a)
    s.add(b)
    assert s.acquire() is a
    assert s.acquire() is b
    assert s.acquire() is a
    assert s.acquire() is b
    assert s.acquire() is None


def test_not_accepting_workers_are_skipped() -> None:
    s = Scheduler(max_queue=10)
    a, b = W("a", accepting=False), W("b")
    s.add(a)
    s.add(b)
    assert s.acquire() is b and s.acquire() is None


def test_queue_is_fifo_and_release_hands_the_slot_over() -> None:
    s = Scheduler(max_queue=10)
    a = W("a")
    s.add(a)
    assert s.acquire() is a
    w1, w2 = Waiter(), Waiter()
    s.enqueue(w1)
    s.enqueue(w2)
    assert s.acquire() is None  # a newcomer does not jump the queue
    s.release(a)
    assert w1.result is a and w2.result is None and a.in_flight == 1
    s.release(a)
    assert w2.result is a


def test_cancelled_waiters_are_skipped() -> None:
    s = Scheduler(max_queue=10)
    a = W("a")
    s.add(a)
    s.acquire()
    gone, live = Waiter(), Waiter()
    s.enqueue(gone)
    s.enqueue(live)
    gone.cancelled = True
    s.release(a)
    assert live.result is a and s.depth == 0


def test_full_queue_raises_saturated() -> None:
    s = Scheduler(max_queue=1)
    s.enqueue(Waiter())
    with pytest.raises(Saturated):
        s.enqueue(Waiter())


def test_new_worker_takes_queued_calls_up_to_its_limit() -> None:
    s = Scheduler(max_queue=10)
    waiters = [Waiter() for _ in range(3)]
    for w in waiters:
        s.enqueue(w)
    a = W("a", capacity=1, extra=1)
    s.add(a)
    assert [w.result for w in waiters] == [a, a, None]
    assert s.depth == 1 and s.in_flight == 2


def test_removed_worker_takes_nothing() -> None:
    s = Scheduler(max_queue=10)
    a = W("a")
    s.add(a)
    s.acquire()
    s.remove(a)
    w = Waiter()
    s.enqueue(w)
    s.release(a)
    assert w.result is None and s.drain_queue() == [w]


def test_exclusive_calls_never_share_a_pipelined_worker() -> None:
    s = Scheduler(max_queue=10)
    a = W("a", capacity=1, extra=4)
    s.add(a)
    assert s.acquire() is a and s.acquire() is a  # pipelined: 2 on a
    assert s.acquire(exclusive=True) is None
    stream, call = Waiter(), Waiter()
    s.enqueue(stream, exclusive=True)
    s.enqueue(call)
    s.release(a)
    assert stream.result is None and call.result is None  # FIFO: both wait for a quiet worker
    s.release(a)
    assert stream.result is a and a.exclusive_calls == 1
    assert call.result is None  # nothing is pipelined onto a worker running a stream
    a.exclusive_calls -= 1
    s.release(a)
    assert call.result is a


def test_map_plan_sizes_chunks_from_measured_cost_and_leaves_work_for_every_slot() -> None:
    from runtime.pool.mapping import FIRST_CHUNK, MapPlan

    plan = MapPlan("p", "t", [{"i": i} for i in range(10_000)], capacity=2, chunksize=None,
                   return_exceptions=False, timeout=None)
    first = plan.next_chunk()
    assert len(first) == FIRST_CHUNK
    list(plan.results(len(first), {"took_ms": 0.04, "results": [["ok", 1]] * 4}, None))
    assert plan.per_item_ms == 0.01
    # 20 ms of work at 0.01 ms an item is 2,000, but 4 chunks in flight share what is left
    assert len(plan.next_chunk()) == 2000
    slow = MapPlan("p", "t", [{}] * 100, capacity=2, chunksize=None, return_exceptions=True,
                   timeout=None)
    list(slow.results(4, {"took_ms": 400.0, "results": [["ok", 1]] * 4}, None))
    assert len(slow.next_chunk()) == 1  # 100 ms an item: one at a time
    fixed = MapPlan("p", "t", [{}] * 10, capacity=2, chunksize=3, return_exceptions=True,
                    timeout=None)
    assert [len(fixed.next_chunk()) for _ in range(5)] == [3, 3, 3, 1, 0]


def test_a_worker_being_replaced_comes_last_among_equals() -> None:
    s = Scheduler(max_queue=10)
    warm, fresh = W("warm", served=9, recycle_reason="requests"), W("fresh")
    s.add(warm)
    s.add(fresh)
    assert s.acquire() is fresh  # not the warm one: it is on its way out
    assert s.acquire() is warm  # but it still serves when the others are busier
