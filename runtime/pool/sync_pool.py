"""`Pool` and `Pools`: the synchronous API, the same async core run on a private loop thread.

    with Pool(size=2) as pool:
        pool.execute("add", {"a": 1, "b": 2})           # -> 3
        fut = pool.submit("ping")                        # concurrent.futures.Future
        for item in pool.stream("stream_count", {"n": 3}):
            ...
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..config import PitConfig, PoolConfig, load_config, make_pool_config
from ..errors import PoolNotFound, ShutdownError
from ..telemetry import tracing
from ..telemetry.control import TelemetryControl
from . import direct
from .core import Facade, PoolCore, affinity_mode
from .host.host_tools import ParamSpecs
from .host.instance import HostInstance
from .host.loop_thread import LoopThread
from .mapping import map_sync
from .pool_choice import choose_default
from .session_handle import SessionHandle
from .stats import PoolStats
from .stream_run import Stream

# Every open Pool / Pools, closed at interpreter exit. Held strongly: a pool whose last
# reference is dropped still has its loop thread and workers, and must still be closed.
_live: set[Any] = set()
_live_lock = threading.Lock()


@atexit.register
def _close_all() -> None:
    with _live_lock:
        owners = list(_live)
    for owner in owners:
        try:
            owner.close()
        except Exception:  # noqa: BLE001, S110 - best effort at exit
            pass


def close_open_pools(instance_ids: Collection[str]) -> int:
    """Close every open `Pool` / `Pools` of these host instances; returns how many. The pytest
    plugin's leak check calls it: a pool a test forgot to close would otherwise replace the
    workers the check stops."""
    with _live_lock:
        owners = [o for o in _live if o.instance.id in instance_ids]
    for owner in owners:
        owner.close()
    return len(owners)


class CallFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """A submitted call's Future; `Pool.cancel` uses ``cancel_call`` to stop it in its
    worker once it runs."""

    cancel_call: Callable[[], None] | None = None


class Pool(Facade):
    """A pool of worker processes with a blocking API (thread-safe)."""

    def __init__(self, config: PoolConfig | None = None, **options: Any) -> None:
        self._loop = LoopThread()
        self._owner = True
        self._core = self._loop.run(_make(config, options))
        with _live_lock:
            _live.add(self)

    @classmethod
    def _attached(cls, core: PoolCore, loop: LoopThread) -> Pool:
        self = cls.__new__(cls)
        self._loop, self._core, self._owner = loop, core, False
        return self

    def start(self, *, wait: bool = True) -> Pool:
        self._loop.run(self._core.start(wait=wait))
        return self

    def await_ready(self, timeout: float | None = None) -> None:
        self._loop.run(self._core.await_ready(timeout))

    def close(self, grace: float | None = None) -> None:
        """Drain (calls in flight get ``grace`` seconds, default shutdown_grace_ms), stop every
        worker, free the loop thread. Idempotent. Streams still open are stopped at once: a
        consumer still reading one gets what was buffered, then ShutdownError."""
        if self._loop.loop.is_closed():
            return
        if self._owner:
            self._loop.run(_stop_streams(self._loop))
            self._loop.run(self._core.close(grace))
            self._loop.stop()
            with _live_lock:
                _live.discard(self)

    def __enter__(self) -> Pool:
        if self._core.state == "new":
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, tool: str, args: Mapping[str, Any] | None = None, *,
                session_id: str | None = None, timeout: float | None = None,
                metadata: Mapping[str, str] | None = None,
                idempotent: bool | None = None, affinity: str | None = None) -> Any:
        """Call ``tool`` and wait for its result (see AsyncPool.execute).

        While the pool is otherwise idle, the call runs on a worker lent to this thread, which
        talks to it directly, without the loop thread in between (see `runtime.pool.direct`;
        ``direct_calls = false`` turns that off)."""
        if self._loop.in_loop():
            raise RuntimeError("sync pit calls cannot be made from pit's own event loop")
        core = self._core
        fut: concurrent.futures.Future[Any]
        if core.lending.enabled and session_id is None:
            big: dict[str, Any] = {}
            req = core.prepare(tool, args, session_id, metadata, big)
            lend = False
            if not big:
                value = direct.call(core, self._loop, req, core.budget(timeout), idempotent)
                if value is not direct.FALLBACK and value is not direct.ASK:
                    return value
                lend = value is direct.ASK
            fut = self._submit_prepared(req, timeout, idempotent, affinity, big, lend)
        else:
            fut = self.submit(tool, args, session_id=session_id, timeout=timeout,
                              metadata=metadata, idempotent=idempotent, affinity=affinity)
        try:
            return fut.result()
        except BaseException:
            self.cancel(fut)  # e.g. KeyboardInterrupt: leave the queue, stop the call
            raise

    def map(self, tool: str, items: Iterable[Mapping[str, Any]], *,
            chunksize: int | None = None, ordered: bool = True,
            return_exceptions: bool = False, timeout: float | None = None) -> Iterator[Any]:
        """Call ``tool`` once per argument dict of ``items``; yields the results as they come
        (in order unless ``ordered=False``). Items travel in chunks, one call per chunk
        (``chunksize``, default: sized from the measured cost per item). An item that fails
        raises its error here (the calls not yet sent are cancelled), or is yielded as the
        exception with ``return_exceptions=True``. ``timeout`` bounds the whole map. Items and
        results are JSON values (bytes: use submit/execute).

            squares = list(pool.map("square", ({"x": i} for i in range(10_000))))
        """
        return map_sync(self, tool, items, chunksize=chunksize, ordered=ordered,
                        return_exceptions=return_exceptions, timeout=timeout)

    def cancel(self, fut: concurrent.futures.Future[Any]) -> None:
        """Cancel a submitted call: out of the queue, or cancelled in its worker. Its future
        raises CancelledError from now on (unless its result came first)."""
        if fut.cancel():  # not dispatched yet
            return
        cancel = getattr(fut, "cancel_call", None)
        if cancel is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.loop.call_soon_threadsafe(cancel)
        # A call cancelled in its worker delivers nothing: its waiter would wait for ever.
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if not fut.done():
                fut.set_exception(concurrent.futures.CancelledError("call cancelled by the "
                                                                    "caller"))

    def submit(self, tool: str, args: Mapping[str, Any] | None = None, *,
               session_id: str | None = None, timeout: float | None = None,
               metadata: Mapping[str, str] | None = None,
               idempotent: bool | None = None,
               affinity: str | None = None) -> concurrent.futures.Future[Any]:
        """Start a call and return a Future for its result (bad input raises here)."""
        if self._loop.in_loop():
            raise RuntimeError("sync pit calls cannot be made from pit's own event loop")
        # Encoding happens in the caller's thread; only dispatch crosses to the loop, as a
        # plain callback (no task), and a burst of submits wakes the loop once.
        big: dict[str, Any] = {}
        req = self._core.prepare(tool, args, session_id, metadata, big)
        return self._submit_prepared(req, timeout, idempotent, affinity, big)

    def _submit_prepared(self, req: Any, timeout: float | None, idempotent: bool | None,
                         affinity: str | None, big: dict[str, Any],
                         lend: bool = False) -> CallFuture:
        result = CallFuture()
        self._loop.call_soon(self._dispatch, req, timeout, result, idempotent, affinity, big,
                             lend)
        return result

    def _dispatch(self, req: Any, timeout: float | None,
                  result: CallFuture, idempotent: bool | None,
                  affinity: str | None, big: dict[str, Any], lend: bool) -> None:
        if not result.set_running_or_notify_cancel():
            # cancelled before the loop took it: no CallRun will end its span
            tracing.finish(req, None, cancelled=True)
            return
        if lend:  # the caller found no lent worker free: lend one once the pool is idle
            self._core.lending.want()

        def deliver(value: Any, err: BaseException | None) -> None:
            # The call holds this future and the future its call's cancel: break that cycle,
            # so the result is freed when the caller drops it, not at the next gc run.
            result.cancel_call = None
            try:
                if err is not None:
                    result.set_exception(err)
                else:
                    result.set_result(value)
            except concurrent.futures.InvalidStateError:  # `cancel` ended it first
                pass

        try:
            cancel = self._core.dispatch(req, timeout, deliver, idempotent=idempotent,
                                         affinity=affinity, big=big)
        except BaseException as exc:  # noqa: BLE001 - e.g. a bad timeout
            result.set_exception(exc)
            return
        if not result.done():
            result.cancel_call = cancel

    def stream(self, tool: str, args: Mapping[str, Any] | None = None, *,
               session_id: str | None = None, timeout: float | None = None,
               metadata: Mapping[str, str] | None = None) -> Stream:
        """Call a generator tool; iterate over what it yields (closing early cancels it).
        Once it ended, the stream's ``summary`` says how it went (chunks, bytes, duration,
        outcome, and what the worker's closing chunk reported: `stream_run.StreamSummary`).

        A task on the loop pumps chunks into a bounded buffer (STREAM_BUFFER items) that this
        iterator drains a batch at a time: one thread hand-off per batch, not per chunk, and a
        slow consumer still slows the worker down (backpressure)."""
        req = self._core.prepare(tool, args, session_id, metadata)
        stream = Stream(req)
        stream.items = self._drain(self._core.stream(req, timeout, stream.ended))
        return stream

    def _drain(self, agen: AsyncGenerator[Any, None]) -> Iterator[Any]:
        # (a pool closed before the first read: ShutdownError from the loop thread's `run`)
        buffer: _Buffer = self._loop.run(_make_queue())
        closed = threading.Event()  # the core's stream has ended: its worker is free
        pump = _pump(agen, buffer, closed, self._loop)
        task = self._loop.submit(pump)  # a close since: ShutdownError, the pump closed
        try:
            while True:
                if self._loop.loop.is_closed():  # the pool closed, which stopped this stream:
                    items = [*buffer.left(), _Failed(ShutdownError(  # what it had is all
                        f"pool {self._core.name!r} closed while this stream was open"))]
                else:
                    items = self._loop.run(_take(buffer))
                for item in items:
                    if item is _END:
                        return
                    if isinstance(item, _Failed):
                        raise item.error
                    yield item
        finally:
            # Once the loop is closed nothing can end the stream any more: its pool's close
            # did (`_stop_streams`). Waiting would only block this thread, which may be any
            # thread: the garbage collector's, freeing a stream left open.
            if not task.done() and not self._loop.loop.is_closed():
                task.cancel()
                try:
                    task.result(STOP_STREAM_S)
                except BaseException:  # noqa: BLE001 - cancelled, or the error already raised
                    pass
                # a cancelled future is done at once, its task not: wait for the stream's end
                # (so that `summary` is set and the worker free once close() returns)
                if not self._loop.in_loop():
                    closed.wait(STOP_STREAM_S)

    def session(self, session_id: str | None = None, ttl_s: float | None = None,
                affinity: str | None = None) -> SessionHandle:
        """Open (or reopen) a session; use it as a context manager to close it at the end."""
        mode = affinity_mode(affinity or self.config.affinity)
        session = self._loop.run(_open_session(self._core, session_id, ttl_s))
        return SessionHandle(self, session.id, mode)

    def close_session(self, session_id: str) -> bool:
        return self._loop.run(self._core.close_session(session_id))

    def recycle(self, worker_id: str, *, wait: bool = True) -> None:
        """Replace one worker with a fresh process, without downtime (reason "manual"); see
        `AsyncPool.recycle`."""
        self._loop.run(self._core.recycle(worker_id, "manual", wait))

    def telemetry_control(self, *, enabled: bool | None = None, sample: float | None = None,
                          allow: Iterable[str] | None = None,
                          deny: Iterable[str] | None = None) -> TelemetryControl:
        """Which of its events the pool's workers send, from now on (and every worker started
        later); returns once every ready worker applies it. See `AsyncPool.telemetry_control`.

            pool.telemetry_control(sample=0.1, deny=["adapter.cache.*"])
        """
        return self._loop.run(self._core.control_telemetry(enabled, sample, allow, deny))

    def reset_circuit(self) -> bool:
        """Close the crash barrier's circuit by hand (``pool.circuit.closed``, reason manual):
        calls go through again at once. False if it was closed. Poisoned calls stay
        refused."""
        return self._loop.run(_reset_circuit(self._core))

    def tools(self) -> list[dict[str, Any]]:
        return self._core.tools()

    def stats(self) -> PoolStats:
        """A snapshot of the pool and its workers, taken on the pool's loop: the loop owns
        that state, and reading it from this thread raced with recycling."""
        if self._loop.in_loop() or not self._loop.loop.is_running():  # or closed: all still
            return self._core.stats()
        return self._loop.run(_stats(self._core))

    def pids(self) -> list[int]:
        return self._core.pids()


STREAM_BUFFER = 256  # chunks buffered on the host per stream
STOP_STREAM_S = 5.0
_END = object()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _reset_circuit(core: PoolCore) -> bool:
    return core.reset_circuit()


async def _stats(core: PoolCore) -> PoolStats:
    return core.stats()


class _Buffer(asyncio.Queue):  # type: ignore[type-arg]
    """A stream's chunks between its pump (on the loop) and its consumer (another thread):
    an asyncio.Queue, whose items are in its deque ``_queue``."""

    _queue: collections.deque[Any]

    def end_now(self, last: Any) -> None:
        """Put ``last`` without waiting (a consumer blocked in `_take` wakes up); a full
        buffer loses its newest item for it, so that what the consumer reads is still the
        stream's beginning, with no gap, then ``last``."""
        if self.full():
            self._queue.pop()
        self.put_nowait(last)

    def left(self) -> list[Any]:
        """Everything it holds, taken from any thread once its loop is closed (nothing
        runs there any more, nor wakes a pump)."""
        items = list(self._queue)
        self._queue.clear()
        return items


