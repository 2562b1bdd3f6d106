"""The built-in demo adapter: one tool per thing pit can do. The default pool runs it.

It runs in every profile: its tools keep no state between calls, or state that concurrent
calls cannot corrupt (``allocate`` appends to a list), except ``session_counter``, whose
read-then-write of the session's count is marked thread-sensitive (in the thread profile its
calls run one at a time).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

from runtime.worker import Adapter, SessionContext, tool


class ShowcaseAdapter(Adapter):
    thread_safe = True  # profile = "thread" may run its calls at once (see the docstring)

    def initialize(self) -> None:
        self.started_at = time.time()
        self.held: list[bytearray] = []

    @tool
    def ping(self) -> dict[str, Any]:
        """Answer with this worker's pid: a no-op round trip."""
        return {"pong": True, "pid": os.getpid()}

    @tool
    def echo(self, **kwargs: Any) -> dict[str, Any]:
        """Return the keyword arguments it was given."""
        return kwargs

    @tool
    def add(self, a: float, b: float) -> float:
        """a + b (integers stay integers)."""
        return a + b

    @tool
    def sleep(self, ms: float, ctx: SessionContext) -> dict[str, Any]:
        """Sleep ms milliseconds; wakes early (and says so) when the call is cancelled."""
        cancelled = ctx.cancelled.wait(ms / 1000)
        return {"slept_ms": ms, "cancelled": cancelled}

    @tool
    async def async_sleep(self, ms: float) -> dict[str, Any]:
        """The async flavour of sleep: cancellation cancels the task."""
        await asyncio.sleep(ms / 1000)
        return {"slept_ms": ms}

    @tool
    def fail(self, message: str = "requested failure") -> None:
        """Raise ValueError(message) inside the worker."""
        raise ValueError(message)

    @tool
    def crash(self, code: int = 1) -> None:
        """Exit the worker process at once with os._exit(code)."""
        os._exit(code)

    @tool
    def cpu_burn(self, ms: float) -> dict[str, Any]:
        """Spin the CPU for ms milliseconds; returns the loop count."""
        end = time.perf_counter() + ms / 1000
        n = 0
        while time.perf_counter() < end:
            n += 1
        return {"iterations": n, "pid": os.getpid()}

    @tool
    def allocate(self, mb: int) -> dict[str, Any]:
        """Allocate and hold mb MiB in this worker (touched, so it counts in RSS)."""
        block = bytearray(mb * 1024 * 1024)
        block[::4096] = b"\x01" * len(block[::4096])
        self.held.append(block)
        return {"held_mb": sum(len(b) for b in self.held) // (1024 * 1024)}

    @tool
    def stream_count(self, n: int, ctx: SessionContext,
                     delay_ms: float = 0) -> Iterator[dict[str, int]]:
        """Yield {"i": 1} .. {"i": n}, waiting delay_ms between items (stops on cancel)."""
        for i in range(1, n + 1):
            if delay_ms and ctx.cancelled.wait(delay_ms / 1000):
                return
            yield {"i": i}

    @tool
    def bytes_echo(self, data: bytes) -> bytes:
        """Return the bytes it was given (they travel raw, never as base64)."""
        return data

    @tool
    def identity(self, value: Any) -> Any:
        """Return its argument as it came: arrays, Arrow tables and DLPack tensors travel raw
        both ways."""
        return value

    @tool
    def with_opaque(self, opaque: bool = True) -> dict[str, Any]:
        """A result with one value JSON cannot hold (``opaque``; else None in its place): it
        comes back as a marker (`runtime.is_unserializable`), the rest as it is."""
        return {"ok": 1, "items": [1, 2, 3], "handle": object() if opaque else None}

    @tool(thread_sensitive=True)
    def session_counter(self, ctx: SessionContext) -> dict[str, Any]:
        """Count calls per session, in this worker's memory."""
        state = ctx.session
        state["count"] = state.get("count", 0) + 1
        return {"session_id": ctx.session_id, "count": state["count"], "pid": os.getpid()}

    @tool
    def call_host(self, name: str, ctx: SessionContext, **kwargs: Any) -> Any:
        """Call the host tool `name` with the remaining keyword arguments."""
        return ctx.call_host_tool(name, **kwargs)
