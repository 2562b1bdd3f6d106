"""Direct calls: a blocking caller's thread does its own socket I/O on a worker lent to it.

A sync `Pool.execute` through the loop crosses two thread hand-offs (caller -> loop thread,
loop thread -> caller) besides the worker's round trip; on a small VM each wake-up costs
10-20 µs and the loop's own Python as much again, about half of a no-op call. So the loop lends
idle workers to blocking callers, much as a database pool lends a connection:

    loop:   a call ends, its worker is idle, nothing is queued, and a blocking caller found no
            lent worker -> `Lending.park`: the worker's slot is held for callers (link IDLE)
    caller: `call` -> checkout (BUSY) -> frame on the link's own connection to the worker's
            lane socket -> blocking read of the answer -> IDLE again, or OFF and handed back
            when the loop asked for the worker or it has served max_requests
    loop:   needs the worker (a call would queue, a session is pinned there, recycle, close)
            -> `Lending.unpark`: IDLE -> OFF and the slot is freed; BUSY -> asked back

The loop stays the owner of pool state: a caller touches only its link (under the link's lock)
and the worker's counters, which no one else writes while it is lent. Anything unusual goes
back to the loop: a deadline or an interrupt (`abandoned`: the call is cancelled in the worker,
its late answer drained, the worker killed if it does not stop within CANCEL_GRACE_S, as for
lane calls), a broken connection (`broken`: the worker's exit names the error, with the lane's
culprit rules; a call it never started runs elsewhere, an idempotent one is retried).
Only calls without a session, shared-memory payloads or a busy circuit go direct, and only on
workers of the process profile whose lane socket takes several connections.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from .. import telemetry
from ..errors import ShutdownError, WorkerExit
from ..logs import logger
from ..protocol import pb
from ..protocol.frames import FrameBuffer, FrameError, encode
from .call import DISPATCHED, CallRun, answer, record, timed_out
from .lane import CANCEL_GRACE_S, exit_error

if TYPE_CHECKING:
    from .async_pool import AsyncPool
    from .loop_thread import LoopThread
    from .worker_handle import WorkerHandle

log = logger("worker")

OFF, IDLE, BUSY = "off", "idle", "busy"
RECV_BYTES = 256 * 1024
FALLBACK = object()  # `call`'s answer when no worker is lent: go through the loop
SHUTDOWN_POLL_S = 0.1


class DirectLink:
    """One worker lent to blocking callers: its own blocking connection to the worker's lane
    socket, and who holds it (OFF: the loop schedules the worker; IDLE: lent, free; BUSY: a
    caller's call is out on it)."""

    def __init__(self, worker: WorkerHandle, sock: socket.socket, limit: int) -> None:
        self.worker = worker
        self.sock = sock
        self.limit = limit
        self.lock = threading.Lock()
        self.state = OFF
        self.wanted = False  # the loop asked for the worker back while a call was out
        self.frames = FrameBuffer(limit)
        self.pending: collections.deque[bytes] = collections.deque()  # whole frames not read

    @classmethod
    def connect(cls, worker: WorkerHandle, path: str, limit: int) -> DirectLink:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(1.0)  # a listening unix socket accepts at once; never hang the loop
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return cls(worker, sock, limit)

    # --- who holds it (any thread) -----------------------------------------------------------
    def checkout(self) -> bool:
        with self.lock:
            if self.state is IDLE:
                self.state = BUSY
                return True
        return False

    def checkin(self, give_back: bool) -> bool:
        """After a call: free for the next caller, or OFF when the loop asked for the worker
        or ``give_back``; True means the caller must hand the slot back to the loop."""
        with self.lock:
            if give_back or self.wanted:
                self.state, self.wanted = OFF, False
                return True
            self.state = IDLE
            return False

    def reclaim(self) -> bool:
        """The loop wants the worker: True when it was free (now OFF); a busy one is asked
        back and comes back through `Lending.returned` after its call."""
        with self.lock:
            if self.state is IDLE:
                self.state = OFF
                return True
            if self.state is BUSY:
                self.wanted = True
            return False

    # --- the I/O (the holder's thread) -------------------------------------------------------
    def send(self, frame: bytes, deadline: float | None) -> None:
        self.sock.settimeout(_left(deadline))
        self.sock.sendall(frame)

    def receive(self, cid: int, deadline: float | None) -> Any:
        """The LaneResult of call ``cid``; raises TimeoutError past ``deadline``, EOFError or
        OSError when the connection ends, FrameError/DecodeError for a bad frame."""
        while not self.pending:
            self.sock.settimeout(_left(deadline))
            self.took(self.sock.recv(RECV_BYTES))
        msg = pb.LaneResponse.FromString(self.pending.popleft())
        if len(msg.results) != 1 or msg.results[0].call_id != cid:
            raise FrameError(f"expected the answer to call {cid}")
        return msg.results[0]

    def took(self, data: bytes) -> None:
        if not data:
            raise EOFError("the worker closed the connection")
        self.pending.extend(self.frames.feed(data))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
        self.sock.close()


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 1e-6)


