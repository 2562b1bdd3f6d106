"""Choosing the worker for a call of a session (see `sessions` for the modes): the decision
itself is the pure `decide`; `session_slot` carries it out on the pool's scheduler."""

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


def decide(mode: str, pinned: bool, gone: bool, free: bool | None = None) -> str:
    """Where a session's call goes, as a pure decision (no pool, no asyncio):

        "any"    any free worker (the pool's queue); "repin": the same, after forgetting the
                 pin of a worker that is gone (affinity "hint")
        "try"    ask whether the pinned worker has a free slot, then decide again with ``free``
        "pinned" the pinned worker, whose slot was just taken
        "wait"   queue for the pinned worker (strict_queue)
        "lost"   fail: the pinned worker is gone with the session's state (strict modes)
        "busy"   fail: the pinned worker is busy (strict_fail_fast)

    ``pinned``: the session has a worker; ``gone``: that worker crashed, was recycled or is
    dead; ``free``: whether taking a slot on it worked (None: not asked yet).
    """
    if not pinned:
        return "any"
    if gone:
        return "repin" if mode == "hint" else "lost"
    if free is None:
        return "try"
    if free:
        return "pinned"
    return {"hint": "any", "strict_fail_fast": "busy"}.get(mode, "wait")


def session_slot(pool: SlotSource, session: Session, mode: str, tool: str,
                 deadline: float | None, *, exclusive: bool = False,
                 front: bool = False) -> asyncio.Future[WorkerHandle]:
    """A future for a slot, honouring the session's pinned worker and the affinity mode
    (`decide`). The caller pins an unpinned session to whichever worker it gets."""
    loop = pool.loop
    worker = pool.worker(session.worker_id) if session.worker_id else None
    gone = bool(session.lost) or worker is None or worker.state == "dead"
    choice = decide(mode, bool(session.worker_id), gone)
    if choice == "try":
        assert worker is not None
        choice = decide(mode, True, False, pool.take(worker))
    if choice == "repin":  # the next worker used holds the session now
        session.worker_id, session.lost = None, None
        choice = "any"
    if choice == "any":
        return pool.grant(tool, deadline, exclusive=exclusive, front=front)
    if choice == "lost":
        reason = session.lost or "crashed"
        return _failed(loop, SessionWorkerUnavailable(
            f"session {session.id!r}: its worker {session.worker_id} {reason}, and its "
            "session state went with it",
            details={"session_id": session.id, "worker": session.worker_id,
                     "reason": reason},
            hint="close the session and open a new one (or use affinity = \"hint\")"))
    assert worker is not None
    if choice == "pinned":
        fut: asyncio.Future[WorkerHandle] = loop.create_future()
        fut.set_result(worker)
        return fut
    if choice == "busy":
        return _failed(loop, WorkerBusy(
            f"session {session.id!r}: its worker {worker.id} is busy (strict_fail_fast)",
            details={"session_id": session.id, "worker": worker.id},
            hint="retry later, or use affinity = \"strict_queue\" to wait for it"))
    return _wait_for(pool, worker, session, tool, deadline)


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
