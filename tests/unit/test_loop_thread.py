"""The sync API's loop thread: callbacks handed to it from other threads."""

from __future__ import annotations

import threading

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