# --- the caller's side ----------------------------------------------------------------------
def call(pool: AsyncPool, loop: LoopThread, req: Any, budget: float | None,
         idempotent: bool | None) -> Any:
    """Run a prepared call on a worker lent to this thread; FALLBACK when none is free (the
    caller then goes through the loop, which lends one once the pool is idle)."""
    lending = pool.lending
    link = lending.checkout(req)
    if link is None:
        return FALLBACK
    w = link.worker
    started = time.monotonic()  # = the loop's clock (asyncio uses time.monotonic)
    deadline = None if budget is None else started + budget
    sent = answered = False
    try:
        cid = w.next_call_id()
        if telemetry.enabled(DISPATCHED):
            telemetry.emit(DISPATCHED, {"queue_ms": 0.0}, {
                "pool": pool.name, "worker": w.id, "tool": req.tool_name,
                "correlation_id": req.metadata.get("correlation_id", "")})
        frame = encode(pb.LaneRequest(calls=[pb.LaneCall(
            call_id=cid, request=req, timeout_ms=budget * 1000 if budget else 0,
            deadline_unix_ns=time.time_ns() + int(budget * 1e9) if budget else 0)]))
        try:
            link.send(frame, deadline)
        except TimeoutError:
            sent = True  # perhaps in part: the worker may have the call
            raise
        except OSError:  # it never reached the worker: hand the link back, run it elsewhere
            loop.call_soon(lending.broken, link, None)
            return FALLBACK
        sent = True
        result = link.receive(cid, deadline)
        answered = True
        resp = result.response
        w.served += 1
        w.avg_ms += (resp.execution_time_ms - w.avg_ms) * 0.1
        if link.checkin(give_back=bool(w.max_requests and w.served >= w.max_requests)):
            loop.call_soon(lending.returned, link)
    except TimeoutError:
        loop.call_soon(lending.abandoned, link, cid)
        w.errors += 1
        timeout_err = timed_out(req.tool_name, w)
        record(pool, req, time.monotonic() - started, timeout_err)
        raise timeout_err from None
    except (OSError, EOFError, FrameError, DecodeError) as exc:
        return _after_break(pool, loop, link, cid, req, deadline, idempotent, started, exc)
    except BaseException:  # KeyboardInterrupt and the like
        if sent and not answered:
            loop.call_soon(lending.abandoned, link, cid)  # cancel it in the worker
        elif link.state is BUSY and link.checkin(give_back=True):
            loop.call_soon(lending.returned, link)
        raise
    value, err = answer(pool, w, req, resp)
    record(pool, req, time.monotonic() - started, err)
    if err is not None:
        raise err
    return value


def _after_break(pool: AsyncPool, loop: LoopThread, link: DirectLink, cid: int, req: Any,
                 deadline: float | None, idempotent: bool | None, started: float,
                 exc: BaseException) -> Any:
    """The connection broke with the call out (the worker died, most likely): the loop learns
    the worker's fate and answers as for a lane call, retrying or rerunning where it may."""
    log.debug("worker %s: direct connection broke: %s", link.worker.id, exc)
    done = threading.Event()
    box: list[Any] = [None, None]

    def deliver(value: Any, err: BaseException | None) -> None:
        box[0], box[1] = value, err
        done.set()

    loop.call_soon(pool.lending.broken, link, (cid, req, deadline, idempotent, started, deliver))
    while not done.wait(SHUTDOWN_POLL_S):
        if loop.loop.is_closed() or not loop.loop.is_running():
            raise ShutdownError(f"pool {pool.name!r} closed while the call was out")
    if box[1] is not None:
        raise box[1]
    return box[0]


