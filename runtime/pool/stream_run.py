"""Streams are calls too: what one stream did (`StreamRun`: counters, ``pool.stream.*`` events)
and what its caller sees of it (`Stream` / `AsyncStream`: the items, then ``.summary``).

    s = pool.stream("stream_count", {"n": 3})
    items = list(s)
    s.summary        # StreamSummary(outcome="ok", chunks=3, bytes=3, duration_ms=..., ...)

The caller iterates items, so a stream's closing chunk (its metadata: the chunks the worker
sent and how long its generator ran) cannot be an item: it ends up in ``summary``, which is
None until the stream has ended (exhausted, failed or closed). Everything here runs on the
pool's loop, except reading ``summary`` and iterating a `Stream`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import telemetry
from ..errors import PitError
from ..protocol import codec
from ..telemetry import tracing
from .metrics import StreamCounts

STARTED = "pool.stream.started"
COMPLETED = "pool.stream.completed"


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """How a stream went. ``chunks`` (items) and ``bytes`` (their encoded size) are what the
    host received for the caller: a stream closed early counts every item of the last chunk
    pit's worker packed, and of the buffer `Pool.stream` fills ahead, read or not;
    ``worker_chunks`` and ``worker_elapsed_ms`` come from the worker's closing chunk (None
    when it sent none: it failed, was cancelled, or is not pit's worker)."""

    tool: str
    worker: str
    outcome: str  # ok | error | cancelled
    chunks: int
    bytes: int
    duration_ms: float  # from the call to its end, queueing included
    worker_chunks: int | None = None
    worker_elapsed_ms: float | None = None
    error_category: str = ""


OnEnd = Callable[[StreamSummary], None]


class StreamRun:
    """One stream, from the call on: count it, time it, tell subscribers. ``started`` counts
    it at once; ``pool.stream.started`` goes out when a worker is granted (`dispatched`), or
    at its end when it never got one (refused by the circuit, out of time in the queue):
    such a stream is counted as failed, as a call would be."""

    def __init__(self, pool: str, req: Any, counts: StreamCounts, called_at: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.pool, self.req, self.worker, self.counts = pool, req, "", counts
        self.called_at, self.loop = called_at, loop
        self.chunks = self.bytes = 0
        self.final: Any = None  # the worker's closing chunk, once read
        self._announced = False
        counts.started += 1

    def dispatched(self, worker: str) -> None:
        """A worker was granted to the stream."""
        self.worker = worker
        self._announce()

    def _announce(self) -> None:
        self._announced = True
        if telemetry.enabled(STARTED):
            telemetry.emit(STARTED, {"queue_ms": round((self.loop.time() - self.called_at)
                                                       * 1000, 3)}, self._meta())

    def _meta(self) -> dict[str, Any]:
        return {"pool": self.pool, "worker": self.worker, "tool": self.req.tool_name,
                "correlation_id": self.req.metadata.get("correlation_id", "")}

    def item(self, chunk: Any, items: int | None = None) -> None:
        """``chunk`` arrived for the caller: one item, or (``items``) a JSON array of that many
        that pit's worker packed together. Each item counts as a chunk, as the tool yielded
        it, and ``bytes`` counts the items' own encodings, not the array's "[", "," and "]"."""
        if items is None:
            self.chunks += 1
            self.bytes += len(chunk.data)
        else:
            self.chunks += items
            self.bytes += len(chunk.data) - items - 1

    def end(self, error: BaseException | None) -> StreamSummary:
        """The stream is over (``error``: why, if it did not run to its end)."""
        if error is None:
            outcome, category = "ok", ""
        elif isinstance(error, (GeneratorExit, asyncio.CancelledError)):
            outcome, category = "cancelled", ""
        else:
            outcome = "error"
            category = error.category if isinstance(error, PitError) else "internal"
        if not self._announced:
            self._announce()
        counts = self.counts
        counts.completed += 1
        counts.failed += outcome == "error"
        counts.chunks += self.chunks
        counts.bytes += self.bytes
        meta = self.final.metadata if self.final is not None else {}
        summary = StreamSummary(
            tool=self.req.tool_name, worker=self.worker, outcome=outcome, chunks=self.chunks,
            bytes=self.bytes,
            duration_ms=round((self.loop.time() - self.called_at) * 1000, 3),
            worker_chunks=int(meta[codec.FINAL_CHUNKS]) if codec.FINAL_CHUNKS in meta else None,
            worker_elapsed_ms=(float(meta[codec.FINAL_ELAPSED_MS]) if codec.FINAL_ELAPSED_MS in meta
                               else None),
            error_category=category)
        if telemetry.enabled(COMPLETED):
            telemetry.emit(COMPLETED, {"chunks": summary.chunks, "bytes": summary.bytes,
                                       "duration_ms": summary.duration_ms},
                           {**self._meta(), "outcome": outcome, "error_category": category})
        return summary


class Ending:
    """Where the core leaves a stream's summary (its ``on_end``). A box of its own, not a
    method of the stream object: the core's generator would then hold the object that holds
    it, and a stream its caller drops without closing would wait for the cycle collector to
    be closed (its worker held meanwhile) instead of at once."""

    __slots__ = ("summary",)

    def __init__(self) -> None:
        self.summary: StreamSummary | None = None

    def __call__(self, summary: StreamSummary) -> None:
        self.summary = summary


def _nothing() -> None:
    return None


def span_closer(owner: object, req: Any) -> Callable[[], Any]:
    """Ends the host span of ``req`` as cancelled once ``owner`` (a stream) is closed or
    dropped: the core's generator ends it in its finally, which never runs for a stream
    closed or dropped before it was iterated. Once the core ended it, this does nothing."""
    if req is None or tracing.TRACEPARENT not in req.metadata:
        return _nothing
    return weakref.finalize(owner, tracing.finish, req, None, None, True)


class Stream(Iterator[Any]):
    """What `Pool.stream` returns: iterate it for the items; ``summary`` once it ended;
    ``close()`` stops it early (cancelling the tool)."""

    def __init__(self, req: Any = None) -> None:
        self.ended = Ending()  # the core's on_end
        self.items: Iterator[Any] = iter(())
        self._end_span = span_closer(self, req)

    @property
    def summary(self) -> StreamSummary | None:
        """How the stream went; None until it ended."""
        return self.ended.summary

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        return next(self.items)

    def close(self) -> None:
        close = getattr(self.items, "close", None)
        if close is not None:
            close()
        self._end_span()


class AsyncStream(AsyncIterator[Any]):
    """What `AsyncPool.stream` returns: ``async for`` it for the items; ``summary`` once it
    ended; ``aclose()`` stops it early (cancelling the tool)."""

    def __init__(self, req: Any = None) -> None:
        self.ended = Ending()  # the core's on_end
        self.items: Any = None  # the core's async generator
        self._end_span = span_closer(self, req)

    @property
    def summary(self) -> StreamSummary | None:
        """How the stream went; None until it ended."""
        return self.ended.summary

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        return await self.items.__anext__()

    async def aclose(self) -> None:
        await self.items.aclose()
        self._end_span()
