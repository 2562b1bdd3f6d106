"""Host side of shared-memory payloads (format: `runtime.protocol.shm`).

Each worker gets arenas: files ``/dev/shm/pit-<instance>-<pool>-<worker>-<n>`` the host creates,
maps, and reuses from a free list (a reused arena costs no page faults, which is where a
fresh block per call loses most of its speed). A call with large ``bytes`` arguments takes
an arena for them; a call whose tool returned large ``bytes`` before (or that sends large
ones) also takes one for its result. Both go back to the free list when the call's answer has
been read. All of a worker's arenas are unlinked when it ends; `pit cleanup` removes those of
dead hosts (by instance id).

Array results are read without a copy (``shm_views``, on by default): the caller gets a view
over the arena, and the arena is *leased* to it: it goes back to the free list only once that
array and every view of it are garbage-collected (a finalizer on the buffer they share), so a
later call can never overwrite a result someone still holds. Keeping many results keeps their
arenas, as keeping copies would keep as much memory. A lease outlives its worker: the file is
unlinked at once, the mapping when the last view goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import mmap
import os
import weakref
from collections.abc import Mapping
from typing import Any

from ..protocol import arrays, arrow, codec, shm

MIN_ARENA = 1 << 20


class Arena:
    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.mm.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class Grant:
    """The arenas one call holds; `release` when its answer has been read."""

    __slots__ = ("owner", "arenas")

    def __init__(self, owner: WorkerShm) -> None:
        self.owner = owner
        self.arenas: list[Arena] = []

    def release(self) -> None:
        for arena in self.arenas:
            self.owner.give(arena)
        self.arenas = []

    def discard(self) -> None:
        """The call ended without an answer (timeout, crash): the worker may still write to
        these arenas, so they are never reused."""
        for arena in self.arenas:
            self.owner.drop(arena)
        self.arenas = []


class WorkerShm:
    def __init__(self, prefix: str, threshold: int, views: bool = False) -> None:
        self.prefix = prefix
        self.threshold = threshold
        self.views = views  # array results as leased views (see the module doc)
        self._loop = asyncio.get_running_loop() if views else None
        self._leased: set[str] = set()  # arena paths some result array still uses
        self._free: list[Arena] = []
        self._all: dict[str, Arena] = {}
        self._names = itertools.count(1)
        self.result_sizes: dict[str, int] = {}  # tool -> size of its last large result

    def take(self, n: int) -> Arena:
        fits = [a for a in self._free if a.size >= n]
        if fits:
            arena = min(fits, key=lambda a: a.size)
            self._free.remove(arena)
            return arena
        if self._free:  # replace the largest free one with a bigger one
            old = max(self._free, key=lambda a: a.size)
            self._free.remove(old)
            self.drop(old)
        size = max(MIN_ARENA, 1 << (max(n, 1) - 1).bit_length())
        arena = Arena(f"{self.prefix}-{next(self._names)}", size)
        self._all[arena.path] = arena
        return arena

    def give(self, arena: Arena) -> None:
        if arena.path in self._all and arena.path not in self._leased:
            self._free.append(arena)

    def _unlease(self, arena: Arena) -> None:
        self._leased.discard(arena.path)
        self.give(arena)

    def drop(self, arena: Arena) -> None:
        self._all.pop(arena.path, None)
        arena.close()

    def attach(self, req: Any, big: Mapping[str, Any] | None) -> Grant | None:
        """Put ``big`` arguments into an arena and offer one for the result when the tool is
        known to return large bytes; references go into ``req.metadata``."""
        if not big and req.tool_name not in self.result_sizes and shm.OUT not in req.metadata:
            return None  # the usual call (result_sizes holds only tools over the threshold)
        if big or shm.OUT in req.metadata:  # references from an earlier attempt
            for key in [k for k in req.metadata if k.startswith((shm.ARG, shm.OUT))]:
                del req.metadata[key]
        parts = {name: codec.raw_parts(v) for name, v in big.items()} if big else {}
        total = sum(codec.raw_size(d) for d, _ in parts.values())
        want_out = max(self.result_sizes.get(req.tool_name, 0), total)
        if not parts and want_out < self.threshold:
            return None
        grant = Grant(self)
        if parts:
            arena = self.take(total)
            grant.arenas.append(arena)
            offset = 0
            for name, (data, layout) in parts.items():
                n = codec.raw_size(data)
                arrow.copy_into(arena.mm, offset, data)
                req.metadata[shm.ARG + name] = f"{arena.path}:{offset}:{n}"
                if layout is not None:
                    req.metadata[arrays.PARAM + name] = layout
                offset += n
        if want_out >= self.threshold:
            out = self.take(want_out)
            grant.arenas.append(out)
            req.metadata[shm.OUT] = f"{out.path}:{out.size}"
        return grant

    def read_result(self, spec: str, layout: str | None = None) -> Any:
        """The result's bytes (or array, given its layout), copied out of the arena."""
        path, offset, size = shm.parse(spec)
        arena = self._all.get(path)
        if arena is None or offset + size > arena.size:
            raise ValueError(f"the worker named an unknown arena region {spec!r}")
        if layout is None:
            return arena.mm[offset:offset + size]
        if not self.views:
            return arrays.from_raw(arena.mm, offset, layout)
        # The lease's anchor: NumPy keeps the exporting object of a buffer alive through
        # every view, and a ctypes array (unlike a memoryview, which NumPy re-wraps) is one.
        buffer = (ctypes.c_char * size).from_buffer(arena.mm, offset)
        value = arrays.from_raw(buffer, 0, layout, copy=False)
        self._leased.add(arena.path)
        weakref.finalize(buffer, _lease_ended, self._loop, self._unlease, arena)
        return value

    def expects_large_result(self, tool: str) -> bool:
        """Whether the tool's next call will be offered a result arena (see `attach`)."""
        return self.result_sizes.get(tool, 0) >= self.threshold

    def note_result(self, tool: str, n: int) -> None:
        """The tool's last result was ``n`` raw bytes (0: not bytes): when large, its next
        call is offered a result arena that size."""
        if n >= self.threshold:
            self.result_sizes[tool] = n
        else:
            self.result_sizes.pop(tool, None)

    def close(self) -> None:
        for arena in list(self._all.values()):
            arena.close()  # a leased one stays mapped (unlinked) until its views are gone
        self._all.clear()
        self._free.clear()


def _lease_ended(loop: asyncio.AbstractEventLoop | None, unlease: Any, arena: Arena) -> None:
    """The last view of a leased arena is gone (any thread): back to the free list, on the
    pool's loop, which owns it."""
    if loop is not None and not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(unlease, arena)

