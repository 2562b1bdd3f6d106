"""Streams whose items share chunks (pit extension; the host asks with request metadata
``pit_stream_batch``, Snakepit's hosts never do and get one chunk per item).

The tool's generator runs on a thread of its own (`Producer`), which encodes each item as it
comes and puts it in a bounded buffer; the RPC's thread sends, as one chunk, every item that
was produced while the previous chunk was being sent (at most MAX_ITEMS items or about
MAX_BYTES bytes; a ``bytes`` item always goes alone, as before). So a generator that yields
fast streams at the pace of whole chunks, and one that yields slowly still has each item sent
as soon as it exists: nothing waits to fill a chunk. A full buffer stops the generator until
the host has taken what is there (the same backpressure as before, from the worker's side).
A batch chunk carries the items as a JSON array and says how many in ``pit_items``.

Cancellation is what it was: the RPC's end (or its deadline) sets ``ctx.cancelled`` and the
generator is closed at its next item (GeneratorExit inside the tool, on its own thread). The
call's slot is held until the generator has really stopped.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..protocol import codec, pb

MAX_ITEMS = 1024  # items in one chunk, and in the buffer
MAX_BYTES = 1 << 20  # a chunk's data stops growing past this; the buffer holds about twice
POLL_S = 0.05  # how often a waiting sender checks that the RPC is still wanted


class Failed:
    """The generator (or encoding what it yielded) raised ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Producer:
    """Runs ``items`` on a thread, encoding each with ``encode(item, n) -> (data, is_bytes)``;
    `batches` hands the sender what is ready. ``done`` runs on the thread once the generator
    has stopped (the runner frees the call's slot there)."""

    def __init__(self, items: Iterator[Any], encode: Callable[[Any, int], tuple[bytes, bool]],
                 cancelled: threading.Event, done: Callable[[], None],
                 setup: Callable[[], None]) -> None:
        self._items, self._encode, self._done, self._setup = items, encode, done, setup
        self.cancelled = cancelled
        self._buf: collections.deque[Any] = collections.deque()
        self._bytes = 0
        self._finished = False
        self.count = 0  # items the generator yielded
        self.error: BaseException | None = None  # what it (or encoding an item) raised
        self._sender_waits = False
        self._cond = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._run, name="pit-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self._setup()
        try:
            for item in self._items:
                if self.cancelled.is_set():
                    return
                self.count += 1
                self._put(self._encode(item, self.count))
        except BaseException as exc:  # noqa: BLE001 - handed to the sender, which ends the RPC
            self.error = exc
            self._put(Failed(exc))
        finally:
            with contextlib.suppress(BaseException):
                self._items.close()  # type: ignore[attr-defined]  # GeneratorExit in the tool
            with self._cond:
                self._finished = True
                self._cond.notify_all()
            self._done()

    def _put(self, entry: Any) -> None:
        size = len(entry[0]) if isinstance(entry, tuple) else 0
        with self._cond:
            while (len(self._buf) >= MAX_ITEMS or self._bytes >= 2 * MAX_BYTES) and \
                    not self.cancelled.is_set():
                self._cond.wait(POLL_S)
            self._buf.append(entry)
            self._bytes += size
            if self._sender_waits:
                self._cond.notify_all()

    def batches(self, is_active: Callable[[], bool]) -> Iterator[list[Any]]:
        """Lists of what is ready, in order (each ``(data, is_bytes)`` or one `Failed` at the
        end); returns when the generator is done or the RPC is no longer wanted."""
        cond, buf = self._cond, self._buf
        while True:
            with cond:
                while not buf and not self._finished:
                    if not is_active() or self.cancelled.is_set():
                        self.cancelled.set()
                        return
                    self._sender_waits = True
                    cond.wait(POLL_S)
                    self._sender_waits = False
                if not buf:
                    return
                ready = list(buf)
                buf.clear()
                self._bytes = 0
                cond.notify_all()  # a producer held back by a full buffer goes on
            yield ready

    def stop(self) -> None:
        """The sender is gone: the generator stops at its next item."""
        self.cancelled.set()
        with self._cond:
            self._cond.notify_all()


def chunks(ready: list[tuple[bytes, bool]], tool_name: str, first: int) -> Iterator[Any]:
    """ToolChunks for items ``first``.. : runs of JSON items as arrays of at most MAX_ITEMS
    items / about MAX_BYTES, each ``bytes`` item alone."""
    run: list[bytes] = []
    size = 0
    n = first
    for data, is_bytes in ready:
        if run and (is_bytes or len(run) >= MAX_ITEMS or size >= MAX_BYTES):
            yield _array(run, tool_name, n)
            n += len(run)
            run, size = [], 0
        if is_bytes:
            yield codec.encode_chunk(data, tool_name, n)  # a bytes chunk, as an unbatched one
            n += 1
            continue
        run.append(data)
        size += len(data)
    if run:
        yield _array(run, tool_name, n)


def _array(run: list[bytes], tool_name: str, first: int) -> Any:
    chunk = pb.ToolChunk(chunk_id=f"{tool_name}-{first}", data=b"[" + b",".join(run) + b"]")
    chunk.metadata[codec.STREAM_ITEMS] = str(len(run))
    return chunk
