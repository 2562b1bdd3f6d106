"""Every worker's recent output, kept by its host: what `pit logs` and `pit run` show.

    worker stdout+stderr --> WorkerProcess's pump --> lines_of(reader) --> WorkerOutput.add
        --> a ring per worker (RING_BYTES; the oldest lines go first; TOTAL_BYTES for all,
            kept by dropping whole rings, of ended workers first as they stopped writing)
        --> the host's output file (state_dir/logs/<instance>.log, rotated at FILE_BYTES)
        --> subscribers (the control service's followers, `pit run`'s forwarder)

One `WorkerOutput` per host instance, used on the instance's event loop only (the pumps, the
control service and the subscribers' callbacks all run there). The file is flushed at most
every FLUSH_S (a flush per line cost the loop ~3 µs a line, and a chatty tool slowed every
call), so a host killed outright may lose its last FLUSH_S of output; a file that cannot be written
is given up (logged once) while the rings keep working. Output files of hosts that ended more
than KEEP_FILES_S ago are removed when a host starts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ...logs import logger

RING_BYTES = 1 << 20  # per worker
TOTAL_BYTES = 64 << 20  # all rings together: past it, the least recently written ring goes
FILE_BYTES = 8 << 20  # the output file is rotated (one backup, .1) past this
KEEP_FILES_S = 7 * 24 * 3600.0
FLUSH_S = 0.2  # the output file is flushed this long after its first unflushed line

log = logger("worker")


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One line a worker wrote (stdout and stderr together, as the worker interleaved them)."""
    seq: int  # increasing across the instance: followers skip what they already sent
    at: float  # time.time() when the host read it
    pool: str
    worker: str
    text: str

    @property
    def prefix(self) -> str:
        return f"[{self.pool}/{self.worker}]"


Subscriber = Callable[[OutputLine], None]


class _Ring:
    __slots__ = ("lines", "size")

    def __init__(self) -> None:
        self.lines: collections.deque[OutputLine] = collections.deque()
        self.size = 0

    def append(self, line: OutputLine, limit: int) -> None:
        self.lines.append(line)
        self.size += len(line.text) + 1
        while self.size > limit and len(self.lines) > 1:
            self.size -= len(self.lines.popleft().text) + 1


class WorkerOutput:
    def __init__(self, path: Path | None, *, ring_bytes: int = RING_BYTES,
                 total_bytes: int = TOTAL_BYTES, file_bytes: int = FILE_BYTES) -> None:
        """``path``: the output file (None: rings only)."""
        self.path = path
        self._ring_bytes = ring_bytes
        self._total_bytes = total_bytes
        self._size = 0  # of all rings
        self._file_bytes = file_bytes
        self._rings: collections.OrderedDict[tuple[str, str], _Ring] = (
            collections.OrderedDict())
        self._seq = itertools.count(1)
        self._subscribers: list[Subscriber] = []
        self._file: IO[str] | None = None
        self._written = 0
        self._file_failed = path is None
        self._flush_due: asyncio.TimerHandle | None = None

    # --- writing ----------------------------------------------------------------------------
    def add(self, pool: str, worker: str, text: str) -> None:
        line = OutputLine(next(self._seq), time.time(), pool, worker, text)
        key = (pool, worker)
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = _Ring()
        else:
            self._rings.move_to_end(key)
        before = ring.size
        ring.append(line, self._ring_bytes)
        self._size += ring.size - before
        while self._size > self._total_bytes and len(self._rings) > 1:
            self._size -= self._rings.popitem(last=False)[1].size
        self._write(line)
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(line)
            except Exception as exc:  # noqa: BLE001 - one bad subscriber must not stop output
                log.error("worker output subscriber %r failed: %s; removed", subscriber, exc)
                self.unsubscribe(subscriber)

    def _write(self, line: OutputLine) -> None:
        if self._file_failed:
            return
        assert self.path is not None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(line.at))
        text = f"{stamp}.{int(line.at * 1000) % 1000:03d} {line.prefix} {line.text}\n"
        try:
            if self._file is None or self._written + len(text) > self._file_bytes:
                self._rotate()
            assert self._file is not None
            self._file.write(text)
            self._written += len(text)
            if self._flush_due is None:
                self._schedule_flush()
        except OSError as exc:
            self._file_failed = True
            log.warning("worker output: cannot write %s (%s); keeping output in memory only",
                        self.path, exc)

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop (a direct use, the tests): flush at once
            self._flush()
            return
        self._flush_due = loop.call_later(FLUSH_S, self._flush)

    def _flush(self) -> None:
        self._flush_due = None
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                self._file_failed = True
                log.warning("worker output: cannot write %s (%s); keeping output in memory "
                            "only", self.path, exc)

    def _rotate(self) -> None:
        assert self.path is not None
        if self._file is not None:
            self._file.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8", errors="replace")
        self._written = os.fstat(fd).st_size

    def close(self) -> None:
        self._subscribers.clear()
        self._file_failed = True  # a line that still comes is not written: no file reopened
        if self._flush_due is not None:
            self._flush_due.cancel()
            self._flush_due = None
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    # --- reading ----------------------------------------------------------------------------
    def lines(self, *, pool: str = "", worker: str = "", since: float = 0.0) -> list[OutputLine]:
        """What the rings hold, oldest first; only ``pool`` / ``worker`` when given, only lines
        read at or after ``since`` (time.time())."""
        found = [line for (p, w), ring in self._rings.items()
                 if (not pool or p == pool) and (not worker or w == worker)
                 for line in ring.lines if line.at >= since]
        return sorted(found, key=lambda line: line.seq)

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber(line)`` on the instance's loop for every line from now on."""
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(subscriber)


def output_path(state_dir: Path, instance_id: str) -> Path:
    return state_dir / "logs" / f"{instance_id}.log"


def prune_output_files(state_dir: Path, keep_s: float = KEEP_FILES_S) -> None:
    """Remove output files of hosts not written to for ``keep_s``."""
    cutoff = time.time() - keep_s
    for path in (state_dir / "logs").glob("*.log*"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()


async def lines_of(reader: asyncio.StreamReader) -> AsyncIterator[str]:
    """The lines of a worker's output stream, without their newline, until EOF. A line longer
    than the reader's limit comes in pieces rather than ending the stream (a plain
    ``async for`` raises ValueError there, and a worker whose pipe nobody reads blocks)."""
    while True:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                yield exc.partial.decode("utf-8", "replace")
            return
        except asyncio.LimitOverrunError as exc:
            raw = await reader.readexactly(max(exc.consumed, 1))
        yield raw.decode("utf-8", "replace").rstrip("\n")
