"""`pool.map`: many small calls as chunks, one gRPC call per chunk.

A chunk is an ordinary call of the tool with ``metadata["pit_map"]`` set and the items as one
JSON list; the worker runs the tool once per item and answers every item (see
`ToolRunner._run_map`). `MapPlan` is the part both APIs share (chunk sizes, decoding, error
policy); `map_sync` and `map_async` only drive it.

Chunk size (``chunksize=None``): the first chunks are small; after each one the measured
per-item time sets the next size to about TARGET_CHUNK_MS of work, and while the number of
items left is known no chunk takes more than its share (so every worker stays busy to the end).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from ..errors import CallTimeout, from_payload
from ..protocol.codec import MAP_FLAG


class SyncMapper(Protocol):
    """What `map_sync` needs of a `Pool`."""

    @property
    def name(self) -> str: ...
    def stats(self) -> Any: ...
    @property
    def submit(self) -> Callable[..., concurrent.futures.Future[Any]]: ...
    def cancel(self, fut: concurrent.futures.Future[Any]) -> None: ...


class AsyncMapper(Protocol):
    """What `map_async` needs of an `AsyncPool`."""

    @property
    def name(self) -> str: ...
    def stats(self) -> Any: ...
    @property
    def execute(self) -> Callable[..., Awaitable[Any]]: ...

TARGET_CHUNK_MS = 20.0
FIRST_CHUNK = 4
MAX_CHUNK = 4096
CHUNKS_PER_SLOT = 2  # chunks kept in flight per worker slot


class MapPlan:
    def __init__(self, pool_name: str, tool: str, items: Iterable[Mapping[str, Any]],
                 capacity: int, chunksize: int | None, return_exceptions: bool,
                 timeout: float | None) -> None:
        if chunksize is not None and (isinstance(chunksize, bool) or not isinstance(
                chunksize, int) or chunksize < 1):
            raise ValueError(f"chunksize must be an int >= 1 (or None for automatic), got "
                             f"{chunksize!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0 s (None: each chunk gets the pool's call "
                             "timeout)")
        self.pool_name = pool_name
        self.tool = tool
        self.left: int | None = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
        self._items = iter(items)
        self._index = 0
        self.capacity = max(1, capacity)
        self.fixed = chunksize
        self.return_exceptions = return_exceptions
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.per_item_ms: float | None = None
        self.max_in_flight = self.capacity * CHUNKS_PER_SLOT
        self.exhausted = False

    def next_chunk(self) -> list[Mapping[str, Any]]:
        """The next chunk of items (empty: none left). Raises TypeError for a non-mapping."""
        chunk = list(itertools.islice(self._items, self._size()))
        for offset, item in enumerate(chunk):
            if not isinstance(item, Mapping):
                raise TypeError(f"map({self.tool!r}): item {self._index + offset} must be a "
                                f"mapping of argument names to values, got "
                                f"{type(item).__name__}")
        self._index += len(chunk)
        if self.left is not None:
            self.left -= len(chunk)
        return chunk

    def _size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.per_item_ms is None:
            size = FIRST_CHUNK
        else:
            size = int(TARGET_CHUNK_MS / max(self.per_item_ms, 1e-4))
        if self.left is not None:  # leave some for every slot
            size = min(size, math.ceil(self.left / self.max_in_flight))
        return max(1, min(size, MAX_CHUNK))

    def remaining(self) -> float | None:
        """Seconds left for the next chunk; raises CallTimeout once the map's time is up."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise CallTimeout(f"map({self.tool!r}) ran out of time after {self._index} items "
                              "were sent")
        return left

    def fill(self, pending: collections.deque[tuple[Any, int]],
             submit: Callable[[dict[str, Any], dict[str, str], float | None], Any],
             failed: Callable[[BaseException], Any]) -> None:
        """Send chunks until ``max_in_flight`` are out or the items are exhausted:
        ``submit(args, metadata, timeout)`` -> a future; a chunk that is out of time gets
        ``failed(CallTimeout)`` instead, without a call."""
        while not self.exhausted and len(pending) < self.max_in_flight:
            chunk = self.next_chunk()
            if not chunk:
                self.exhausted = True
                return
            try:
                fut = submit({"items": chunk}, {MAP_FLAG: "1"}, self.remaining())
            except CallTimeout as exc:
                fut = failed(exc)
            pending.append((fut, len(chunk)))

    def results(self, n: int, value: Any, err: BaseException | None) -> Iterator[Any]:
        """The chunk's item results in order; an item's error is raised, or yielded with
        ``return_exceptions``."""
        if err is not None:
            for _ in range(n):
                yield self._failure(err)
            return
        took = value["took_ms"]
        self.per_item_ms = took / n if self.per_item_ms is None else \
            self.per_item_ms * 0.5 + took / n * 0.5
        for status, item in value["results"]:
            if status == "ok":
                yield item
            else:
                yield self._failure(from_payload(item, self.tool,
                                                 {"tool": self.tool, "pool": self.pool_name}))

    def _failure(self, err: BaseException) -> BaseException:
        if self.return_exceptions:
            return err
        raise err