async def _make_queue() -> _Buffer:
    return _Buffer(maxsize=STREAM_BUFFER)


async def _pump(agen: AsyncGenerator[Any, None], buffer: _Buffer,
                closed: threading.Event, loop: LoopThread) -> None:
    task = asyncio.current_task()
    assert task is not None
    pumps = loop.stream_pumps
    pumps.add(task)
    try:
        if loop.streams_stopped:  # opened as its pool closed: `_stop_streams` came first
            raise ShutdownError("the stream was stopped: its pool closed")
        async for item in agen:
            await buffer.put(item)
        await buffer.put(_END)
    except asyncio.CancelledError:  # the consumer closed it, or the pool closes: a consumer
        buffer.end_now(_Failed(ShutdownError(  # still reading gets what it has, then this
            "the stream was stopped: its pool closed")))
        raise
    except GeneratorExit:  # its coroutine closed (never run on the loop again): nobody reads
        raise
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
        await buffer.put(_Failed(exc))
    finally:
        pumps.discard(task)
        try:
            await agen.aclose()
        finally:
            closed.set()


async def _stop_streams(loop: LoopThread) -> None:
    """Before a pool's close: stop the streams still open on its loop (their consumer raised,
    or dropped them while something still held them, such as a traceback). Left to run, a
    pump waits on its full buffer for ever, holds its worker busy (the close then waits its
    whole grace, then kills it), and stays pending on the closed loop: freeing it later, on
    whatever thread the garbage collector runs, blocked that thread STOP_STREAM_S and failed
    with 'Task was destroyed but it is pending' and 'bound to a different event loop'."""
    loop.streams_stopped = True  # and a pump that starts later stops at once
    pumps = list(loop.stream_pumps)  # a `Pools` set's pools share one loop
    for task in pumps:
        task.cancel()
    if pumps:
        await asyncio.wait(pumps, timeout=STOP_STREAM_S)


