"""Streams: backpressure, cancellation, deadlines, plain tools, a dying worker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import runtime
from runtime import AsyncPool, Pool
from tests.conftest import wait_until

SAMPLE = "tests.adapters.sample:SampleAdapter"


def test_a_slow_consumer_slows_the_producer_and_memory_stays_flat(tmp_path: Path) -> None:
    progress = tmp_path / "progress"
    with Pool(adapter=SAMPLE, size=1) as pool:
        rss_before = psutil.Process().memory_info().rss
        stream = pool.stream("watched_stream",
                             {"n": 100_000, "size": 100, "progress": str(progress)})
        for _ in range(10):
            next(stream)
        time.sleep(1.0)  # the consumer sleeps: the worker must stop far short of the end
        ahead = int(progress.read_text())
        assert ahead < 20_000, f"producer ran {ahead} chunks ahead of a sleeping consumer"
        count = 10 + sum(1 for _ in stream)
        grown = (psutil.Process().memory_info().rss - rss_before) / 2**20
        assert count == 100_000
        assert grown < 50, f"host RSS grew {grown:.0f} MiB while streaming"


def test_small_items_share_chunks_and_a_slow_consumer_still_holds_the_producer(
        tmp_path: Path) -> None:
    progress = tmp_path / "progress"
    with Pool(adapter=SAMPLE, size=1) as pool:
        stream = pool.stream("watched_stream", {"n": 500_000, "size": 0,
                                                "progress": str(progress), "as_json": True})
        assert [next(stream) for _ in range(10)] == list(range(10))
        time.sleep(1.0)  # the consumer sleeps: the worker's buffer and the windows fill up
        ahead = int(progress.read_text())
        assert ahead < 100_000, f"producer ran {ahead} items ahead of a sleeping consumer"
        assert sum(1 for _ in stream) == 500_000 - 10


def test_an_item_is_sent_as_soon_as_it_exists_not_when_a_chunk_fills(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with Pool(adapter=SAMPLE, size=1) as pool:
        stream = pool.stream("gated_stream", {"gate": str(gate)})
        assert next(stream) == "first"  # while the generator still waits for the gate
        gate.touch()
        assert list(stream) == ["released"]


def test_bytes_and_json_items_keep_their_order_and_an_error_comes_after_them() -> None:
    with Pool(adapter=SAMPLE, size=1) as pool:
        got: list[object] = []
        with pytest.raises(ValueError, match="after six"):
            for item in pool.stream("mixed_stream"):
                got.append(item)
        assert got == [1, {"two": 2}, b"three", "four", b"five", [6]]


def test_closing_a_stream_stops_the_generator_and_frees_the_worker(tmp_path: Path) -> None:
    progress = tmp_path / "progress"
    with Pool(adapter=SAMPLE, size=1) as pool:
        stream = pool.stream("watched_stream",
                             {"n": 1_000_000, "size": 10, "progress": str(progress)})
        assert [next(stream) for _ in range(3)] == [b"x" * 10] * 3
        stream.close()
        started = time.monotonic()
        assert pool.execute("record", {"tag": "next"}) == 1
        assert time.monotonic() - started < 1.0
        assert wait_until(lambda: Path(str(progress) + ".finally").exists(), timeout=2)


def test_closing_a_stream_of_small_items_stops_the_generator(tmp_path: Path) -> None:
    progress = tmp_path / "progress"
    with Pool(adapter=SAMPLE, size=1) as pool:
        stream = pool.stream("watched_stream", {"n": 10**9, "size": 0,
                                                "progress": str(progress), "as_json": True})
        assert [next(stream) for _ in range(3)] == [0, 1, 2]
        stream.close()
        assert pool.execute("record", {"tag": "next"}, timeout=5) == 1
        assert wait_until(lambda: Path(str(progress) + ".finally").exists(), timeout=2)


def test_cancelling_an_async_stream_stops_the_generator(tmp_path: Path) -> None:
    progress = tmp_path / "progress"

    async def main() -> None:
        async with AsyncPool(adapter=SAMPLE, size=1) as pool:
            async def consume() -> None:
                async for _ in pool.stream("watched_stream", {"n": 10_000_000, "size": 10,
                                                              "progress": str(progress)}):
                    await asyncio.sleep(0.001)

            task = asyncio.ensure_future(consume())
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await pool.execute("record", {"tag": "x"}, timeout=2) == 1

    asyncio.run(main())
    assert wait_until(lambda: Path(str(progress) + ".finally").exists(), timeout=2)


def test_stream_deadline_stops_the_generator() -> None:
    with Pool(size=1) as pool:
        started = time.monotonic()
        items = []
        with pytest.raises(runtime.CallTimeout):
            for item in pool.stream("stream_count", {"n": 1000, "delay_ms": 50}, timeout=0.5):
                items.append(item)
        assert 3 <= len(items) <= 11 and time.monotonic() - started < 2
        assert pool.execute("ping", timeout=2)["pong"] is True


def test_a_plain_tool_streams_as_one_chunk() -> None:
    with Pool(size=1) as pool:
        assert list(pool.stream("echo", {"a": 1, "b": 2})) == [{"a": 1, "b": 2}]
        assert list(pool.stream("add", {"a": 1, "b": 2})) == [3]


def test_worker_dying_mid_stream_names_the_exit(tmp_path: Path) -> None:
    with Pool(adapter=SAMPLE, size=1) as pool:
        stream = pool.stream("watched_stream",
                             {"n": 10**9, "size": 10, "progress": str(tmp_path / "p")})
        next(stream)
        import os
        import signal

        os.kill(pool.pids()[0], signal.SIGKILL)
        with pytest.raises(runtime.WorkerExit, match="killed by SIGKILL"):
            for _ in stream:
                pass


def test_streams_are_counted_evented_and_summarised_for_the_caller() -> None:
    events: list[runtime.telemetry.Event] = []
    with runtime.telemetry.subscribe("pool.stream.*", events.append), \
            Pool(adapter=SAMPLE, size=1) as pool:
        ok = pool.stream("make_chunks", {"count": 3, "n": 5},
                         metadata={"correlation_id": "s-1"})
        assert ok.summary is None  # not before it ended
        assert list(ok) == [b"xxxxx"] * 3
        summary = ok.summary
        assert summary is not None and summary.outcome == "ok"
        assert (summary.chunks, summary.bytes, summary.worker_chunks) == (3, 15, 3)
        assert summary.worker == "worker-1" and summary.duration_ms > 0
        assert summary.worker_elapsed_ms is not None and summary.worker_elapsed_ms >= 0
        broken = pool.stream("broken_stream", {"n": 2})
        with pytest.raises(runtime.RemoteError, match="stream broke"):
            list(broken)
        assert broken.summary is not None and broken.summary.outcome == "error"
        assert broken.summary.chunks == 2 and broken.summary.error_category == "remote_error"
        early = pool.stream("make_chunks", {"count": 1000, "n": 1})
        next(early)
        early.close()
        assert early.summary is not None and early.summary.outcome == "cancelled"
        stats = pool.stats().streams
    assert stats == {"started": 3, "completed": 3, "failed": 1,
                     "chunks": 3 + 2 + early.summary.chunks,
                     "bytes": 15 + broken.summary.bytes + early.summary.chunks}
    assert [e.name for e in events] == ["pool.stream.started", "pool.stream.completed"] * 3
    done = [e for e in events if e.name == "pool.stream.completed"]
    assert [e.metadata["outcome"] for e in done] == ["ok", "error", "cancelled"]
    assert done[0].measurements == {"chunks": 3, "bytes": 15,
                                    "duration_ms": summary.duration_ms}
    assert done[0].metadata["correlation_id"] == "s-1"
    assert done[0].metadata["tool"] == "make_chunks"


def test_a_stream_that_never_gets_a_worker_is_counted_as_failed() -> None:
    events: list[runtime.telemetry.Event] = []
    with runtime.telemetry.subscribe("pool.stream.*", events.append), \
            Pool(adapter=SAMPLE, size=1, queue_timeout_ms=200) as pool:
        busy = pool.submit("block", {"seconds": 2})
        late = pool.stream("make_chunks", {"count": 1, "n": 1})
        with pytest.raises(runtime.QueueTimeout):
            list(late)
        assert late.summary is not None and late.summary.outcome == "error"
        assert late.summary.worker == "" and late.summary.error_category == "queue_timeout"
        assert pool.stats().streams["failed"] == 1
        busy.result()
    assert [e.name for e in events] == ["pool.stream.started", "pool.stream.completed"]


def test_an_async_stream_has_its_summary_too() -> None:
    async def main() -> None:
        async with AsyncPool(adapter=SAMPLE, size=1) as pool:
            stream = pool.stream("make_chunks", {"count": 2, "n": 3})
            assert [c async for c in stream] == [b"xxx"] * 2
            assert stream.summary is not None
            assert (stream.summary.outcome, stream.summary.chunks) == ("ok", 2)
            early = pool.stream("make_chunks", {"count": 1000, "n": 1})
            assert await early.__anext__() == b"x"
            await early.aclose()
            assert early.summary is not None and early.summary.outcome == "cancelled"
            assert await pool.execute("record", {"tag": "x"}, timeout=10) == 1  # worker free
            assert pool.stats().streams["completed"] == 2

    asyncio.run(main())


def test_a_stream_left_open_when_its_pool_closes_is_stopped_with_it(tmp_path: Path) -> None:
    """The consumer raised (or forgot the stream) inside ``with Pool``: the pool's close stops
    the stream's pump and its generator, so nothing of it waits on the closed loop. Freeing
    the stream later (the garbage collector, on whatever thread it runs) must not block that
    thread: it waited STOP_STREAM_S for an end that a closed loop never signals."""
    import gc

    progress = tmp_path / "progress"
    pool = Pool(adapter=SAMPLE, size=1).start()
    stream = pool.stream("watched_stream",
                         {"n": 100_000, "size": 100, "progress": str(progress)})
    for _ in range(10):
        next(stream)
    started = time.monotonic()
    pool.close(grace=60)  # a close that waited for the stream would take all of it
    closed_in = time.monotonic() - started
    with pytest.raises(runtime.ShutdownError):
        for _ in stream:  # what was buffered, then the pool's end: no hang, no loop error
            pass
    assert stream.summary is not None and stream.summary.outcome == "cancelled"
    started = time.monotonic()
    del stream
    gc.collect()
    freed_in = time.monotonic() - started
    # not its whole grace waiting for a stream nobody reads, not STOP_STREAM_S (5 s) to free it
    assert closed_in < 30, f"close took {closed_in:.1f} s with a stream open"
    assert freed_in < 2.5, f"freeing the stream blocked its thread {freed_in:.1f} s"


def test_a_stream_opened_as_its_pool_closes_is_stopped_too(tmp_path: Path) -> None:
    """A thread opened the stream while another closed the pool, its pump starting just after
    the close had stopped the open streams (simulated here: that first step of the close runs
    by hand): the stream took the worker, the close waited its whole grace for it, and the
    pump was left pending on the closed loop ('Task was destroyed but it is pending', 'bound
    to a different event loop')."""
    from runtime.pool import sync_pool

    pool = Pool(adapter=SAMPLE, size=1).start()
    try:
        pool._loop.run(sync_pool._stop_streams(pool._loop))  # the close's first step
        stream = pool.stream("watched_stream",
                             {"n": 100_000, "size": 100, "progress": str(tmp_path / "p")})
        with pytest.raises(runtime.ShutdownError):
            next(stream)
    finally:
        started = time.monotonic()
        pool.close(grace=60)
        closed_in = time.monotonic() - started
    assert closed_in < 30, f"close took {closed_in:.1f} s with a stream open"


def test_a_stream_not_yet_read_when_its_pool_closes_raises_shutdown_error(
        tmp_path: Path) -> None:
    """Not RuntimeError('Event loop is closed') with a coroutine never awaited."""
    with Pool(adapter=SAMPLE, size=1) as pool:
        stream = _small_stream(pool, tmp_path)
    _first_read_raises_shutdown_error(stream)


def _small_stream(pool: Pool, tmp_path: Path) -> Any:
    return pool.stream("watched_stream", {"n": 3, "size": 1, "progress": str(tmp_path / "p")})


def _first_read_raises_shutdown_error(stream: Any) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 'coroutine ... was never awaited'
        with pytest.raises(runtime.ShutdownError):
            next(stream)


def test_a_consumer_reading_after_the_close_gets_what_was_buffered_without_a_gap(
        tmp_path: Path) -> None:
    """As Pool.close says: what was buffered, then ShutdownError. It got only the rest of the
    batch it held (the buffer was dropped with the loop), and a full buffer lost its oldest
    item to the close's error (a gap in what a consumer reading along read)."""
    from runtime.pool.sync_pool import STREAM_BUFFER

    pool = Pool(adapter=SAMPLE, size=1).start()
    stream = pool.stream("watched_stream", {"n": 100_000, "size": 0, "as_json": True,
                                            "progress": str(tmp_path / "p")})
    got = [next(stream) for _ in range(10)]
    wait_until(lambda: (tmp_path / "p").exists() and int((tmp_path / "p").read_text()) > 1000)
    pool.close(grace=60)
    with pytest.raises(runtime.ShutdownError):
        for item in stream:
            got.append(item)
    assert got == list(range(len(got)))
    assert len(got) >= 10 + STREAM_BUFFER - 1


def test_a_stream_first_read_as_its_pool_closes_raises_shutdown_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The close (another thread) lands between the first read's buffer and its pump: the
    pump went to the closed loop by hand, which raised RuntimeError('Event loop is closed')
    with a coroutine never awaited, where the close promises ShutdownError."""
    from runtime.pool import sync_pool

    pumped = sync_pool._pump
    pool = Pool(adapter=SAMPLE, size=1).start()

    def close_then_pump(*args: object) -> object:
        pool.close()  # the other thread's close, right then
        return pumped(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(sync_pool, "_pump", close_then_pump)
    try:
        _first_read_raises_shutdown_error(_small_stream(pool, tmp_path))
    finally:
        pool.close()
