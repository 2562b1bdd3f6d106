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

The loop stays the owner of pool state: a caller touches only its link (its state under the
link's lock, its call count) and reports each call's outcome to `Lending.report`, a queue the
loop settles in batches (`Lending.settle`: worker counters, breaker, metrics, telemetry) every
REPORT_FLUSH_S while calls come, before it gives a worker back or takes a snapshot: a caller's
call costs no extra wake-up of the loop (only the first after the pool was idle wakes it), and
telemetry handlers run on the loop thread as for any other call. Anything unusual goes back to
the loop: a deadline or an interrupt (`abandoned`: the call is cancelled in the worker, its
late answer drained, the worker killed if it does not stop within CANCEL_GRACE_S, as for lane
calls), a broken connection (`broken`: the worker's exit names the error, with the lane's
culprit rules; a call it never started runs elsewhere, an idempotent one is retried).
Only calls without a session, shared-memory payloads or a busy circuit go direct, and only on
workers of the process profile whose lane socket takes several connections. Both halves live
here: the link (`DirectLink`, any thread, under its lock), the loop's half (`Lending`: every
method but `checkout` and `report` runs on the loop) and the caller's half (`call`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf.message import DecodeError

from ..errors import ShutdownError
from ..logs import logger
from ..protocol import pb
from ..protocol.frames import FrameBuffer, FrameError
from ..telemetry import tracing
from .call import CallHost, CallRun, dispatched, note_answer, read_answer, record, timed_out
from .lane import CANCEL_GRACE_S
from .lane_wire import lane_call, request_frame

if TYPE_CHECKING:
    from .host.loop_thread import LoopThread
    from .worker_handle import WorkerHandle

log = logger("worker")

OFF, IDLE, BUSY = "off", "idle", "busy"
FALLBACK = object()  # `call`'s answer when the call must go through the loop
ASK = object()  # ... and when no lent worker was free: ask the loop to lend one (`want`)
SHUTDOWN_POLL_S = 0.1
REPORT_FLUSH_S = 0.05  # direct calls' outcomes wait at most this long to be settled
IDLE_TICKS = 20  # settling stops after this many ticks with nothing to settle (a caller resumes)

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
        # calls served since it was lent, on top of the worker's count then (max_requests)
        self.base_served = 0
        self.calls = 0

    @classmethod
    def connect(cls, worker: WorkerHandle, path: str, limit: int) -> DirectLink:
        """Connect without blocking (this runs on the loop): a unix socket's connect succeeds
        at once or fails, BlockingIOError when the worker's backlog is full."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        sock.setblocking(True)
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
            self.took(self.sock.recv_into(self.frames.get_buffer()))
        msg = pb.LaneResponse.FromString(self.pending.popleft())
        if len(msg.results) != 1 or msg.results[0].call_id != cid:
            raise FrameError(f"expected the answer to call {cid}")
        return msg.results[0]

    def took(self, n: int) -> None:
        """``n`` bytes were read into ``frames.get_buffer()``."""
        if not n:
            raise EOFError("the worker closed the connection")
        self.pending.extend(self.frames.filled(n))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
        self.sock.close()


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 1e-6)



class LendingHost(CallHost, Protocol):
    """What lending needs of the pool besides what its calls need."""

    @property
    def state(self) -> str: ...
    def has_queued(self) -> bool: ...


class Lending:
    """Which workers of a pool are lent to blocking callers, and getting them back. Every
    method but `checkout` and `report` runs on the pool's loop."""

    def __init__(self, pool: LendingHost) -> None:
        self.pool = pool
        self.enabled = pool.config.direct_calls
        self.links: tuple[DirectLink, ...] = ()  # lent (IDLE or BUSY); callers read it as is
        self._link_of: dict[str, DirectLink] = {}  # worker id -> its connection, once made
        self.demand = False  # a blocking caller found none free (`want`)
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

    def checkout(self, req: Any) -> DirectLink | object:
        """A lent worker for this call, now BUSY for the calling thread (any thread: reads
        the links tuple and the breaker, writes nothing of the pool's). FALLBACK: the call
        must take the loop's path; ASK: none was free, the loop should lend one (`want`)."""
        pool = self.pool
        if not self.enabled or pool.state != "running" or req.session_id:
            return FALLBACK
        barrier = pool.barrier
        if barrier.breaker.state != "closed" or barrier.has_poison():
            return FALLBACK  # the loop's path checks and counts those
        skipped = False
        for link in self.links:
            shm = link.worker.channel.shm
            if shm is not None and shm.expects_large_result(req.tool_name):
                skipped = True  # the loop's path offers it an arena for the result
                continue
            if link.checkout():
                return link
        return FALLBACK if skipped else ASK

    def want(self) -> None:
        """A blocking caller found no lent worker free: lend the next one that comes free
        (`park`). On the loop, as the caller's call is dispatched there."""
        self.demand = True

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
                and worker.channel.lendable and not pool.has_queued()):
            return
        link = self._link_of.get(worker.id)
        if link is None:
            try:
                link = DirectLink.connect(worker, str(worker.process.lane_socket),
                                          pool.config.max_message_bytes)
            except BlockingIOError:
                return  # its backlog is full for now: not lent this time
            except OSError as exc:
                log.info("worker %s: cannot be lent to blocking callers: %s", worker.id, exc)
                worker.channel.lendable = False
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
        if not w.channel.lendable and self._link_of.get(w.id) is link:
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
        worker.channel.lendable = False
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
        await w.channel.send_cancel(cid)
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
            link.took(await loop.sock_recv_into(link.sock, link.frames.get_buffer()))

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
            w.channel.lendable = False
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


