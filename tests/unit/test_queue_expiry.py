"""QueueExpiry: one timer for every queued call's time limit."""

from __future__ import annotations

import asyncio
from typing import Any

from runtime.pool.queue_expiry import QueueExpiry


def test_waiters_fail_at_their_own_limits_and_done_or_forgotten_ones_never() -> None:
    async def main() -> tuple[list[tuple[str, float]], int]:
        loop = asyncio.get_running_loop()
        expired: list[tuple[str, float]] = []
        t0 = loop.time()

        def expire(fut: asyncio.Future[Any], what: Any) -> None:
            expired.append((what, round(loop.time() - t0, 2)))
            fut.set_exception(TimeoutError(what))

        q = QueueExpiry(expire)
        futs = {name: loop.create_future() for name in ("late", "early", "done", "gone", "mid")}
        q.add(loop, futs["late"], t0 + 0.30, "late")
        q.add(loop, futs["early"], t0 + 0.05, "early")  # earlier than the armed timer
        q.add(loop, futs["done"], t0 + 0.02, "done")
        q.add(loop, futs["gone"], t0 + 0.10, "gone")
        q.add(loop, futs["mid"], t0 + 0.15, "mid")
        futs["done"].set_result("a worker")  # got its worker: the sweep drops it unasked
        q.forget(futs["gone"])
        await asyncio.sleep(0.45)
        return expired, len(q)

    expired, left = asyncio.run(main())
    assert [name for name, _ in expired] == ["early", "mid", "late"]
    for (name, at), limit in zip(expired, (0.05, 0.15, 0.30), strict=True):
        assert limit <= at + 0.002, (name, at)  # never before its limit
    assert left == 0


def test_clear_disarms_the_timer() -> None:
    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        expired: list[Any] = []
        q = QueueExpiry(lambda fut, what: expired.append(what))
        q.add(loop, loop.create_future(), loop.time() + 0.02, "x")
        q.clear()
        await asyncio.sleep(0.06)
        return expired

    assert asyncio.run(main()) == []
