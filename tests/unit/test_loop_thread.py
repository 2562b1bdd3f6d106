"""The sync API's loop thread: callbacks handed to it from other threads."""

from __future__ import annotations

import threading
from typing import Any

from runtime.pool.host.loop_thread import LoopThread


def test_a_failing_callback_does_not_strand_the_ones_behind_it() -> None:
    loop = LoopThread()
    try:
        ran = threading.Event()

        def broken() -> None:
            raise RuntimeError("boom")

        loop.call_soon(broken)  # both in one drain: the second must still run
        loop.call_soon(ran.set)
        assert ran.wait(2)
    finally:
        loop.stop()


def test_what_the_loop_never_runs_fails_instead_of_waiting_for_ever() -> None:
    """A call or a stream's next batch handed to the loop as its pool closes (the loop has
    stopped, not yet closed) fails with ShutdownError once the loop is closed; handed after,
    it is refused at once."""
    import asyncio
    import concurrent.futures

    import pytest

    from runtime.errors import ShutdownError

    loop = LoopThread()
    stopped = threading.Event()
    loop.call_soon(lambda: (loop.loop.stop(), stopped.set()))  # stops after this callback
    assert stopped.wait(2)
    loop._thread.join(2)  # white box: stopped, not closed, as inside `stop`
    assert not loop._thread.is_alive() and not loop.loop.is_closed()

    call: concurrent.futures.Future[int] = concurrent.futures.Future()
    loop.call_soon(call.set_result, call)  # a callback carrying the call's future

    async def batch() -> int:
        return 1

    submitted = loop.submit(batch())
    loop.stop()
    for fut in (call, submitted):
        with pytest.raises(ShutdownError, match="stopped before it ran"):
            fut.result(timeout=2)

    later: concurrent.futures.Future[int] = concurrent.futures.Future()
    with pytest.raises(ShutdownError):
        loop.call_soon(later.set_result, later)
    with pytest.raises(ShutdownError):
        loop.run(asyncio.sleep(0))
    with pytest.raises(ShutdownError):
        later.result(timeout=0)


def test_every_callback_handed_to_a_closed_loop_is_refused_not_only_the_first() -> None:
    """The first refusal left a wake-up marked pending: the calls after it were taken into
    the inbox without a word, and their callers waited for ever."""
    import concurrent.futures

    import pytest

    from runtime.errors import ShutdownError

    loop = LoopThread()
    loop.stop()
    for _ in range(3):
        call: concurrent.futures.Future[int] = concurrent.futures.Future()
        with pytest.raises(ShutdownError):
            loop.call_soon(call.set_result, call)
        with pytest.raises(ShutdownError):
            call.result(timeout=0)


def test_a_call_its_caller_cancels_as_the_loop_fails_it_does_not_break_the_stop() -> None:
    """The caller cancels its call between the stop's done() and set_exception: that was an
    InvalidStateError out of `stop` (the pool's close), and the calls behind it never failed."""
    import concurrent.futures

    import pytest

    from runtime.errors import ShutdownError

    class CancelledMeanwhile(concurrent.futures.Future):  # type: ignore[type-arg]
        def done(self) -> bool:
            was = super().done()
            self.cancel()  # the caller, on its thread, right after the check
            return was

    loop = LoopThread()
    stopped = threading.Event()
    loop.call_soon(lambda: (loop.loop.stop(), stopped.set()))
    assert stopped.wait(2)
    loop._thread.join(2)  # white box: stopped, not closed, as inside `stop`
    first = CancelledMeanwhile()
    behind: concurrent.futures.Future[int] = concurrent.futures.Future()
    loop.call_soon(first.set_result, first)
    loop.call_soon(behind.set_result, behind)
    loop.stop()
    assert first.cancelled()
    with pytest.raises(ShutdownError):
        behind.result(timeout=0)


def test_a_coroutine_submitted_as_the_loop_closes_fails_instead_of_waiting_for_ever(
        monkeypatch: Any) -> None:
    """The loop took the coroutine, then `stop` closed it and failed what `submit` had
    recorded, before `submit` recorded this one: its caller (`run`, a stream's next batch)
    waited for ever."""
    import asyncio
    import concurrent.futures

    import pytest

    from runtime.errors import ShutdownError

    loop = LoopThread()
    stopped = threading.Event()
    loop.call_soon(lambda: (loop.loop.stop(), stopped.set()))
    assert stopped.wait(2)
    loop._thread.join(2)  # white box: stopped, not closed, as inside `stop`
    handed = asyncio.run_coroutine_threadsafe

    def then_the_close(coro: Any, on: Any) -> concurrent.futures.Future[Any]:
        fut = handed(coro, on)
        loop.stop()  # the pool's close, on another thread, right then
        return fut

    monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", then_the_close)

    async def batch() -> int:
        return 1

    submitted = loop.submit(batch())
    with pytest.raises(ShutdownError, match="stopped before it ran"):
        submitted.result(timeout=1)


def test_two_threads_closing_at_once_stop_the_loop_once() -> None:
    """Two closes of one pool at once (two threads): the loop stops and closes once, and its
    wake-up fd is closed once (a second close of the number could hit a file opened since)."""
    loop = LoopThread()
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def close() -> None:
        start.wait()
        try:
            loop.stop()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == [] and loop.loop.is_closed()