class DirectHost(Protocol):
    """What a direct call needs of its pool."""

    @property
    def name(self) -> str: ...
    @property
    def lending(self) -> Lending: ...


# --- the caller's side ----------------------------------------------------------------------
def call(pool: DirectHost, loop: LoopThread, req: Any, budget: float | None,
         idempotent: bool | None) -> Any:
    """Run a prepared call on a worker lent to this thread; FALLBACK or ASK (see
    `Lending.checkout`) when it cannot: the caller then goes through the loop, which lends a
    worker once the pool is idle."""
    lending = pool.lending
    link = lending.checkout(req)
    if not isinstance(link, DirectLink):
        return link
    w = link.worker
    started = time.monotonic()  # = the loop's clock (asyncio uses time.monotonic)
    deadline = None if budget is None else started + budget
    sent = answered = False
    try:
        cid = w.channel.next_call_id()
        frame = request_frame([lane_call(cid, req, budget)])
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
        value, err, size = read_answer(pool.name, w, req, resp)
        # here, not when the loop settles the call (up to REPORT_FLUSH_S later)
        tracing.finish(req, err, {"pit.worker": w.id, "pit.queue_ms": 0.0})
        link.calls += 1
        # before the link can be handed back: the loop settles it first
        if lending.report(w, req, resp, size, time.monotonic() - started, err):
            loop.call_soon(lending.resume)
        served = link.base_served + link.calls
        # A large result: the tool's next call wants an arena, which only the loop offers.
        large = size is not None and w.channel.shm is not None and size >= w.channel.shm.threshold
        if link.checkin(give_back=large or bool(w.max_requests and served >= w.max_requests)):
            loop.call_soon(lending.returned, link)
    except TimeoutError:
        timeout_err = timed_out(req.tool_name, w)
        lending.report(w, req, None, None, time.monotonic() - started, timeout_err)
        loop.call_soon(lending.abandoned, link, cid, req)
        raise timeout_err from None
    except (OSError, EOFError, FrameError, DecodeError) as exc:
        return _after_break(pool, loop, link, cid, req, deadline, idempotent, started, exc)
    except BaseException:  # KeyboardInterrupt and the like
        if sent and not answered:
            loop.call_soon(lending.abandoned, link, cid, req)  # cancel it in the worker
        elif link.state is BUSY and link.checkin(give_back=True):
            loop.call_soon(lending.returned, link)
        raise
    if err is not None:
        raise err
    return value


def _after_break(pool: DirectHost, loop: LoopThread, link: DirectLink, cid: int, req: Any,
                 deadline: float | None, idempotent: bool | None, started: float,
                 exc: BaseException) -> Any:
    """The connection broke with the call out (the worker died, most likely): the loop learns
    the worker's fate and answers as for a lane call, retrying or rerunning where it may."""
    log.debug("worker %s: direct connection broke: %s", link.worker.id, exc)
    fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def deliver(value: Any, err: BaseException | None) -> None:
        fut.set_exception(err) if err is not None else fut.set_result(value)

    loop.call_soon(pool.lending.broken, link, (cid, req, deadline, idempotent, started, deliver))
    while not concurrent.futures.wait([fut], SHUTDOWN_POLL_S).done:
        if loop.loop.is_closed() or not loop.loop.is_running():
            raise ShutdownError(f"pool {pool.name!r} closed while the call was out")
    return fut.result()