def map_sync(pool: SyncMapper, tool: str, items: Iterable[Mapping[str, Any]], *,
             chunksize: int | None, ordered: bool, return_exceptions: bool,
             timeout: float | None) -> Iterator[Any]:
    plan = MapPlan(pool.name, tool, items, _capacity(pool.stats()), chunksize,
                   return_exceptions, timeout)
    pending: collections.deque[tuple[concurrent.futures.Future[Any], int]] = \
        collections.deque()

    def failed(exc: BaseException) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        fut.set_exception(exc)
        return fut

    try:
        while True:
            plan.fill(pending, lambda args, metadata, left: pool.submit(
                tool, args, metadata=metadata, timeout=left), failed)
            if not pending:
                return
            if ordered:
                fut, n = pending.popleft()
            else:
                done, _ = concurrent.futures.wait([f for f, _ in pending],
                                                  return_when=concurrent.futures.FIRST_COMPLETED)
                fut, n = next((f, k) for f, k in pending if f in done)
                pending.remove((fut, n))
            err = fut.exception()  # the whole chunk failed
            yield from plan.results(n, None if err else fut.result(), err)
    finally:
        for fut, _ in pending:
            pool.cancel(fut)


async def map_async(pool: AsyncMapper, tool: str, items: Iterable[Mapping[str, Any]], *,
                    chunksize: int | None, ordered: bool, return_exceptions: bool,
                    timeout: float | None) -> AsyncIterator[Any]:
    plan = MapPlan(pool.name, tool, items, _capacity(pool.stats()), chunksize,
                   return_exceptions, timeout)
    pending: collections.deque[tuple[asyncio.Future[Any], int]] = collections.deque()
    loop = asyncio.get_running_loop()

    def failed(exc: BaseException) -> asyncio.Future[Any]:
        fut = loop.create_future()
        fut.set_exception(exc)
        return fut

    try:
        while True:
            plan.fill(pending, lambda args, metadata, left: asyncio.ensure_future(
                pool.execute(tool, args, metadata=metadata, timeout=left)), failed)
            if not pending:
                return
            if ordered:
                task, n = pending.popleft()
                await asyncio.wait({task})
            else:
                done, _ = await asyncio.wait([t for t, _ in pending],
                                             return_when=asyncio.FIRST_COMPLETED)
                task, n = next((t, k) for t, k in pending if t in done)
                pending.remove((task, n))
            err = task.exception()  # the whole chunk failed
            for item in plan.results(n, None if err else task.result(), err):
                yield item
    finally:
        for task, _ in pending:
            task.cancel()


def _capacity(stats: Any) -> int:
    return sum(w.capacity for w in stats.workers) or stats.size
