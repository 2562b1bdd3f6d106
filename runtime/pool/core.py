"""`PoolCore`: the one owner of a pool's state. `AsyncPool` and `Pool` are façades over it.

    caller's thread                       the pool's loop (one thread writes pool state)
    ---------------                       ------------------------------------------------
    AsyncPool / Pool (façades)
      prepare_call: check, encode  ---->  PoolCore.dispatch -> CallRun (call.py)
      (reads frozen values only:            -> Scheduler: a free slot, else the FIFO queue
       config, limits, tools, state)           (session_slot for a session's calls)
                                            -> worker transport (WorkerHandle.send: lane or
                                               unary gRPC) -> worker process -> adapter tool
                                            <- on_done(answer | error), from the lane reader
                                            -> call.outcome: rerun / retry / the result or
                                               the PitError (the one outcome function)
      deliver(value, err)          <----    -> metrics, breaker, pool.call.* telemetry, the
                                               call's OTel span (opened in prepare_call, on
                                               the caller's thread: telemetry.tracing)
    direct.call on a lent worker   --report->  Lending.settle: counters, breaker, telemetry
    Pool.stats()                   --hop--->  PoolCore.stats(): a frozen snapshot
    Pool.stream() -> Stream        --pump-->  PoolCore.stream: StreamRun counts it, its
      .summary once it ended                  pool.stream.* events (stream_run.py)
    Pool.telemetry_control()       --hop--->  PoolCore.control_telemetry -> every worker's
                                              telemetry relay (acknowledged); new workers get
                                              PoolCore.telemetry before their first call

    worker events ----> PoolCore.worker_ready / slot_freed / worker_leaving / worker_gone
    Lifecycle (size, replacement, recycling, heartbeats, sampling, session expiry) and
    Lending (workers lent to blocking callers) are the core's parts: they run on the loop
    and change pool state through the core's hooks.

Thread rules: every method here runs on the pool's loop, except these, which any thread
may call: `prepare` (with `tools`, `tool_spec`, `knows_tools` and `budget`: they read
frozen values: the config, the tools mapping, which is replaced whole, never changed),
`correlation_id` (its ids are taken under a lock), `pids` (reads the immutable worker
roster), `instance` (made at construction), and `Lending.checkout` / `report` (see
`direct`). Caller threads never write pool state; what
they learn (a direct call's outcome) they report to the loop.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import math
import sys
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..config import AFFINITY_MODES, PoolConfig, state_dir
from ..envs import needs_env, worker_python
from ..errors import (
    CallTimeout,
    EnvironmentProblem,
    PitError,
    PoolNotReady,
    PoolSaturated,
    QueueTimeout,
    SessionWorkerUnavailable,
    ShutdownError,
    WorkerExit,
)
from ..hardware import DeviceChoice, device_env, resolve_device
from ..logs import configure_from_env
from ..protocol import codec
from ..telemetry import tracing
from ..telemetry.control import TelemetryControl
from .affinity import session_slot
from .call import CallRun
from .direct import Lending
from .events import pool_event, session_event, worker_event, worker_reason
from .host.host_tools import ParamSpecs
from .host.instance import HostInstance
from .host.loop_thread import off_loop
from .lifecycle import Lifecycle, WorkerLaunch
from .metrics import PoolMetrics
from .prepare import prepare_call
from .queue_expiry import QueueExpiry
from .resilience import CrashBarrier
from .scheduler import Saturated, Scheduler
from .sessions import Session, SessionStore
from .stats import PoolStats, WorkerStats
from .stream_run import OnEnd, StreamRun
from .worker_handle import WorkerHandle

ENVELOPE_BYTES = 64 * 1024  # room left in a message for everything around the payload
Deliver = Callable[[Any, "BaseException | None"], None]


class PoolCore:
    """A pool's state and the only code that writes it (on the pool's loop)."""

    def __init__(self, config: PoolConfig, instance: HostInstance | None = None) -> None:
        self.config = config
        self._owns_instance = instance is None
        # made here, not on first use: façades read it from callers' threads
        self._instance = instance or HostInstance(state_dir(), python_path=[str(Path.cwd())])
        self._sched = Scheduler(self.config.max_queue)
        self._workers: dict[str, WorkerHandle] = {}
        self.roster: tuple[WorkerHandle, ...] = ()  # the same workers, for other threads
        self._ids = itertools.count(1)
        self._call_ids = itertools.count(1)
        self._tools: Mapping[str, dict[str, Any]] = {}  # replaced whole, never changed
        self.state = "new"  # new | starting | running | closing | closed (the loop writes it)
        self._ready_event: asyncio.Event | None = None
        self._close_task: asyncio.Task[None] | None = None  # the close, once asked for
        self._loop: asyncio.AbstractEventLoop | None = None
        self.max_call_bytes = self.config.max_message_bytes - ENVELOPE_BYTES
        self.lifecycle = Lifecycle(self)
        self.failure: PitError | None = None  # why start() failed
        self.launch = WorkerLaunch(sys.executable)
        self.barrier = CrashBarrier(self.config)
        self._saturated_at: float | None = None  # loop time the queue began to hold calls
        self.queued = QueueExpiry(self._queue_expired)  # queued calls' time limits
        self.retrying: set[CallRun] = set()  # calls waiting to run again (`CallRun.shut`)
        self._timeouts = self.config.timeouts()  # (call, stream, queue) seconds
        self.sessions = SessionStore(
            self.config.max_sessions, self.config.session_ttl_s,
            on_created=lambda s: session_event("session.created", self.name, s, s.created))
        self._events: collections.Counter[str] = collections.Counter()
        self.metrics = PoolMetrics()
        self.lending = Lending(self)  # idle workers lent to blocking callers (see `direct`)
        # what the workers send of their events (replaced whole; new workers get it)
        self.telemetry: TelemetryControl = config.telemetry

    @property
    def device(self) -> DeviceChoice | None:
        return self.launch.device

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def instance(self) -> HostInstance:
        return self._instance

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self, *, wait: bool = True) -> None:
        """Start the workers (start_batch at a time); with ``wait``, return once every one is
        ready. Without it, calls queue until workers are ready."""
        if self.state != "new":
            raise PitError(f"pool {self.name!r} was already started")
        configure_from_env()
        self.state = "starting"
        self._loop = asyncio.get_running_loop()
        started = self._loop.time()
        self._ready_event = asyncio.Event()
        if self._owns_instance:
            self.instance.pool_names = [self.name]
            await self.instance.start()
        try:
            choice = await asyncio.to_thread(resolve_device, self.config.device)
        except ValueError as exc:
            self.failure = EnvironmentProblem(f"pool {self.name!r}: {exc}",
                                              hint="run `pit hardware` to see the devices")
            await self.close()
            raise self.failure from None
        self.launch.device = choice
        self.launch.extra_env = device_env(choice, explicit=self.config.device != "auto")
        if needs_env(self.config):
            base = (self.instance.config_path.parent if self.instance.config_path
                    else Path.cwd())
            try:  # builds the env when missing or stale (idempotent; `pit setup` does it too)
                self.launch.python, self.launch.bridge = await asyncio.to_thread(
                    worker_python, self.config, self.instance.state_dir, base)
            except Exception as exc:  # noqa: BLE001 - any failure leaves the pool closed
                self.failure = exc if isinstance(exc, PitError) else EnvironmentProblem(
                    f"pool {self.name!r}: its environment could not be prepared: "
                    f"{type(exc).__name__}: {exc}")
                await self.close()
                raise self.failure from (None if exc is self.failure else exc)
        self.lifecycle.watch()  # heartbeats from now: workers ready early are pinged
        if wait:
            try:
                await self.lifecycle.start_all()
            except BaseException as exc:
                if isinstance(exc, PitError):
                    self.failure = exc
                await self.close()
                raise
        self.state = "running"
        pool_event("pool.started", self.name, size=self.config.size,
                   duration_ms=round((self._loop.time() - started) * 1000, 3))
        self.instance.cores.append(self)
        self.lifecycle.run()

    @property
    def closing(self) -> bool:
        return self.state in ("closing", "closed")

    def worker_ready(self, worker: WorkerHandle) -> None:
        """A new worker serves: learn the tools, let it take calls."""
        if not self._tools:  # replaced whole: caller threads read it without a lock
            self._tools = {t["name"]: t for t in worker.process.ready_info.get("tools", [])}
        self._sched.add(worker)
        worker_event("worker.ready", worker,
                     {"startup_ms": round((time.time() - worker.process.started_at) * 1000, 3)})
        if self.ready_count() >= self.config.size and self._ready_event is not None:
            self._ready_event.set()

    def worker_leaving(self, worker: WorkerHandle) -> None:
        """A worker will take no more calls: sessions pinned to it lose their state, and
        calls waiting for it alone (strict affinity) fail."""
        self.lending.unpark(worker)
        reason = ("recycled" if worker.recycle_reason in ("ttl", "requests", "memory", "manual")
                  else worker.recycle_reason or "crashed")
        self.sessions.worker_gone(worker.id, reason)
        for waiter in self._sched.remove(worker):
            waiter.set_exception(SessionWorkerUnavailable(
                f"worker {worker.id}, which held the session, was {reason}",
                details={"worker": worker.id, "reason": reason}))

    def worker_gone(self, worker: WorkerHandle) -> None:
        """A worker stops taking calls for good (died, or is being recycled)."""
        self.worker_leaving(worker)
        self.remove_worker(worker)
        if self._ready_event is not None and self.ready_count() < self.config.size:
            self._ready_event.clear()

    def slot_freed(self, worker: WorkerHandle) -> None:
        spent = bool(worker.max_requests and worker.served >= worker.max_requests)
        if spent:  # before its slot goes to a queued call: without recycle_overlap, the
            self.lifecycle.start_recycle(worker, "requests")  # worker takes none past it
        self._sched.release(worker)
        if self._saturated_at is not None and not self._sched.queue:  # O(1): hot path
            pool_event("pool.drained", self.name,
                       saturated_ms=round((self.loop.time() - self._saturated_at) * 1000, 3))
            self._saturated_at = None
        if not spent and self.lending.demand:
            self.lending.park(worker)

    async def recycle(self, worker_id: str, reason: str = "manual", wait: bool = True) -> None:
        """Replace a worker with a fresh one, without downtime (see `AsyncPool.recycle`)."""
        worker = self._workers.get(worker_id)
        if worker is None:
            raise PitError(f"pool {self.name!r} has no worker {worker_id!r}; workers: "
                           f"{', '.join(self._workers)}")
        task = self.lifecycle.start_recycle(worker, reason)
        if wait and task is not None:
            await asyncio.wait({task})  # until it ended (or the pool's close stopped it)

    def live_workers(self) -> list[WorkerHandle]:
        return list(self._workers.values())

    def add_worker(self, worker: WorkerHandle) -> None:
        """A worker that is starting belongs to the pool from now on (stats, close)."""
        self._workers[worker.id] = worker
        self.roster = tuple(self._workers.values())

    def remove_worker(self, worker: WorkerHandle) -> None:
        if self._workers.pop(worker.id, None) is not None:
            self.roster = tuple(self._workers.values())

    def new_worker_id(self) -> str:
        return f"worker-{next(self._ids)}"

    def correlation_id(self) -> str:
        """A fresh id for a call, unique across the host instance (any thread: next() of an
        itertools.count is atomic under the GIL)."""
        return f"{self.instance.id}-{next(self._call_ids)}"

    def has_queued(self) -> bool:
        """Whether calls are waiting for a worker."""
        return bool(self._sched.queue)

    def tool_spec(self, name: str) -> dict[str, Any] | None:
        """The announced spec of tool ``name``; None when unknown (or not known yet)."""
        return self._tools.get(name)

    def knows_tools(self) -> bool:
        """Whether a worker has announced the adapter's tools yet."""
        return bool(self._tools)

    def record_event(self, worker: WorkerHandle, reason: str) -> None:
        """Count a recycle/replacement reason (hung, crashed, ttl, requests, memory, manual)."""
        self._events[reason] += 1
        self.lifecycle.replacing.append(reason)
        worker.recycle_reason = reason
        self.metrics.event(worker.id, reason, worker.exit_reason)
        worker_reason(worker, reason)

    def sample_load(self) -> None:
        """One load sample for the metrics history (the lifecycle calls this)."""
        workers = self.live_workers()
        self.metrics.sample(self._sched.depth,
                            sum(self._busy(w) for w in workers),
                            sum(w.capacity for w in workers),
                            {w.id: round(w.samples.rss_mb, 1) for w in workers})

    def _busy(self, w: WorkerHandle) -> int:
        """Calls running on ``w`` (a lent worker's held, idle slot is not one)."""
        return w.in_flight - self.lending.idle_slots(w)

    def ready_count(self) -> int:
        return sum(1 for w in self._workers.values() if w.accepting)

    async def await_ready(self, timeout: float | None = None) -> None:
        """Wait until every worker is ready; raises PoolNotReady on timeout."""
        if self._ready_event is None:
            raise PoolNotReady(f"pool {self.name!r} has not been started",
                               hint="call start() first")
        try:
            await asyncio.wait_for(self._ready_event.wait(), timeout)
        except asyncio.TimeoutError:
            states = ", ".join(f"{w.id}={w.state}" for w in self._workers.values()) or "none"
            raise PoolNotReady(
                f"pool {self.name!r}: {self.ready_count()}/{self.config.size} workers ready "
                f"after {timeout:g} s ({states})",
                hint=str(self.lifecycle.start_error) if self.lifecycle.start_error
                else None) from None

    async def close(self, grace: float | None = None) -> None:
        """Stop accepting, drain in-flight calls up to ``grace`` s, stop every worker.

        Idempotent. Queued calls fail with ShutdownError; nothing is left running. The
        close runs on as a task of its own when its caller is cancelled (a Ctrl-C while
        `Pool.close` waits): stopped half-way it would leave the fork server and workers
        running, and a later close, finding the pool closing, would wait for nothing.
        """
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(self._close(grace))
        await asyncio.shield(self._close_task)

    async def _close(self, grace: float | None) -> None:
        self.state = "closing"
        try:
            self.lending.unpark_all()  # idle lent workers come back now, busy ones after their call
            await self.lifecycle.stop()
            self.queued.clear()
            for run in list(self.retrying):
                run.shut(ShutdownError(f"pool {self.name!r} closed before the call to "
                                       f"{run.req.tool_name!r} could run again"))
            for waiter in self._sched.drain_queue():
                waiter.set_exception(ShutdownError(f"pool {self.name!r} is shutting down"))
            grace = self.config.shutdown_grace_ms / 1000 if grace is None else grace
            loop = asyncio.get_running_loop()
            end = loop.time() + grace
            for w in self._workers.values():
                w.accepting = False
                if w.state == "ready":
                    w.state = "draining"
            while self._sched.in_flight > 0 and loop.time() < end:
                await asyncio.sleep(0.01)
            await asyncio.gather(*(w.stop() for w in list(self._workers.values())),
                                 return_exceptions=True)
            self._workers.clear()
            self.roster = ()
            await self.lending.close()
            await self.lifecycle.close_forkserver()
            if self.config.placement:  # a Ray pool's reserved bundles go back to the cluster
                from . import ray_cluster

                await off_loop(functools.partial(ray_cluster.release_placement,
                                                 self._instance.id, self.name))
            if self._owns_instance:
                await self._instance.close()
            if self in self._instance.cores:
                self._instance.cores.remove(self)  # status and the tool router list running pools
        finally:  # a close that failed half-way still ends: later closes must not wait for ever
            self.state = "closed"
        pool_event("pool.stopped", self.name, uptime_s=round(self.metrics.uptime(), 3))

    # --- calls ------------------------------------------------------------------------------
    def prepare(self, tool: str, args: Mapping[str, Any] | None, session_id: str | None,
                metadata: Mapping[str, str] | None, big: dict[str, Any] | None = None) -> Any:
        """Check and encode a call (safe from any thread): see `prepare.prepare_call`."""
        return prepare_call(self, tool, args, session_id, metadata, big)

    def budget(self, timeout: float | None, stream: bool = False) -> float | None:
        if timeout is None:
            return self._timeouts[1] if stream else self._timeouts[0]
        if timeout <= 0:
            raise ValueError("timeout must be > 0 s (float('inf') for no deadline)")
        return None if math.isinf(timeout) else timeout

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()

    def release(self, worker: WorkerHandle) -> None:
        self._sched.release(worker)

    def worker(self, worker_id: str) -> WorkerHandle | None:
        return self._workers.get(worker_id)

    def take(self, worker: WorkerHandle) -> bool:
        """A slot on this very worker, if it has one free now (a lent one is taken back)."""
        self.lending.unpark(worker)
        return self._sched.acquire_worker(worker)

    def wait_for_worker(self, worker: WorkerHandle, fut: asyncio.Future[WorkerHandle]) -> None:
        self._sched.enqueue_for(worker, fut)

    def discard(self, slot: asyncio.Future[WorkerHandle]) -> None:
        self._sched.discard(slot)

    def free_worker(self, exclusive: bool = False) -> WorkerHandle | None:
        """A slot on a worker free now (a lent idle worker is taken back for it), or None
        when the call must queue. Whoever gets it must use it or give it back (`release`)."""
        worker = self._sched.acquire(exclusive)
        if worker is None and self.lending.links:
            self.lending.unpark_all()  # lent idle workers come back; busy ones after their call
            worker = self._sched.acquire(exclusive)
        return worker

    def grant(self, tool: str, deadline: float | None, *, exclusive: bool = False,
              front: bool = False) -> asyncio.Future[WorkerHandle]:
        """A future for a worker slot: at once when one is free, else via the FIFO queue.

        Fails with PoolSaturated (queue full), QueueTimeout (queue_timeout_ms passed),
        CallTimeout (the call's own deadline came first) or ShutdownError (no worker is free
        and the pool is closing). Whoever gets the slot must use it
        or give it back with ``_sched.release``; a queued one's getter calls
        ``queued.forget`` (else the slot's time limit lingers until the queue's sweep).
        """
        loop = self._loop or asyncio.get_running_loop()
        fut: asyncio.Future[WorkerHandle] = loop.create_future()
        worker = self.free_worker(exclusive)
        if worker is not None:
            fut.set_result(worker)
            return fut
        if self.closing:  # the close empties the queue once: a call queued after waits on
            fut.set_exception(ShutdownError(  # a pool with no workers, on a stopped loop
                f"pool {self.name!r} is shutting down"))
            return fut
        try:
            self._sched.enqueue(fut, exclusive, front=front)
        except Saturated:
            fut.set_exception(PoolSaturated(
                f"pool {self.name!r} is saturated: {self.config.max_queue} calls already "
                f"queued for {self.config.size} workers",
                details={"pool": self.name, "max_queue": self.config.max_queue},
                hint="raise max_queue or size, or slow down callers"))
            return fut
        if self._saturated_at is None:
            self._saturated_at = loop.time()
            pool_event("pool.saturated", self.name, queued=self._sched.depth,
                       capacity=sum(w.capacity for w in self._workers.values()))
        queue_s = self._timeouts[2]
        now = loop.time()
        by_deadline = deadline is not None and deadline - now < queue_s
        at = deadline if by_deadline and deadline is not None else now + queue_s
        self.queued.add(loop, fut, at, (tool, by_deadline, max(at - now, 0.0)))
        return fut

    def _queue_expired(self, fut: asyncio.Future[WorkerHandle], what: Any) -> None:
        tool, by_deadline, wait_s = what
        self._sched.discard(fut)
        fut.set_exception(
            CallTimeout(f"call to {tool!r} timed out while queued ({wait_s:g} s)")
            if by_deadline else
            QueueTimeout(f"call to {tool!r} waited {wait_s:g} s in the queue of pool "
                         f"{self.name!r} without a free worker",
                         hint="raise queue_timeout_ms or size"))

    def dispatch(self, req: Any, timeout: float | None, deliver: Deliver, *,
                 idempotent: bool | None = None, affinity: str | None = None,
                 big: dict[str, Any] | None = None) -> Callable[[], None]:
        """Start a prepared call; ``deliver(result, None)`` or ``deliver(None, error)`` follows.

        Runs on the pool's loop and never awaits, so the sync API can use it without a task
        (see `CallRun`). ``timeout`` covers queueing, execution and retries. ``idempotent``
        (default: the tool is in idempotent_tools) lets a call whose worker died run again on
        another worker. Returns a function that cancels the call.
        """
        try:
            budget = self.budget(timeout)
        except ValueError as exc:
            tracing.finish(req, exc)
            raise
        deadline = None if budget is None else self.loop.time() + budget
        refusal = self.barrier.refusal(req)
        if refusal is not None:
            tracing.finish(req, refusal)
            deliver(None, refusal)
            return lambda: None
        if idempotent is None:
            idempotent = req.tool_name in self.config.idempotent_tools
        session = None
        if req.session_id:
            try:
                session = self.sessions.open(req.session_id)
            except PitError as exc:
                tracing.finish(req, exc)
                deliver(None, exc)
                return lambda: None
        run = CallRun(self, req, deadline, deliver, idempotent, session,
                      affinity_mode(affinity or self.config.affinity), big or None)
        run.start()
        return run.cancel

    async def call(self, req: Any, timeout: float | None, *, idempotent: bool | None = None,
                   affinity: str | None = None, big: dict[str, Any] | None = None) -> Any:
        """Run a prepared call and return its result (`dispatch`, awaited)."""
        out: asyncio.Future[Any] = self.loop.create_future()

        def deliver(value: Any, err: BaseException | None) -> None:
            if not out.done():
                out.set_exception(err) if err is not None else out.set_result(value)

        cancel = self.dispatch(req, timeout, deliver, idempotent=idempotent, affinity=affinity,
                               big=big)
        try:
            return await out
        except asyncio.CancelledError:
            cancel()
            raise

    async def stream(self, req: Any, timeout: float | None,
                     on_end: OnEnd | None = None) -> AsyncGenerator[Any, None]:
        """The decoded items of a prepared streaming call; the worker is granted to it alone.
        Once it ended (any way), ``on_end(summary)`` and its span ends."""
        tracing.streaming(req)
        req.stream = True
        req.metadata[codec.STREAM_BATCH] = "1"
        loop = asyncio.get_running_loop()
        called_at = loop.time()
        run = StreamRun(self.name, req, self.metrics.streams, called_at, loop)
        error: BaseException | None = None
        try:
            refusal = self.barrier.refusal(req)  # poisoned, or the circuit is open
            if refusal is not None:
                raise refusal
            budget = self.budget(timeout, stream=True)
            deadline = None if budget is None else called_at + budget
            session = self.sessions.open(req.session_id) if req.session_id else None
            worker = await self._acquire(req.tool_name, deadline, session)
            tracing.dispatched(req, worker.id, (loop.time() - called_at) * 1000)
            run.dispatched(worker.id)
            left = None if deadline is None else max(deadline - loop.time(), 0.001)
            async for chunk in worker.stream(req, left):
                if chunk.is_final:
                    run.final = chunk
                # the end marker: pit's worker says "empty"; Snakepit's bridge sends no data
                if chunk.is_final and (not chunk.data or chunk.metadata.get("empty") == "true"):
                    break
                if chunk.metadata.get(codec.STREAM_ITEMS):  # several items, one JSON array
                    items = codec.loads(chunk.data, "a stream chunk")
                    run.item(chunk, len(items))
                    for item in items:
                        yield item
                else:
                    run.item(chunk)
                    yield codec.decode_chunk(chunk)
                if chunk.is_final:
                    break
        except WorkerExit as err:  # as for any other call that kills its worker
            error = err
            refusal = self.barrier.after_death(req, err)
            if refusal is not None:
                error = refusal
                raise refusal from err
            raise
        except BaseException as exc:  # noqa: BLE001 - counted, then raised on
            error = exc
            raise
        finally:
            summary = run.end(error)
            closed = isinstance(error, (GeneratorExit, asyncio.CancelledError))  # stopped reading
            tracing.finish(req, None if closed else error, {"pit.chunks": run.chunks},
                           cancelled=closed)
            if on_end is not None:
                on_end(summary)

    async def _acquire(self, tool: str, deadline: float | None,
                       session: Session | None = None) -> WorkerHandle:
        if session is not None:
            slot = session_slot(self, session, self.config.affinity, tool, deadline,
                                exclusive=True)
        else:
            slot = self.grant(tool, deadline, exclusive=True)
        try:
            worker = await asyncio.shield(slot)
            if session is not None and session.worker_id is None:
                session.worker_id = worker.id
            return worker
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled() and slot.exception() is None:
                slot.result().exclusive_calls -= 1
                self._sched.release(slot.result())
            else:
                slot.cancel()
            raise
        finally:
            self.queued.forget(slot)

    # --- sessions ---------------------------------------------------------------------------
    def open_session(self, session_id: str | None, ttl_s: float | None) -> Session:
        return self.sessions.open(session_id, ttl_s)

    async def close_session(self, session_id: str) -> bool:
        """End a session: the worker holding it drops its state (on_session_end runs)."""
        session = self.sessions.close(session_id)
        if session is not None:
            session_event("session.closed", self.name, session, self.sessions.now())
        return session is not None and await self._cleanup_in_worker(session)

    async def expire_sessions(self) -> int:
        """End the sessions idle for longer than their ttl (the lifecycle calls this)."""
        gone = self.sessions.expire()
        for session in gone:
            session_event("session.expired", self.name, session, self.sessions.now())
            await self._cleanup_in_worker(session)
        return len(gone)

    async def _cleanup_in_worker(self, session: Session) -> bool:
        worker = self.worker(session.worker_id) if session.worker_id else None
        if worker is None or worker.state not in ("ready", "draining"):
            return False
        return await worker.cleanup_session(session.id)

    # --- telemetry control, the circuit ---------------------------------------------------
    async def control_telemetry(self, enabled: bool | None = None, sample: float | None = None,
                                allow: Iterable[str] | None = None,
                                deny: Iterable[str] | None = None) -> TelemetryControl:
        """Change what the workers send (`Pool.telemetry_control`; None: keep); returns once
        every ready worker applies it. New workers get it before their first call."""
        if enabled is None and sample is None and allow is None and deny is None:
            return self.telemetry
        # ValueError names a bad value
        control = self.telemetry.updated(enabled=enabled, sample=sample, allow=allow, deny=deny)
        self.telemetry = control
        await asyncio.gather(*(w.channel.control_telemetry(control)
                               for w in self.live_workers()))
        return control

    def reset_circuit(self) -> bool:
        """Close the crash barrier's circuit by hand; False if it was closed."""
        return self.barrier.breaker.reset()

    # --- introspection ----------------------------------------------------------------------
    def tools(self) -> list[dict[str, Any]]:
        """The adapter's tools as the workers announced them (name, parameters, streaming)."""
        return list(self._tools.values())

    def stats(self) -> PoolStats:
        """A frozen snapshot of the pool (on its loop; `Pool.stats` marshals it there)."""
        self.lending.settle()  # direct calls that ended count
        workers = tuple(
            WorkerStats(id=w.id, pid=w.pid, state=w.state,
                        in_flight=self._busy(w),
                        capacity=w.capacity, requests=w.served, errors=w.errors,
                        uptime_s=round(w.uptime(), 3),
                        python=str(w.process.ready_info.get("python", "")),
                        rss_mb=round(w.samples.rss_mb, 1),
                        uss_mb=round(w.samples.uss_mb, 1),
                        free_threaded=not w.process.ready_info.get("gil_enabled", True),
                        cpu_pct=round(w.samples.cpu_pct, 1),
                        missed_heartbeats=w.samples.missed_heartbeats,
                        last_recycle_reason=w.recycle_reason or w.replaced_reason,
                        lane=w.channel.lane_kind, lent=self.lending.lent(w),
                        host_watch=str(w.process.ready_info.get("host_watch", "")),
                        node=w.process.node)
            for w in self._workers.values())
        zygote = self.lifecycle.forkserver
        return PoolStats(name=self.name, adapter=self.config.adapter, size=self.config.size,
                         ready=self.ready_count(), queued=self._sched.depth,
                         max_queue=self.config.max_queue, restarts=self.lifecycle.restarts,
                         workers=workers, recycles=dict(self._events),
                         profile=self.config.profile, sessions=len(self.sessions),
                         calls=self.metrics.completed, failed=self.metrics.failed,
                         streams=self.metrics.streams.as_dict(),
                         circuit=self.barrier.breaker.state,
                         forkserver_pid=zygote.pid if zygote is not None else None,
                         events=tuple(dict(e) for e in self.metrics.events),
                         backend=self.config.backend)

    def pids(self) -> list[int]:
        """Pids of the pool's worker processes (any thread: reads the roster)."""
        return [w.pid for w in self.roster if w.pid is not None]