async def _take(buffer: asyncio.Queue[Any]) -> list[Any]:
    """At least one item, and whatever else is already buffered."""
    items = [await buffer.get()]
    while not buffer.empty() and len(items) < STREAM_BUFFER:
        items.append(buffer.get_nowait())
    return items


async def _open_session(core: PoolCore, session_id: str | None, ttl_s: float | None) -> Any:
    return core.open_session(session_id, ttl_s)


async def _make(config: PoolConfig | None, options: dict[str, Any]) -> PoolCore:
    if config is not None and options:
        raise TypeError("pass either a PoolConfig or keyword options, not both")
    return PoolCore(config or make_pool_config(options.pop("name", "default"), **options))


class Pools(Mapping[str, Pool]):
    """Every pool of a config, sharing one host instance: ``pools["name"].execute(...)``."""

    __hash__ = object.__hash__  # Mapping defines __eq__; identity is what we track

    def __init__(self, config: PitConfig, *, only: list[str] | None = None,
                 python_path: list[str] | None = None) -> None:
        selected = list(config.pools) if not only else only
        for name in selected:
            if name not in config.pools:
                raise PoolNotFound(f"no pool named {name!r} in {config.path or 'the defaults'}",
                                   hint=f"pools defined: {', '.join(config.pools)}")
        self.config = config
        if config.telemetry.otel:
            tracing.setup_from_env()
        self._loop = LoopThread()
        paths = [*(python_path or []), str(config.path.parent if config.path else Path.cwd())]
        self.instance = HostInstance(config.state_dir, python_path=paths,
                                     config_path=config.path,
                                     prometheus_port=config.telemetry.prometheus_port,
                                     tool_token=config.tool_bridge.token,
                                     tool_port=config.tool_bridge.tcp_port)
        self.instance.pool_names = list(selected)
        self.instance.default_pool = config.default_pool  # for ExecuteTool, as for execute()
        self._pools: dict[str, Pool] = {}
        for name in selected:
            core = self._loop.run(_attach(config.pools[name], self.instance))
            self._pools[name] = Pool._attached(core, self._loop)
        self._closed = False
        self.failed: dict[str, Exception] = {}  # pools that could not start, and why
        with _live_lock:
            _live.add(self)

    @classmethod
    def from_config(cls, path: str | Path | None = None, *, only: list[str] | None = None,
                    python_path: list[str] | None = None) -> Pools:
        return cls(load_config(path), only=only, python_path=python_path)

    def __getitem__(self, name: str) -> Pool:
        try:
            return self._pools[name]
        except KeyError:
            raise PoolNotFound(f"no pool named {name!r}; pools: {', '.join(self._pools)}",
                               hint="pick one of the pools above") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._pools)

    def __len__(self) -> int:
        return len(self._pools)

    def default(self, tool: str | None = None) -> Pool:
        """The pool a call names none for (`pool_choice.choose_default`): the config's
        ``default_pool``, else the pool named "default" or the only pool, else (given ``tool``)
        the only pool whose workers have that tool; otherwise PoolNotFound naming them."""
        def has_tool(name: str) -> bool:
            return tool is not None and self._pools[name]._core.tool_spec(tool) is not None

        return self._pools[choose_default(
            tool, list(self._pools), has_tool, preferred=self.config.default_pool,
            how_to_name="runtime.execute(tool, args, pool=NAME) / pools[NAME].execute(...)")]

    def register_host_tool(self, name: str, fn: Callable[..., Any], *,
                           description: str | None = None,
                           parameters: ParamSpecs | None = None,
                           session_id: str | None = None) -> None:
        """A host tool for every pool of the set: see `AsyncPool.register_host_tool`."""
        self.instance.register_host_tool(name, fn, description=description,
                                         parameters=parameters, session_id=session_id)

    def unregister_host_tool(self, name: str, *, session_id: str | None = None) -> bool:
        """See `AsyncPool.unregister_host_tool`."""
        return self.instance.unregister_host_tool(name, session_id=session_id)

    def start(self, *, wait: bool = True) -> Pools:
        """Start every pool concurrently. A pool that fails to start does not stop the others:
        it is listed in ``failed`` and calls to it raise PoolNotReady naming the cause. Only
        when every pool fails does this raise (the first pool's error)."""
        async def start_all() -> list[Any]:
            await self.instance.start()
            import asyncio
            return await asyncio.gather(*(p._core.start(wait=wait)
                                          for p in self._pools.values()),
                                        return_exceptions=True)
        try:
            results = self._loop.run(start_all())
        except BaseException:
            self.close()
            raise
        for name, result in zip(self._pools, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    self.close()
                    raise result
                self.failed[name] = result
        if self.failed and len(self.failed) == len(self._pools):
            first = next(iter(self.failed.values()))
            self.close()
            raise first
        return self

    def close(self, grace: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True

        async def close_all() -> None:
            import asyncio
            await asyncio.gather(*(p._core.close(grace) for p in self._pools.values()),
                                 return_exceptions=True)
            await self.instance.close()
        self._loop.run(_stop_streams(self._loop))
        self._loop.run(close_all())
        self._loop.stop()
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> Pools:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _attach(config: PoolConfig, instance: HostInstance) -> PoolCore:
    return PoolCore(config, instance)
