"""One call's way through a pool: slot -> worker -> outcome, with requeue and retries.

    start -> _attempt: Scheduler slot (at once, or via the FIFO queue)
          -> worker.send (call lane)
          -> outcome:  result / tool error         -> deliver
                       NotStarted (worker died
                         before running it)         -> _attempt again, at the queue's front
                       WorkerExit and idempotent    -> _attempt again after RetryPolicy delay
                       anything else                -> deliver the error

Runs entirely on the pool's event loop, with callbacks only (no task per call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .. import telemetry
from ..errors import (
    CallTimeout,
    RemoteError,
    ResultError,
    ShutdownError,
    WorkerExit,
    from_payload,
)
from ..protocol import codec
from ..telemetry import tracing
from .affinity import SlotSource, session_slot
from .lane import NotStarted
from .sessions import Session

if TYPE_CHECKING:
    from .metrics import PoolMetrics
    from .queue_expiry import QueueExpiry
    from .resilience import CrashBarrier
    from .worker_handle import WorkerHandle


class CallHost(SlotSource, Protocol):
    """What a call needs of its pool: slots, the crash barrier, metrics."""

    barrier: CrashBarrier
    metrics: PoolMetrics
    queued: QueueExpiry
    retrying: set[CallRun]  # calls waiting to run again after their worker died

    def free_worker(self, exclusive: bool = False) -> WorkerHandle | None: ...

    @property
    def name(self) -> str: ...
    @property
    def closing(self) -> bool: ...
    def release(self, worker: WorkerHandle) -> None: ...

Deliver = Callable[[Any, "BaseException | None"], None]
DISPATCHED = "pool.call.dispatched"
COMPLETED = "pool.call.completed"
TOOL_ERROR = "pool.call.tool_error"


class CallRun:
    def __init__(self, pool: CallHost, req: Any, deadline: float | None, deliver: Deliver,
                 idempotent: bool, session: Session | None = None,
                 affinity: str = "hint", big: dict[str, Any] | None = None) -> None:
        self.pool = pool
        self.big = big  # large bytes arguments, sent through shared memory when possible
        self.session = session
        self.affinity = affinity
        self.req = req
        self.deadline = deadline
        self.idempotent = idempotent
        self.retries = 0
        self._deliver = deliver
        self._done = False
        self._slot: asyncio.Future[Any] | None = None
        self._worker: WorkerHandle | None = None
        self._cid = 0
        self._retry_at: asyncio.TimerHandle | None = None  # set while it waits to run again
        self._loop = pool.loop
        self.started = self._loop.time()

    def start(self) -> None:
        self._attempt(front=False)

    def _attempt(self, front: bool) -> None:
        if self._done:
            return
        if front and self.pool.closing:
            # No second attempt once the pool closes: no worker is left for it, and its slot,
            # queued after the close emptied the queue, would outlive the loop (the sync API's
            # caller waited for ever)
            self._finish(None, ShutdownError(
                f"pool {self.pool.name!r} closed before the call to "
                f"{self.req.tool_name!r} could run again"))
            return
        self._worker = None
        if self.session is not None:
            slot = session_slot(self.pool, self.session, self.affinity, self.req.tool_name,
                                self.deadline, front=front)
        else:
            worker = self.pool.free_worker()
            if worker is not None:  # the usual case: no future, no queue
                self._slot = None
                self._send(worker)
                return
            slot = self.pool.grant(self.req.tool_name, self.deadline, front=front)
        self._slot = slot
        if slot.done():
            self._granted(slot)
        else:
            slot.add_done_callback(self._dequeued)

    def _dequeued(self, slot: asyncio.Future[Any]) -> None:
        self.pool.queued.forget(slot)
        self._granted(slot)

    def _granted(self, slot: asyncio.Future[Any]) -> None:
        if slot.cancelled():
            return
        if slot.exception() is not None:
            self._finish(None, slot.exception())
            return
        worker = slot.result()
        if self._done:  # cancelled while queued: hand the slot on
            self.pool.release(worker)
            return
        self._send(worker)

    def _send(self, worker: WorkerHandle) -> None:
        left = None if self.deadline is None else max(self.deadline - self._loop.time(), 0.001)
        self._worker = worker
        if self.session is not None and self.session.worker_id is None:
            self.session.worker_id = worker.id  # the session's state will live here
        dispatched(self.pool.name, worker.id, self.req,
                   (self._loop.time() - self.started) * 1000)
        self._cid = worker.send(self.req, left,
                                lambda resp, err: self.outcome(worker, resp, err), self.big)

    def outcome(self, worker: WorkerHandle, resp: Any, err: BaseException | None) -> None:
        if self._done:
            return
        if isinstance(err, NotStarted):
            self._attempt(front=True)  # it never ran: no retry budget spent
            return
        if isinstance(err, WorkerExit):
            refusal = self.pool.barrier.after_death(self.req, err)
            if refusal is not None:
                self._finish(None, refusal)
                return
            if self.idempotent and not self.pool.closing:  # see _attempt
                delay = self.pool.barrier.retry_policy.delay(self.retries + 1)
                left = None if self.deadline is None else self.deadline - self._loop.time()
                if delay is not None and (left is None or left > delay):
                    self.retries += 1
                    self._retry_at = self._loop.call_later(delay, self._retry)
                    self.pool.retrying.add(self)  # a close ends it (`shut`)
                    return
        self._finish(*self._result(resp, err, worker))

    def _retry(self) -> None:
        self.pool.retrying.discard(self)
        self._retry_at = None
        self._attempt(True)

    def shut(self, err: BaseException) -> None:
        """The pool closes while this call waits to run again: it ends with ``err`` (a
        retry timer that outlived the loop left its caller waiting for ever)."""
        if self._retry_at is not None:
            self._retry_at.cancel()
            self._retry_at = None
        self.pool.retrying.discard(self)
        self._finish(None, err)

    def _result(self, resp: Any, err: BaseException | None,
                worker: WorkerHandle) -> tuple[Any, BaseException | None]:
        """(value, None) or (None, the PitError the worker's answer names)."""
        if err is not None:
            tool = self.req.tool_name
            if isinstance(err, CallTimeout) and "cancelled by the caller" not in str(err):
                err = timed_out(tool, worker)
            return None, err
        return answer(self.pool, worker, self.req, resp)

    def _finish(self, value: Any, err: BaseException | None) -> None:
        if not self._done:
            self._done = True
            record(self.pool, self.req, self._loop.time() - self.started, err)
            self._deliver(value, err)

    def cancel(self) -> None:
        """Take the call out of the queue, or cancel it in its worker; nothing is delivered."""
        if self._done:
            return
        self._done = True
        tracing.finish(self.req, None, cancelled=True)
        if self._retry_at is not None:  # waiting to run again: nothing is out
            self._retry_at.cancel()
            self._retry_at = None
            self.pool.retrying.discard(self)
        elif self._slot is not None and not self._slot.done():
            self._slot.cancel()
            self.pool.discard(self._slot)
            self.pool.queued.forget(self._slot)
        elif self._worker is not None:
            self._worker.abandon(self._cid, CallTimeout("call cancelled by the caller"))


def answer(pool: CallHost, worker: WorkerHandle, req: Any,
           resp: Any) -> tuple[Any, BaseException | None]:
    """A worker's answer: (value, None), or (None, the PitError its error payload names),
    accounted for (on the loop)."""
    value, err, size = read_answer(pool.name, worker, req, resp)
    note_answer(pool, worker, req.tool_name, resp.success, size)
    return value, err


def read_answer(pool_name: str, worker: WorkerHandle, req: Any,
                resp: Any) -> tuple[Any, BaseException | None, int | None]:
    """(value, error, result size for the loop's bookkeeping) of a worker's answer. Reads and
    writes no pool state: a blocking caller's thread uses it for its direct call, and the loop
    accounts for the answer later (`note_answer`)."""
    tool = req.tool_name
    if resp.success:
        try:
            value, size = worker.channel.read_result(resp)
            return value, None, size
        except (codec.CodecError, ValueError) as exc:  # the result, not the arguments
            return None, ResultError(f"the result of tool {tool!r} cannot be read: {exc}",
                                     details={"tool": tool, "pool": pool_name,
                                              "worker": worker.id}), None
    return None, from_payload(codec.decode_error(resp.error_message), tool,
                              {"tool": tool, "pool": pool_name, "worker": worker.id}), None


def note_answer(pool: CallHost, worker: WorkerHandle, tool: str, ok: bool,
                size: int | None) -> None:
    """An answer's mark on pool state (on the loop): the breaker, the worker's errors, the
    result size that decides whether the tool's next call gets an arena."""
    if ok:
        pool.barrier.breaker.record_success()
        worker.channel.note_result(tool, size)
    else:
        worker.errors += 1


def timed_out(tool: str, worker: WorkerHandle) -> CallTimeout:
    return CallTimeout(f"call to {tool!r} timed out on {worker.id} (the worker was told to "
                       "cancel it)", details={"tool": tool, "worker": worker.id},
                       hint="raise the timeout or call_timeout_ms")


def dispatched(pool_name: str, worker_id: str, req: Any, queue_ms: float) -> None:
    """The pool.call.dispatched event of a call that got its worker (on the loop)."""
    tracing.dispatched(req, worker_id, queue_ms)
    if telemetry.enabled(DISPATCHED):
        telemetry.emit(DISPATCHED, {"queue_ms": queue_ms}, {
            "pool": pool_name, "worker": worker_id, "tool": req.tool_name,
            "correlation_id": req.metadata.get("correlation_id", "")})


def record(pool: CallHost, req: Any, took: float, err: BaseException | None) -> None:
    """A finished call in the pool's metrics and the completed event (on the loop)."""
    category = getattr(err, "category", "error") if err else None
    tracing.finish(req, err)
    pool.metrics.record(took, category)
    if telemetry.enabled(COMPLETED):
        telemetry.emit(COMPLETED, {"duration_ms": took * 1000}, {
            "pool": pool.name, "tool": req.tool_name,
            "correlation_id": req.metadata.get("correlation_id", ""),
            "status": "error" if err else "ok", "error_category": category or ""})
    if category == "remote_error" and telemetry.enabled(TOOL_ERROR):
        ml = err.ml if isinstance(err, RemoteError) else None
        telemetry.emit(TOOL_ERROR, {"mapped": int(ml is not None)}, {
            "pool": pool.name, "tool": req.tool_name,
            "remote_type": getattr(err, "remote_type", None) or "",
            "ml_category": ml.category if ml else ""})