# --- the loop's side ------------------------------------------------------------------------
class Lending:
    """Which workers of a pool are lent to blocking callers, and getting them back. Every
    method but `checkout` runs on the pool's loop."""

    def __init__(self, pool: AsyncPool) -> None:
        self.pool = pool
        self.enabled = pool.config.direct_calls
        self.links: tuple[DirectLink, ...] = ()  # lent (IDLE or BUSY); callers read it as is
        self.demand = False  # a blocking caller found none free (set from any thread)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._holding = False  # a slot is being given back: do not lend it again right away

    def checkout(self, req: Any) -> DirectLink | None:
        """A lent worker for this call, now BUSY for the calling thread; None: use the loop
        (and ask for a worker to be lent)."""
        pool = self.pool
        if not self.enabled or pool._state != "running" or req.session_id:
            return None
        barrier = pool.barrier
        if barrier.breaker.state != "closed" or barrier.has_poison():
            return None  # the loop's path checks and counts those
        skipped = False
        for link in self.links:
            shm = link.worker.shm
            if shm is not None and shm.result_sizes.get(req.tool_name, 0) >= shm.threshold:
                skipped = True  # its results are large: the loop offers an arena for them
                continue
            if link.checkout():
                return link
        if skipped:
            return None
        self.demand = True
        return None

    def idle_slots(self, worker: WorkerHandle) -> int:
        """1 when the worker is lent and no call is out on it (its slot is held, not busy)."""
        link = worker.direct
        return int(link is not None and link.state is IDLE and link in self.links)

    # --- lending and taking back -------------------------------------------------------------
    def park(self, worker: WorkerHandle) -> None:
        """Lend ``worker`` (idle, just freed) to blocking callers, if one asked."""
        pool = self.pool
        if not (self.demand and self.enabled and not self._holding
                and pool._state == "running"
                and worker.in_flight == 0 and worker.accepting and worker.state == "ready"
                and not worker.recycle_reason and worker.capacity == 1
                and worker.lendable and not pool._sched.queue):
            return
        link = worker.direct
        if link is None:
            try:
                link = DirectLink.connect(worker, str(worker.lane_socket),
                                          pool.config.max_message_mb * 1024 * 1024)
            except OSError as exc:
                log.info("worker %s: cannot be lent to blocking callers: %s", worker.id, exc)
                worker.lendable = False
                return
            worker.direct = link
        # The lent worker's slot is taken (and no call is pipelined to it) until it is back.
        worker.in_flight += 1
        worker.exclusive_calls += 1
        with link.lock:
            link.state, link.wanted = IDLE, False
        self.links = (*self.links, link)
        self.demand = False

    def unpark(self, worker: WorkerHandle) -> None:
        """``worker`` must stop being lent (recycle, death, close): free its slot now, or ask
        for it back."""
        link = worker.direct
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

    def _release(self, link: DirectLink) -> None:
        """The lent slot goes back to the loop: queued calls get it, a max_requests recycle
        starts. Not lent again at once: it was taken back for a reason."""
        self._forget(link)
        w = link.worker
        w.exclusive_calls -= 1
        if not w.lendable and w.direct is link:
            w.direct = None
            link.close()
        self._holding = True
        try:
            w.slot_freed()
        finally:
            self._holding = False

    def _drop(self, link: DirectLink) -> None:
        """The link is done for (broken, or its worker is gone): close it, free the slot."""
        link.close()
        w = link.worker
        if w.direct is link:
            w.direct = None
        if link in self.links:
            self._release(link)
        else:
            w.exclusive_calls -= 1
            w.slot_freed()

    def retire(self, worker: WorkerHandle) -> None:
        """The worker stops or died: no more direct calls; a call still out ends with the
        connection (`broken` answers it)."""
        worker.lendable = False
        link = worker.direct
        if link is None:
            return
        if link in self.links and link.reclaim():
            self._release(link)
        with link.lock:
            busy = link.state is BUSY
        if busy:
            with contextlib.suppress(OSError):
                link.sock.shutdown(socket.SHUT_RDWR)
        else:
            worker.direct = None
            link.close()

    # --- calls that went wrong ---------------------------------------------------------------
    def abandoned(self, link: DirectLink, cid: int) -> None:
        """A direct call ran out of time or its caller gave up: cancel it in the worker and
        drain its late answer, as the lane does for its calls."""
        self._forget(link)
        self._spawn(self._finish_abandoned(link, cid))

    async def _finish_abandoned(self, link: DirectLink, cid: int) -> None:
        w = link.worker
        await w.send_cancel(cid)
        loop = asyncio.get_running_loop()
        try:
            link.sock.setblocking(False)
            await asyncio.wait_for(self._drain(loop, link, cid), CANCEL_GRACE_S)
        except asyncio.TimeoutError:
            if w.state != "dead":
                w.exit_reason = (f"was killed: a cancelled call did not stop within "
                                 f"{CANCEL_GRACE_S:g} s")
                w.kill()
            self._drop(link)
            return
        except (OSError, EOFError, FrameError, DecodeError):
            self._drop(link)  # it died meanwhile: its exit is the lane's business
            return
        link.sock.setblocking(True)
        with link.lock:
            link.state, link.wanted = OFF, False
        w.exclusive_calls -= 1
        w.slot_freed()  # the call has really ended: the worker takes calls again

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
        err: Exception
        if w.exit_info is not None:
            progress, message, details, error = w.exit_info
            err = exit_error(cid, progress, message, details, error, lone=True)
        else:
            err = WorkerExit(f"worker {w.id} (pid {w.pid}) {w.exit_reason or 'lost its lane'}")
        pool = self.pool
        if idempotent is None:
            idempotent = req.tool_name in pool.config.idempotent_tools
        run = CallRun(pool, req, deadline, deliver, idempotent)
        run.started = started
        run._outcome(w, None, err)  # reruns, retries or answers, as for a lane call

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """At pool close, after the workers stopped: let the tasks above finish."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CANCEL_GRACE_S + 1)
