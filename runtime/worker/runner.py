"""Runs tool calls inside the worker: decode -> validate -> call the adapter -> encode.

Nothing a caller sends escapes as an exception: every failure becomes an error response with a
category, so the worker keeps serving. Cancellation (deadline passed on the host, or an explicit
cancel on the call lane) sets ``ctx.cancelled``, cancels an async tool's task, and raises
`CallCancelled` inside a sync tool's thread at its next Python bytecode.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import struct
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

import orjson

from ..protocol import arrays, codec, graceful, pb, shm
from . import stream_batch, tracing
from .adapter import ArgumentError, ToolInfo
from .context import HostClient, SessionContext, current_call
from .sessions import SessionTable

# The host reads this after a crash to tell the call that was running (the culprit) from
# calls that had finished and calls that never started (those it can safely run elsewhere).
_PROGRESS = struct.Struct("<QQ")
MAX_EARLY_CANCELS = 10_000
PROGRESS_SIZE = _PROGRESS.size
MAP_FLAG = codec.MAP_FLAG


class CallCancelled(BaseException):
    """Raised inside a sync tool whose call was cancelled (BaseException: tools rarely catch it)."""


class _Running:
    __slots__ = ("ctx", "thread_id", "future")

    def __init__(self, ctx: SessionContext, thread_id: int) -> None:
        self.ctx = ctx
        self.thread_id = thread_id
        self.future: Any = None  # concurrent future of an async tool


class ToolRunner:
    def __init__(self, adapter: Any, tools: dict[str, ToolInfo], *, host: HostClient,
                 allow_pickle: bool = False, threads: int = 1,
                 session_table: SessionTable | None = None,
                 result_policy: graceful.ResultPolicy | None = None) -> None:
        self.adapter = adapter
        self.threads = threads
        # Every call and stream holds one of these while it runs: at most `threads` at once,
        # whichever RPC brought them (the lane, a stream, plain ExecuteTool).
        self.slots: Any = threading.BoundedSemaphore(threads) if threads > 1 else threading.Lock()
        self.serial = threading.Lock()  # thread_sensitive tools run one at a time
        self.tools = tools
        self.host = host
        self.allow_pickle = allow_pickle
        # what becomes of results JSON cannot hold (graceful by default; main.py decides)
        self.result_policy = graceful.resolve() if result_policy is None else result_policy
        self.shm_paths = True  # follow shared-memory paths a call names (main.py decides)
        self.sessions: dict[str, dict[str, Any]] = {}  # tool-visible state per session
        # sessions opened with InitializeSession (bounded: max_sessions, session_ttl_s)
        self.session_table = SessionTable(10_000, 3600.0) if session_table is None \
            else session_table
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        self._running: dict[int, _Running] = {}
        self._cancelled_early: set[int] = set()
        self._last_done = 0  # lane calls run in call-id order: ids up to this one are over
        self.progress: Any = None  # mmap shared with the host: (running id, last done id)
        self._avg_ms: dict[str, float] = {}  # per tool: exponential average of run time
        self._lock = threading.Lock()

    # --- async support ------------------------------------------------------------------------
    def loop(self) -> asyncio.AbstractEventLoop:
        """The worker's event loop for async tools (a daemon thread, started on first use)."""
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="pit-async-tools",
                                 daemon=True).start()
                self._loop = loop
            return self._loop

    # --- lookup -------------------------------------------------------------------------------
    def _lookup(self, name: str) -> ToolInfo:
        info = self.tools.get(name)
        if info is None:
            raise _ToolMissing(name, sorted(self.tools))
        return info

    def _context(self, req: Any, timeout_ms: float) -> SessionContext:
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else None
        if req.session_id:
            self.session_table.touch(req.session_id)
        return SessionContext(session_id=req.session_id, metadata=dict(req.metadata),
                              tool_name=req.tool_name, deadline=deadline,
                              sessions=self.sessions, host=self.host)

    def _prepare(self, req: Any, timeout_ms: float) -> tuple[ToolInfo, dict[str, Any],
                                                               SessionContext]:
        info = self._lookup(req.tool_name)
        try:
            args = codec.decode_params(req, allow_pickle=self.allow_pickle)
        except codec.CodecError as exc:
            raise ArgumentError(str(exc)) from None
        info.bind(args)
        ctx = self._context(req, timeout_ms)
        if info.wants_ctx:
            args["ctx"] = ctx
        return info, args, ctx

    # --- unary --------------------------------------------------------------------------------
    def run(self, req: Any, *, call_id: int = 0, timeout_ms: float = 0.0) -> Any:
        """Execute one call and return its ExecuteToolResponse (never raises)."""
        if tracing.TRACEPARENT in req.metadata:  # the host traces this call
            span = tracing.begin(req, **({"pit.map": True} if req.metadata.get(MAP_FLAG)
                                         else {}))
            resp = self._run(req, call_id, timeout_ms)
            if span is not None:
                span.end(None if resp.success else resp.error_message)
            return resp
        return self._run(req, call_id, timeout_ms)

    def _run(self, req: Any, call_id: int, timeout_ms: float) -> Any:
        if not self.shm_paths:
            _drop_shm_paths(req)
        if req.metadata.get(MAP_FLAG):
            return self._run_map(req, call_id, timeout_ms)
        started = time.perf_counter()
        resp = pb.ExecuteToolResponse()
        try:
            info, args, ctx = self._prepare(req, timeout_ms)
            if info.streaming:
                raise ArgumentError(f"tool {info.name!r} streams its results; call it with "
                                    "stream() instead of execute()")
            value = self._invoke(info, args, ctx, call_id)
            codec.encode_result(resp, value, allow_pickle=self.allow_pickle,
                                shm_out=req.metadata.get(shm.OUT),
                                raw_arrays_from=int(req.metadata.get(arrays.WANTED, 0)),
                                tool_name=info.name, policy=self.result_policy)
        except BaseException as exc:  # noqa: BLE001 - a call must never take the worker down
            resp = error_response(exc, req)
        took_ms = (time.perf_counter() - started) * 1000
        resp.execution_time_ms = int(took_ms)
        avg = self._avg_ms.get(req.tool_name)
        self._avg_ms[req.tool_name] = took_ms if avg is None else avg + (took_ms - avg) * 0.2
        return resp

    def _run_map(self, req: Any, call_id: int, timeout_ms: float) -> Any:
        """One chunk of `pool.map`: the tool once per item of ``items`` (a JSON list of
        argument dicts). The result is ``{"took_ms", "results": [["ok", value] |
        ["err", error payload], ...]}``: one item's failure never costs the others. Once the
        chunk is cancelled or past its deadline, the items left are answered as timed out."""
        started = time.perf_counter()
        resp = pb.ExecuteToolResponse()
        try:
            info = self._lookup(req.tool_name)
            if info.streaming:
                raise ArgumentError(f"tool {info.name!r} streams its results; map() needs a "
                                    "tool that returns a value")
            items = codec.decode_params(req).get("items")
            if not isinstance(items, list):
                raise ArgumentError("a map chunk carries its items as a JSON list")
        except BaseException as exc:  # noqa: BLE001
            return error_response(exc, req)
        ctx = self._context(req, timeout_ms)
        out: list[Any] = []
        stopped: BaseException | None = None
        for i, args in enumerate(items):
            if stopped is None and (ctx.cancelled.is_set() or (
                    ctx.deadline is not None and time.monotonic() > ctx.deadline)):
                stopped = CallCancelled("the map chunk was cancelled or ran out of time "
                                        "before this item")
            if stopped is not None:
                out.append(["err", self._payload(stopped, req)])
                continue
            try:
                if not isinstance(args, dict):
                    raise ArgumentError(f"map item {i} must be a mapping of arguments, got "
                                        f"{type(args).__name__}")
                info.bind(args)
                if info.wants_ctx:
                    args["ctx"] = ctx
                value = self._invoke(info, args, ctx, call_id)
                out.append(["ok", orjson.Fragment(codec.dumps_result(
                    value, info.name, policy=self.result_policy))])
            except CallCancelled as exc:
                stopped = exc
                out.append(["err", self._payload(exc, req)])
            except BaseException as exc:  # noqa: BLE001 - one item never takes the chunk down
                out.append(["err", self._payload(exc, req)])
        took_ms = (time.perf_counter() - started) * 1000
        resp.result.type_url = codec.RESULT_URL + "map"
        resp.result.value = orjson.dumps({"took_ms": took_ms, "results": out})
        resp.success = True
        resp.execution_time_ms = int(took_ms)
        return resp

    @staticmethod
    def _payload(exc: BaseException, req: Any) -> dict[str, Any]:
        if isinstance(exc, SystemExit):
            exc = RuntimeError(f"tool called sys.exit({exc.code!r}); the worker kept running")
        return codec.error_payload(exc, tool_name=req.tool_name, session_id=req.session_id,
                                   category=_category(exc))

    def expected_ms(self, tool_name: str) -> float:
        """How long a call to this tool usually takes here (inf: never seen)."""
        return self._avg_ms.get(tool_name, float("inf"))

    def _invoke(self, info: ToolInfo, args: dict[str, Any], ctx: SessionContext,
                call_id: int) -> Any:
        running = _Running(ctx, threading.get_ident())
        token = current_call.set(ctx)
        try:
            with self._lock:
                if call_id in self._cancelled_early:
                    self._cancelled_early.discard(call_id)
                    raise CallCancelled("call was cancelled before it started")
                if call_id:
                    self._running[call_id] = running
                    if self.progress is not None:
                        _PROGRESS.pack_into(self.progress, 0, call_id, self._last_done)
            try:
                with self.slots, (self.serial if info.thread_sensitive and self.threads > 1
                                  else contextlib.nullcontext()):
                    return self._call_tool(info, args, ctx, running)
            finally:
                with self._lock:
                    self._running.pop(call_id, None)
        finally:
            current_call.reset(token)

    def _call_tool(self, info: ToolInfo, args: dict[str, Any], ctx: SessionContext,
                   running: _Running) -> Any:
        if info.kind == "async":
            fut = asyncio.run_coroutine_threadsafe(
                info.fn(self.adapter, **args), self.loop())  # the task copies our context
            running.future = fut
            try:
                return fut.result()
            except asyncio.CancelledError:
                raise CallCancelled("call was cancelled") from None
        return info.fn(self.adapter, **args)

    def cancel(self, call_id: int, *, only_running: bool = False) -> None:
        """Cancel a running call (or, unless ``only_running``, one that has not started)."""
        with self._lock:
            running = self._running.get(call_id)
            if running is None:
                if only_running:
                    return
                # One thread runs lane calls in id order, so ids up to _last_done are over;
                # with several threads they finish out of order and only a size cap helps.
                if call_id > self._last_done or self.threads > 1:
                    if len(self._cancelled_early) < MAX_EARLY_CANCELS:
                        self._cancelled_early.add(call_id)
                return
            running.ctx.cancelled.set()
            if running.future is not None:
                running.future.cancel()
            else:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(running.thread_id), ctypes.py_object(CallCancelled))

    def too_large_response(self, req: Any, size: int, limit: int,
                           what: str = "the result") -> Any:
        """The error answer for a result (or ``what`` else) over the message limit."""
        err = codec.ResultTooLarge(
            f"{what} of {req.tool_name!r} is {size / 2**20:.1f} MiB, over the "
            f"{limit / 2**20:.0f} MiB message limit (max_message_mb); return a path or a "
            "handle instead, or raise max_message_mb")
        return error_response(err, req)

    def cancelled_response(self, req: Any) -> Any:
        return error_response(CallCancelled("call was cancelled"), req)

    def forget(self, call_id: int) -> None:
        with self._lock:
            self._cancelled_early.discard(call_id)
            self._last_done = max(self._last_done, call_id)
            if self.progress is not None:
                _PROGRESS.pack_into(self.progress, 0, 0, self._last_done)

    # --- streaming ----------------------------------------------------------------------------
    def stream(self, req: Any, timeout_ms: float, is_active: Any,
               on_start: Any = None) -> Iterator[Any]:
        """Yield ToolChunks for a generator tool; raises StreamError on failure.

        ``on_start(ctx)`` lets the caller keep the context (to set ``ctx.cancelled`` when the
        RPC ends early)."""
        if not self.shm_paths:
            _drop_shm_paths(req)
        try:
            info, args, ctx = self._prepare(req, timeout_ms)
        except BaseException as exc:  # noqa: BLE001
            raise StreamError(error_response(exc, req).error_message) from None
        if not info.streaming:
            # A plain tool called as a stream yields its result as one final chunk.
            resp = self.run(req, timeout_ms=timeout_ms)
            if not resp.success:
                raise StreamError(resp.error_message)
            value = codec.decode_result(resp, allow_pickle=self.allow_pickle)
            yield codec.encode_chunk(value, info.name, 1, final=True, policy=self.result_policy)
            return
        started = time.perf_counter()
        if on_start is not None:
            on_start(ctx)
        if req.metadata.get(codec.STREAM_BATCH):
            yield from self._stream_batched(req, info, args, ctx, is_active, started)
            return
        n = 0
        span = tracing.begin(req, **{"pit.stream": True})
        error: str | None = None
        token = current_call.set(ctx)
        self.slots.acquire()  # a stream occupies a slot for as long as it runs
        try:
            items: Generator[Any, None, None] = (
                _iter_agen(self.loop(), ctx, info.fn(self.adapter, **args))
                if info.kind == "agen" else info.fn(self.adapter, **args))
            try:
                for item in items:
                    if not is_active() or ctx.cancelled.is_set():
                        ctx.cancelled.set()
                        return
                    n += 1
                    yield codec.encode_chunk(item, info.name, n, policy=self.result_policy)
            finally:
                items.close()  # GeneratorExit inside the tool: its finally blocks run now
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, GeneratorExit):
                ctx.cancelled.set()
                raise
            error = error_response(exc, req).error_message
            raise StreamError(error) from None
        finally:
            self.slots.release()
            if span is not None:
                span.end(error, {"pit.chunks": n})
            current_call.reset(token)
        yield codec.final_chunk(info.name, n + 1, (time.perf_counter() - started) * 1000)

    def _stream_batched(self, req: Any, info: ToolInfo, args: dict[str, Any],
                        ctx: SessionContext, is_active: Any, started: float) -> Iterator[Any]:
        """`stream` for a host that takes several items per chunk (`stream_batch`)."""
        policy = self.result_policy

        def encode(item: Any, n: int) -> tuple[bytes, bool]:
            if isinstance(item, (bytes, bytearray, memoryview)):
                return bytes(item), True
            return codec.dumps_result(item, info.name, f"yielded a value (chunk {n})",
                                      policy), False

        self.slots.acquire()  # held until the generator has stopped, on the producer's thread
        try:
            items: Iterator[Any] = (
                _iter_agen(self.loop(), ctx, info.fn(self.adapter, **args))
                if info.kind == "agen" else info.fn(self.adapter, **args))
        except BaseException as exc:  # noqa: BLE001
            self.slots.release()
            raise StreamError(error_response(exc, req).error_message) from None

        spans: list[tracing.ToolSpan | None] = []

        def setup() -> None:  # on the producer's thread: current_context() and the call's
            current_call.set(ctx)  # span (the tool's own spans nest under it) work in the tool
            spans.append(tracing.begin(req, **{"pit.stream": True}))

        def done() -> None:  # on the producer's thread, once the generator has stopped
            try:
                if spans and spans[0] is not None:
                    failed = producer.error
                    spans[0].end(None if failed is None else
                                 error_response(failed, req).error_message,
                                 {"pit.chunks": producer.count})
            finally:
                self.slots.release()

        producer = stream_batch.Producer(items, encode, ctx.cancelled, done, setup)
        producer.start()
        n = 1
        try:
            for ready in producer.batches(is_active):
                failed = ready[-1] if isinstance(ready[-1], stream_batch.Failed) else None
                if failed is not None:
                    ready.pop()
                yield from stream_batch.chunks(ready, info.name, n)
                n += len(ready)
                if failed is not None:
                    raise StreamError(error_response(failed.error, req).error_message)
            if ctx.cancelled.is_set():
                return
        finally:
            producer.stop()
        yield codec.final_chunk(info.name, n, (time.perf_counter() - started) * 1000)


