"""`AsyncPool`: the pool's asyncio API, a façade over its `PoolCore` (see `core` for the data
flow and the thread rules). Every method runs on the loop the pool was started on.

    async with AsyncPool(size=2) as pool:
        print(await pool.execute("add", {"a": 1, "b": 2}))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from ..config import PoolConfig, make_pool_config
from ..telemetry.control import TelemetryControl
from .core import Facade, PoolCore, affinity_mode
from .host.instance import HostInstance
from .mapping import map_async
from .session_handle import AsyncSession
from .stats import PoolStats
from .stream_run import AsyncStream


class AsyncPool(Facade):
    """A pool of worker processes, driven from asyncio.

        async with AsyncPool(size=2) as pool:
            print(await pool.execute("add", {"a": 1, "b": 2}))
    """

    def __init__(self, config: PoolConfig | None = None, *,
                 instance: HostInstance | None = None, **options: Any) -> None:
        if config is not None and options:
            raise TypeError("pass either a PoolConfig or keyword options, not both")
        config = config or make_pool_config(options.pop("name", "default"), **options)
        self._core = PoolCore(config, instance)

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self, *, wait: bool = True) -> AsyncPool:
        """Start the workers (start_batch at a time); with ``wait``, return once every one is
        ready. Without it, calls queue until workers are ready."""
        await self._core.start(wait=wait)
        return self

    async def await_ready(self, timeout: float | None = None) -> None:
        """Wait until every worker is ready; raises PoolNotReady on timeout."""
        await self._core.await_ready(timeout)

    async def close(self, grace: float | None = None) -> None:
        """Stop accepting, drain in-flight calls up to ``grace`` s, stop every worker.

        Idempotent. Queued calls fail with ShutdownError; nothing is left running.
        """
        await self._core.close(grace)

    async def __aenter__(self) -> AsyncPool:
        if self._core.state == "new":
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def recycle(self, worker_id: str, reason: str = "manual", *,
                      wait: bool = True) -> None:
        """Replace a worker with a fresh one, without downtime.

        The replacement starts and becomes ready first; then the old worker stops taking
        calls, finishes the ones it holds (up to shutdown_grace_ms) and stops. With
        ``wait=False`` this returns at once and the recycle goes on in the background (the
        pool's close stops it). A worker already being replaced, or not ready, is left be.
        """
        await self._core.recycle(worker_id, reason, wait)

    # --- calls ------------------------------------------------------------------------------
    async def execute(self, tool: str, args: Mapping[str, Any] | None = None, *,
                      session_id: str | None = None, timeout: float | None = None,
                      metadata: Mapping[str, str] | None = None,
                      idempotent: bool | None = None, affinity: str | None = None) -> Any:
        """Call ``tool`` with ``args`` on a worker and return its result.

        ``timeout`` (seconds) covers queueing and execution; None uses the pool's
        call_timeout_ms, ``float('inf')`` means no deadline. ``idempotent=True`` lets the
        call be retried on another worker if its worker dies (up to max_retries).
        ``affinity`` (hint, strict_queue, strict_fail_fast) overrides the pool's for a call
        with a ``session_id``.
        """
        big: dict[str, Any] = {}
        req = self._core.prepare(tool, args, session_id, metadata, big)
        return await self._core.call(req, timeout, idempotent=idempotent, affinity=affinity,
                                    big=big)

    def stream(self, tool: str, args: Mapping[str, Any] | None = None, *,
               session_id: str | None = None, timeout: float | None = None,
               metadata: Mapping[str, str] | None = None) -> AsyncStream:
        """Call a generator tool: ``async for`` the items it yields; once it ended, the
        stream's ``summary`` says how it went (`stream_run.StreamSummary`)."""
        req = self._core.prepare(tool, args, session_id, metadata)
        stream = AsyncStream(req)
        stream.items = self._core.stream(req, timeout, stream.ended)
        return stream

    def map(self, tool: str, items: Iterable[Mapping[str, Any]], *,
            chunksize: int | None = None, ordered: bool = True,
            return_exceptions: bool = False,
            timeout: float | None = None) -> AsyncIterator[Any]:
        """``async for result in pool.map(tool, items)``: see `Pool.map`."""
        return map_async(self, tool, items, chunksize=chunksize, ordered=ordered,
                         return_exceptions=return_exceptions, timeout=timeout)

    # --- sessions ---------------------------------------------------------------------------
    def session(self, session_id: str | None = None, ttl_s: float | None = None,
                affinity: str | None = None) -> AsyncSession:
        """Open (or reopen) a session: its calls prefer the worker that holds its state.

            async with pool.session() as s:
                await s.execute("session_counter")
        """
        mode = affinity_mode(affinity or self.config.affinity)
        return AsyncSession(self, self._core.open_session(session_id, ttl_s).id, mode)

    async def close_session(self, session_id: str) -> bool:
        """End a session: the worker holding it drops its state (on_session_end runs)."""
        return await self._core.close_session(session_id)

    # --- telemetry control, the circuit ---------------------------------------------------
    async def telemetry_control(self, *, enabled: bool | None = None,
                                sample: float | None = None,
                                allow: Iterable[str] | None = None,
                                deny: Iterable[str] | None = None) -> TelemetryControl:
        """Which of its events the pool's workers send, from now on (and every worker started
        later): ``enabled`` turns them all on or off, ``sample`` (0..1) keeps that fraction,
        ``allow`` / ``deny`` are globs on event names as subscribers see them
        (``"adapter.cache.*"``; deny wins; an empty allow allows all). A value left None is
        kept; with none given nothing is sent. Returns the control in force, once every ready
        worker applies it (Snakepit's bridge workers are not waited for). Muted events are
        never sent. Covers ``adapter.*`` and the worker runtime's events, not the host's.

            await pool.telemetry_control(sample=0.1, deny=["adapter.cache.*"])
            await pool.telemetry_control(enabled=True, sample=1.0, allow=[], deny=[])  # all again
        """
        return await self._core.control_telemetry(enabled, sample, allow, deny)

    def reset_circuit(self) -> bool:
        """Close the crash barrier's circuit by hand (``pool.circuit.closed``, reason manual):
        calls go through again at once. False if it was closed. Poisoned calls stay
        refused."""
        return self._core.reset_circuit()

    # --- introspection ----------------------------------------------------------------------
    def tools(self) -> list[dict[str, Any]]:
        """The adapter's tools as the workers announced them (name, parameters, streaming)."""
        return self._core.tools()

    def stats(self) -> PoolStats:
        """A frozen snapshot of the pool and its workers."""
        return self._core.stats()

    def pids(self) -> list[int]:
        """Pids of the pool's worker processes (safe to call from another thread)."""
        return self._core.pids()