class Facade:
    """What `AsyncPool` and `Pool` both read of their core (frozen, or one value: any
    thread)."""

    _core: PoolCore

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def config(self) -> PoolConfig:
        return self._core.config

    @property
    def state(self) -> str:
        """new | starting | running | closing | closed"""
        return self._core.state

    @property
    def instance(self) -> HostInstance:
        """The host instance the pool's workers belong to (its id, run dir, registry)."""
        return self._core.instance

    def register_host_tool(self, name: str, fn: Callable[..., Any], *,
                           description: str | None = None,
                           parameters: ParamSpecs | None = None,
                           session_id: str | None = None) -> None:
        """Make ``fn`` callable from workers as ``ctx.call_host_tool(name, **kwargs)`` (and
        through the host's ExecuteTool), listed in ``ctx.host_tools`` with ``description``
        (default: the docstring's first line) and ``parameters`` (name -> {"type",
        "description", "required", "default"}; default: from the signature). With
        ``session_id`` only calls of that session see it. Every pool of the host shares it."""
        self.instance.register_host_tool(name, fn, description=description,
                                         parameters=parameters, session_id=session_id)

    def unregister_host_tool(self, name: str, *, session_id: str | None = None) -> bool:
        """Remove a host tool (the one scoped to ``session_id`` with it); False if none."""
        return self.instance.unregister_host_tool(name, session_id=session_id)


def affinity_mode(mode: str) -> str:
    if mode not in AFFINITY_MODES:
        raise ValueError(f"affinity must be one of {', '.join(AFFINITY_MODES)}, got {mode!r}")
    return mode