class StreamError(Exception):
    """Ends a stream; the message is the JSON error payload."""


class _ToolMissing(LookupError):
    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(f"unknown tool {name!r}; available tools: {', '.join(available)}")


def _category(exc: BaseException) -> str:
    # The categories name the side at fault: the caller's (tool_not_found, invalid_argument),
    # the tool's result (result_*), the deadline, or the tool's own code (remote_error).
    return ("tool_not_found" if isinstance(exc, _ToolMissing)
            else "invalid_argument" if isinstance(exc, ArgumentError)
            else "timeout" if isinstance(exc, CallCancelled)
            else "result_too_large" if isinstance(exc, codec.ResultTooLarge)
            else "result_error" if isinstance(exc, codec.ResultNotEncodable)
            else "remote_error")


def error_response(exc: BaseException, req: Any, category: str | None = None) -> Any:
    category = category or _category(exc)
    if isinstance(exc, SystemExit):
        exc = RuntimeError(f"tool called sys.exit({exc.code!r}); the worker kept running")
    text = codec.encode_error(exc, tool_name=req.tool_name, session_id=req.session_id,
                              category=category)
    return pb.ExecuteToolResponse(success=False, error_message=text)


def _iter_agen(loop: asyncio.AbstractEventLoop, ctx: SessionContext,
               agen: Any) -> Generator[Any, None, None]:
    # Tasks started from this thread copy its context, so current_context() works inside.
    try:
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(agen.__anext__(), loop).result()
            except StopAsyncIteration:
                return
    finally:
        asyncio.run_coroutine_threadsafe(agen.aclose(), loop).result()


def _drop_shm_paths(req: Any) -> None:
    """Remove the shared-memory arena paths a call names (``pit_shm_arg:*``, ``pit_shm_out``):
    a worker reachable over TCP must not open files on a caller's say-so."""
    for key in [k for k in req.metadata if k.startswith(shm.ARG) or k == shm.OUT]:
        del req.metadata[key]
