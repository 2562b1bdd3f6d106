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
workers of the process profile whose lane socket takes several connections. This module is
the caller's half (`DirectLink`, `call`); the loop's half is `lending.Lending`.
"""

from __future__ import annotations

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
from ..protocol.frames import FrameBuffer, FrameError, encode
from .call import read_answer, timed_out

if TYPE_CHECKING:
    from .host.loop_thread import LoopThread
    from .worker_handle import WorkerHandle


class LendingPort(Protocol):
    """The loop's half of direct calls, as a caller uses it (`lending.Lending`)."""

    def checkout(self, req: Any) -> DirectLink | None: ...
    def report(self, worker: WorkerHandle, req: Any, resp: Any, size: int | None,
               took: float, err: BaseException | None) -> bool: ...
    def resume(self) -> None: ...
    def returned(self, link: DirectLink) -> None: ...
    def abandoned(self, link: DirectLink, cid: int, req: Any) -> None: ...
    def broken(self, link: DirectLink, call: tuple[Any, ...] | None) -> None: ...


class DirectHost(Protocol):
    """What a direct call needs of its pool."""

    @property
    def name(self) -> str: ...
    @property
    def lending(self) -> LendingPort: ...

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
def call(pool: DirectHost, loop: LoopThread, req: Any, budget: float | None,
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
        value, err, size = read_answer(pool.name, w, req, resp)
        link.calls += 1
        # before the link can be handed back: the loop settles it first
        if lending.report(w, req, resp, size, time.monotonic() - started, err):
            loop.call_soon(lending.resume)
        served = link.base_served + link.calls
        # A large result: the tool's next call wants an arena, which only the loop offers.
        large = size is not None and w.shm is not None and size >= w.shm.threshold
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
