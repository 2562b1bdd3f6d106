"""Choosing the worker for a call of a session (see `sessions` for the modes)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from ..errors import CallTimeout, PoolSaturated, SessionWorkerUnavailable, WorkerBusy
from .scheduler import Saturated
from .sessions import Session

if TYPE_CHECKING:
    from ..config import PoolConfig
    from .worker_handle import WorkerHandle


class SlotSource(Protocol):
    """What session affinity needs of the pool: its scheduler's slots."""

    @property
    def config(self) -> PoolConfig: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    def grant(self, tool: str, deadline: float | None, *, exclusive: bool = False,
              front: bool = False) -> asyncio.Future[WorkerHandle]: ...
    def discard(self, slot: asyncio.Future[WorkerHandle]) -> None: ...
    def take(self, worker: WorkerHandle) -> bool: ...
    def wait_for_worker(self, worker: WorkerHandle,
                        fut: asyncio.Future[WorkerHandle]) -> None: ...
    def worker(self, worker_id: str) -> WorkerHandle | None: ...


def session_slot(pool: SlotSource, session: Session, mode: str, tool: str,
                 deadline: float | None, *, exclusive: bool = False,
                 front: bool = False) -> asyncio.Future[WorkerHandle]:
    """A future for a slot, honouring the session's pinned worker and the affinity mode.

    The caller pins an unpinned session to whichever worker it gets."""
    loop = pool.loop
    pinned = pool.worker(session.worker_id) if session.worker_id else None
    if session.worker_id and (session.lost or pinned is None or pinned.state == "dead"):
        reason = session.lost or "crashed"
        if mode == "hint":  # re-pin silently: the next worker used holds the session now
            session.worker_id, session.lost = None, None
            return pool.grant(tool, deadline, exclusive=exclusive, front=front)
        return _failed(loop, SessionWorkerUnavailable(
            f"session {session.id!r}: its worker {session.worker_id} {reason}, and its "
            "session state went with it",
            details={"session_id": session.id, "worker": session.worker_id,
                     "reason": reason},
            hint="close the session and open a new one (or use affinity = \"hint\")"))
    if pinned is None:
        return pool.grant(tool, deadline, exclusive=exclusive, front=front)
    if pool.take(pinned):
        fut: asyncio.Future[WorkerHandle] = loop.create_future()
        fut.set_result(pinned)
        return fut
    if mode == "hint":
        return pool.grant(tool, deadline, exclusive=exclusive, front=front)
    if mode == "strict_fail_fast":
        return _failed(loop, WorkerBusy(
            f"session {session.id!r}: its worker {pinned.id} is busy (strict_fail_fast)",
            details={"session_id": session.id, "worker": pinned.id},
            hint="retry later, or use affinity = \"strict_queue\" to wait for it"))
    return _wait_for(pool, pinned, session, tool, deadline)


def _wait_for(pool: SlotSource, worker: WorkerHandle, session: Session, tool: str,
              deadline: float | None) -> asyncio.Future[WorkerHandle]:
    """strict_queue: wait for this worker within the call's deadline (else the queue
    timeout)."""
    loop = pool.loop
    fut: asyncio.Future[WorkerHandle] = loop.create_future()
    try:
        pool.wait_for_worker(worker, fut)
    except Saturated:
        return _failed(loop, PoolSaturated(
            f"session {session.id!r}: too many calls wait for worker {worker.id}"))
    wait_s = (deadline - loop.time()) if deadline is not None else pool.config.timeouts()[2]

    def expire() -> None:
        if not fut.done():
            pool.discard(fut)
            fut.set_exception(CallTimeout(
                f"call to {tool!r} timed out waiting for session {session.id!r}'s worker "
                f"{worker.id} (strict_queue)", details={"session_id": session.id}))

    timer = loop.call_later(max(wait_s, 0.0), expire)
    fut.add_done_callback(lambda _: timer.cancel())
    return fut


def _failed(loop: asyncio.AbstractEventLoop,
            err: BaseException) -> asyncio.Future[WorkerHandle]:
    fut: asyncio.Future[WorkerHandle] = loop.create_future()
    fut.set_exception(err)
    return fut
