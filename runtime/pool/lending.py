"""The loop's side of direct calls (see `direct`): which workers are lent to blocking
callers, lending an idle one when a caller asks, taking it back when the pool needs it, and
finishing direct calls that went wrong (timed out, interrupted, connection broken).

Every method but `checkout` and `report` runs on the pool's loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf.message import DecodeError

from ..logs import logger
from ..protocol import pb
from ..protocol.frames import FrameError
from .call import CallHost, CallRun, dispatched, note_answer, record
from .direct import BUSY, IDLE, OFF, RECV_BYTES, DirectLink
from .lane import CANCEL_GRACE_S

if TYPE_CHECKING:
    from .worker_handle import WorkerHandle


class LendingHost(CallHost, Protocol):
    """What lending needs of the pool besides what its calls need."""

    @property
    def state(self) -> str: ...
    def has_queued(self) -> bool: ...

log = logger("worker")
REPORT_FLUSH_S = 0.05  # direct calls' outcomes wait at most this long to be settled
IDLE_TICKS = 20  # settling stops after this many ticks with nothing to settle (a caller resumes)


class Lending:
    """Which workers of a pool are lent to blocking callers, and getting them back. Every
    method but `checkout` and `report` runs on the pool's loop."""

    def __init__(self, pool: LendingHost) -> None:
        self.pool = pool
        self.enabled = pool.config.direct_calls
        self.links: tuple[DirectLink, ...] = ()  # lent (IDLE or BUSY); callers read it as is
        self._link_of: dict[str, DirectLink] = {}  # worker id -> its connection, once made
        self.demand = False  # a blocking caller found none free (set from any thread)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._holding = False  # a slot is being given back: do not lend it again right away
        # direct calls that ended, reported by callers' threads, settled on the loop
        self._reports: collections.deque[tuple[Any, ...]] = collections.deque()
        self._flush: asyncio.TimerHandle | None = None
        self._idle_ticks = 0

    # --- direct calls' outcomes --------------------------------------------------------------
    def report(self, worker: WorkerHandle, req: Any, resp: Any, size: int | None,
               took: float, err: BaseException | None) -> bool:
        """A direct call ended (any thread): ``resp`` is the worker's answer, None when it
        timed out. The loop settles it (`settle`). True: the loop no longer settles on its
        own (the pool was idle), the caller must wake it with `resume`."""
        self._reports.append((worker, req, resp, size, took, err))
        return self._flush is None  # read after the append: see _tick

    def resume(self) -> None:
        """Settle now and then again (a caller reported while the ticking was stopped)."""
        self.settle()
        self._keep_ticking()

    def settle(self) -> int:
        """Account for the direct calls that ended, in order: the worker's counters, the
        breaker, result sizes, metrics and the pool.call.* events. Returns how many."""
        reports, pool = self._reports, self.pool
        n = len(reports)
        while reports:
            w, req, resp, size, took, err = reports.popleft()
            if resp is not None:
                w.served += 1
                w.avg_ms += (resp.execution_time_ms - w.avg_ms) * 0.1
                note_answer(pool, w, req.tool_name, resp.success, size)
            else:
                w.errors += 1
            dispatched(pool.name, w.id, req, 0.0)  # a direct call never queues
            record(pool, req, took, err)
        return n

    def _tick(self) -> None:
        """Settle every REPORT_FLUSH_S while workers are lent and calls come (callers do not
        wake the loop); after IDLE_TICKS with nothing to settle, stop, so that an idle pool is
        not woken 20 times a second; the next caller's report then wakes it once."""
        self._flush = None  # first: a report from now on sees it and wakes the loop itself
        self._idle_ticks = 0 if self.settle() else self._idle_ticks + 1
        if self.links and self._idle_ticks < IDLE_TICKS:
            self._flush = asyncio.get_running_loop().call_later(REPORT_FLUSH_S, self._tick)

    def _keep_ticking(self) -> None:
        """Tick (again), counting idle ticks from now."""
        if self._flush is None:
            self._idle_ticks = 0
            self._flush = asyncio.get_running_loop().call_later(REPORT_FLUSH_S, self._tick)

    def checkout(self, req: Any) -> DirectLink | None:
        """A lent worker for this call, now BUSY for the calling thread; None: use the loop
        (and ask for a worker to be lent)."""
        pool = self.pool
        if not self.enabled or pool.state != "running" or req.session_id:
            return None
        barrier = pool.barrier
        if barrier.breaker.state != "closed" or barrier.has_poison():
            return None  # the loop's path checks and counts those
        skipped = False
        for link in self.links:
            shm = link.worker.shm
            if shm is not None and shm.expects_large_result(req.tool_name):
                skipped = True  # the loop's path offers it an arena for the result
                continue
            if link.checkout():
                return link
        if skipped:
            return None
        self.demand = True
        return None

    def lent(self, worker: WorkerHandle) -> bool:
        link = self._link_of.get(worker.id)
        return link is not None and link in self.links

    def idle_slots(self, worker: WorkerHandle) -> int:
        """1 when the worker is lent and no call is out on it (its slot is held, not busy)."""
        link = self._link_of.get(worker.id)
        return int(link is not None and link.state is IDLE and link in self.links)

    # --- lending and taking back -------------------------------------------------------------
    def park(self, worker: WorkerHandle) -> None:
        """Lend ``worker`` (idle, just freed) to blocking callers, if one asked."""
        pool = self.pool
        if not (self.demand and self.enabled and not self._holding
                and pool.state == "running"
                and worker.in_flight == 0 and worker.accepting and worker.state == "ready"
                and not worker.recycle_reason and worker.capacity == 1
                and worker.lendable and not pool.has_queued()):
            return
        link = self._link_of.get(worker.id)
        if link is None:
            try:
                link = DirectLink.connect(worker, str(worker.lane_socket),
                                          pool.config.max_message_mb * 1024 * 1024)
            except BlockingIOError:
                return  # its backlog is full for now: not lent this time
            except OSError as exc:
                log.info("worker %s: cannot be lent to blocking callers: %s", worker.id, exc)
                worker.lendable = False
                return
            self._link_of[worker.id] = link
        # The lent worker's slot is taken (and no call is pipelined to it) until it is back.
        worker.in_flight += 1
        worker.exclusive_calls += 1
        self.settle()
        with link.lock:
            link.state, link.wanted = IDLE, False
            link.base_served, link.calls = worker.served, 0
        self.links = (*self.links, link)
        self.demand = False
        self._keep_ticking()

    def unpark(self, worker: WorkerHandle) -> None:
        """``worker`` must stop being lent (recycle, death, close): free its slot now, or ask
        for it back."""
        link = self._link_of.get(worker.id)
        if link is not None and link in self.links and link.reclaim():
            self._release(link)

    def unpark_all(self) -> None:
        for link in self.links:
            self.unpark(link.worker)

    def returned(self, link: DirectLink) -> None:
        """A caller handed a worker back (it was asked for, or reached max_requests)."""
        if link in self.links:
            self._release(link)

    def _forget(self, link: DirectLink) -> None:
        self.links = tuple(x for x in self.links if x is not link)

    def _release(self, link: DirectLink, hold: bool = True) -> None:
        """The lent slot goes back to the loop: queued calls get it, a max_requests recycle
        starts. With ``hold`` it is not lent again at once: it was taken back for a reason."""
        self.settle()  # its calls count before its slot is free (max_requests, stats)
        self._forget(link)
        w = link.worker
        w.exclusive_calls -= 1
        if not w.lendable and self._link_of.get(w.id) is link:
            del self._link_of[w.id]
            link.close()
        self._holding = hold
        try:
            w.slot_freed()
        finally:
            self._holding = False

    def _drop(self, link: DirectLink) -> None:
        """The link is done for (broken, or its worker is gone): close it, free the slot."""
        link.close()
        if self._link_of.get(link.worker.id) is link:
            del self._link_of[link.worker.id]
        self._release(link)

    def retire(self, worker: WorkerHandle) -> None:
        """The worker stops or died: no more direct calls; a call still out ends with the
        connection (`broken` answers it)."""
        worker.lendable = False
        self.unpark(worker)  # an idle lent link is closed there
        link = self._link_of.get(worker.id)
        if link is None:
            return
        with link.lock:
            busy = link.state is BUSY
        if busy:
            with contextlib.suppress(OSError):
                link.sock.shutdown(socket.SHUT_RDWR)
        else:
            del self._link_of[worker.id]
            link.close()

    # --- calls that went wrong ---------------------------------------------------------------
    def abandoned(self, link: DirectLink, cid: int, req: Any) -> None:
        """A direct call ran out of time or its caller gave up: cancel it in the worker and
        drain its late answer, as the lane does for its calls."""
        self.settle()
        self._forget(link)
        self._spawn(self._finish_abandoned(link, cid, req))

    async def _finish_abandoned(self, link: DirectLink, cid: int, req: Any) -> None:
        w = link.worker
        await w.send_cancel(cid)
        loop = asyncio.get_running_loop()
        try:
            link.sock.setblocking(False)
            await asyncio.wait_for(self._drain(loop, link, cid), CANCEL_GRACE_S)
        except asyncio.TimeoutError:
            w.kill_stuck(req)
            self._drop(link)
            return
        except (OSError, EOFError, FrameError, DecodeError):
            self._drop(link)  # it died meanwhile: its exit is the lane's business
            return
        link.sock.setblocking(True)
        with link.lock:
            link.state, link.wanted = OFF, False
        self._release(link, hold=False)  # the call has really ended: the worker takes calls

    @staticmethod
    async def _drain(loop: asyncio.AbstractEventLoop, link: DirectLink, cid: int) -> None:
        while True:
            while link.pending:
                msg = pb.LaneResponse.FromString(link.pending.popleft())
                if any(r.call_id == cid for r in msg.results):
                    return
            link.took(await loop.sock_recv(link.sock, RECV_BYTES))

    def broken(self, link: DirectLink, call: tuple[Any, ...] | None) -> None:
        """The link's connection failed: with ``call`` (cid, req, deadline, idempotent,
        started, deliver) out on it, after it was sent; without, before (the caller runs it
        through the loop)."""
        self.settle()
        self._forget(link)
        self._spawn(self._finish_broken(link, call))

    async def _finish_broken(self, link: DirectLink, call: tuple[Any, ...] | None) -> None:
        w = link.worker
        if call is None:  # nothing was out: the worker may be fine, just not lent again
            w.lendable = False
            self._drop(link)
            return
        await w.wait_exit()  # a worker that lives on without its connection is killed
        self._drop(link)
        cid, req, deadline, idempotent, started, deliver = call
        err = w.death_error(lone=True, cid=cid)
        pool = self.pool
        if idempotent is None:
            idempotent = req.tool_name in pool.config.idempotent_tools
        run = CallRun(pool, req, deadline, deliver, idempotent)
        run.started = started
        run.outcome(w, None, err)  # reruns, retries or answers, as for a lane call

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """At pool close, after the workers stopped: let the tasks above finish."""
        self.settle()
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CANCEL_GRACE_S + 1)
