"""The host end of one worker's call lane.

    send(): outbox --> link --> LaneRequest{calls: [...]} --> worker
    link <-- LaneResponse{results: [...]} <-- worker  --> on_done callbacks

The link is the worker's lane socket (frames on a unix socket, runtime.protocol.frames) or,
for a worker without one, pit's `CallLane` gRPC stream. Whatever piled up in the outbox since
the last write travels as one message (split to stay under the message limit). Each call's
``on_done`` is called exactly once, straight from the reader, with no task or future between.

A call whose deadline passes (or whose caller gives up) is answered at once and cancelled in
the worker (`CancelCalls`); its slot stays taken until the worker reports the call ended, and a
worker that has not within CANCEL_GRACE_S is killed, so an abandoned call never runs on unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import ssl
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from google.protobuf.message import DecodeError

from ..errors import CallTimeout, WorkerExit, WorkerStartError
from ..logs import logger
from ..protocol import pb
from ..protocol.frames import END, FrameBuffer, FrameError
from ..protocol.secret import lane_hello
from .lane_wire import Call, batches, lane_call, request_frame, request_message

if TYPE_CHECKING:
    from ..protocol.tls import HostTls

log = logger("grpc")

CANCEL_GRACE_S = 2.0  # a cancelled call must end within this, or the worker is killed
SWEEP_SLACK_S = 0.001  # a deadline this close when the sweep runs counts as passed

OnDone = Callable[[Any, "BaseException | None"], None]


class LaneWorker(Protocol):
    """What a lane needs of the worker it serves (`WorkerHandle` is one)."""

    id: str
    served: int
    errors: int
    avg_ms: float

    @property
    def pid(self) -> int | None: ...
    @property
    def exit_reason(self) -> str: ...
    def slot_freed(self) -> None: ...
    def lane_unavailable(self) -> None: ...
    def kill_stuck(self, req: Any) -> None: ...
    async def wait_exit(self) -> None: ...


class NotStarted(Exception):
    """A call the dead worker had not started yet: safe to run on another worker."""


def deliver(on_done: OnDone, value: Any, err: BaseException | None) -> None:
    try:
        on_done(value, err)
    except Exception:  # noqa: BLE001 - a broken callback must not stop the lane reader
        traceback.print_exc()


def exit_error(cid: int, progress: tuple[int, int] | None, message: str,
               details: dict[str, Any], error: type[WorkerExit], lone: bool) -> Exception:
    """What call ``cid`` gets when its worker died: NotStarted for a call it never started
    (the pool runs it elsewhere), WorkerExit for one it had finished (the result was lost),
    ``error`` for the one it was running. ``progress`` is (running, last done) from the
    worker's progress file; without it (thread profile) only a ``lone`` call is surely the
    culprit."""
    if progress is not None and cid > max(progress):
        return NotStarted(message)
    if progress is not None and cid != progress[0]:
        return WorkerExit(f"{message} after running the call, before sending its result",
                          details={**details, "culprit": False})
    culprit = progress is not None or lone
    return error(message, details={**details, "culprit": culprit, "call_id": cid})


class Lane:
    """Calls to one worker and their answers; the transport is a `_GrpcLink` (the `CallLane`
    stream) or a `SocketLink` (the same messages as frames on a unix socket, ~6x faster)."""

    def __init__(self, worker: LaneWorker, stub: Any, max_message_bytes: int) -> None:
        self.worker = worker
        self._stub = stub
        self._loop = asyncio.get_running_loop()
        self._max_batch_bytes = max_message_bytes // 2
        self._ids = itertools.count(1)
        # call id -> (on_done, deadline (loop time, inf: none), time sent); in send order
        self.pending: dict[int, tuple[OnDone, float, float, Any]] = {}  # + request
        # One timer for all deadlines, armed at the earliest (a timer per call cost ~8 µs).
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf
        self._abandoned: dict[int, tuple[asyncio.TimerHandle, Any]] = {}  # + request
        self._outbox: list[Call] = []
        self._closed = False  # fail_all or close: nothing more goes out
        self._link: _GrpcLink | SocketLink

    @classmethod
    async def open(cls, worker: LaneWorker, stub: Any, max_message_bytes: int,
                   socket_path: str | None = None, secret: str = "",
                   tls: HostTls | None = None) -> Lane:
        """A lane over ``socket_path`` when given (a unix socket path, or "tcp:HOST:PORT",
        opened with ``secret``'s hello, inside TLS with ``tls``), falling back to gRPC if it
        cannot be reached (not if its certificate is refused: WorkerStartError); else over
        the gRPC stream."""
        lane = cls(worker, stub, max_message_bytes)
        if socket_path:
            try:
                if socket_path.startswith("tcp:"):
                    host, _, port = socket_path[4:].rpartition(":")
                    transport, lane._link = await lane._loop.create_connection(
                        lambda: SocketLink(lane, max_message_bytes), host, int(port),
                        ssl=None if tls is None else tls.client_context(),
                        server_hostname=None if tls is None else tls.server_hostname(host))
                    transport.write(lane_hello(secret))  # before any frame
                else:
                    _, lane._link = await lane._loop.create_unix_connection(
                        lambda: SocketLink(lane, max_message_bytes), socket_path)
                return lane
            except ssl.SSLError as exc:
                raise WorkerStartError(
                    f"worker {worker.id}: TLS on its call lane ({socket_path}) failed: {exc}",
                    details={"worker": worker.id},
                    hint="the pool's tls.ca must have issued the worker's certificate, and "
                         "tls.server_name must be a name in it") from None
            except OSError as exc:
                log.warning("worker %s: lane socket %s: %s; using the gRPC stream",
                            worker.id, socket_path, exc)
        lane._link = _GrpcLink(lane, stub)
        return lane

    @property
    def kind(self) -> str:
        return "socket" if isinstance(self._link, SocketLink) else "grpc"

    def oldest_age(self) -> float:
        """Seconds since the oldest unanswered call was sent (0: nothing out)."""
        return self._loop.time() - next(iter(self.pending.values()))[2] if self.pending else 0.0

    # --- sending ----------------------------------------------------------------------------
    def send(self, req: Any, timeout: float | None, on_done: OnDone) -> int:
        cid = self.next_id()
        now = self._loop.time()
        deadline = math.inf if timeout is None else now + timeout
        self.pending[cid] = (on_done, deadline, now, req)
        if deadline < self._sweep_at:
            self._arm(deadline)
        self._outbox.append(lane_call(cid, req, timeout))
        if self._closed:  # a call sent after the end: it never reaches the worker
            self.write_failed([], ConnectionResetError("the call lane is closed"))
        else:
            self._link.kick()
        return cid

    def take_outbox(self) -> list[list[Call]]:
        """What piled up since the last write, as messages under the size limit."""
        calls, self._outbox = self._outbox, []
        return batches(calls, self._max_batch_bytes) if calls else []

    def write_failed(self, calls: list[Call], exc: BaseException) -> None:
        """These calls (and any still in the outbox) never reached the worker: NotStarted runs
        them elsewhere (the same rule fail_all applies to calls the worker had not started)."""
        w = self.worker
        err = NotStarted(f"worker {w.id} (pid {w.pid}) could not take the "
                         f"call: {w.exit_reason or type(exc).__name__}")
        for call in [*calls, *self._outbox]:
            entry = self.pending.pop(call.call_id, None)
            if entry is not None:
                w.slot_freed()
                deliver(entry[0], None, err)
        self._outbox = []

    # --- receiving --------------------------------------------------------------------------
    def received(self, msg: Any) -> None:
        w = self.worker
        for result in msg.results:
            resp = result.response
            # Exponential average of run time decides whether calls are small enough
            # to pipeline (see WorkerHandle.limit).
            w.avg_ms += (resp.execution_time_ms - w.avg_ms) * 0.1
            entry = self.pending.pop(result.call_id, None)
            if entry is not None:
                on_done = entry[0]
                w.served += 1
                w.slot_freed()
                deliver(on_done, resp, None)
            elif self._abandoned.pop(result.call_id, None) is not None:
                w.slot_freed()  # a timed-out call has now really ended

    # --- deadlines and cancelling -----------------------------------------------------------
    def _arm(self, at: float) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        self._sweep_at = at
        if at < math.inf:
            self._sweep_timer = self._loop.call_at(at, self._sweep)

    def _sweep(self) -> None:
        """Time out every call past its deadline; re-arm for the earliest one left."""
        self._sweep_timer = None
        now = self._loop.time() + SWEEP_SLACK_S
        overdue = [cid for cid, entry in self.pending.items() if entry[1] <= now]
        for cid in overdue:
            self.abandon(cid, CallTimeout(f"call timed out on worker {self.worker.id}; the "
                                          "worker was told to cancel it",
                                          details={"worker": self.worker.id}))
        self._arm(min((entry[1] for entry in self.pending.values()),
                      default=math.inf))

    def abandon(self, cid: int, err: BaseException) -> None:
        """Answer call ``cid`` with ``err`` now and cancel it in the worker."""
        entry = self.pending.pop(cid, None)
        if entry is None:
            return
        on_done = entry[0]
        self._abandoned[cid] = (self._loop.call_later(CANCEL_GRACE_S, self._overdue, cid),
                                entry[3])
        self._loop.create_task(self.send_cancel(cid))
        self.worker.errors += 1
        deliver(on_done, None, err)

    def next_id(self) -> int:
        """A call id (any thread: direct calls share the sequence, so the worker's progress
        file orders every call; next() of an itertools.count is atomic under the GIL)."""
        return next(self._ids)

    async def send_cancel(self, cid: int) -> None:
        with contextlib.suppress(Exception):
            await self._stub.CancelCalls(pb.CancelCallsRequest(call_ids=[cid]), timeout=1.0)

    def _overdue(self, cid: int) -> None:
        abandoned = self._abandoned.pop(cid, None)
        if abandoned is not None:
            self.worker.kill_stuck(abandoned[1])

    # --- the end ----------------------------------------------------------------------------
    def fail_all(self, progress: tuple[int, int] | None, message: str,
                 details: dict[str, Any], error: type[WorkerExit]) -> None:
        """The worker died. The call it was running gets ``error``; calls it had finished
        get WorkerExit (their results were lost); calls it never started get NotStarted,
        which the pool runs elsewhere. Without progress every call gets ``error``."""
        self._closed = True
        self._link.stop_writing()
        self._outbox = []  # those calls are in `pending`: answered below
        pending, self.pending = self.pending, {}
        for overdue, _ in self._abandoned.values():
            overdue.cancel()
        self._abandoned.clear()
        self._arm(math.inf)
        for cid, (on_done, *_) in pending.items():
            deliver(on_done, None, exit_error(cid, progress, message, details, error,
                                              lone=len(pending) == 1))

    async def close(self) -> None:
        """No more calls: end the stream so the worker's handler returns."""
        self._closed = True
        await self._link.done_writing()

    async def wait_reader(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the reader to end (then end it); whether it had."""
        return await self._link.wait_closed(timeout)


class _GrpcLink:
    """The lane as pit's `CallLane` bidi gRPC stream: a writer task and a reader task."""

    def __init__(self, lane: Lane, stub: Any) -> None:
        self._lane = lane
        self._call = stub.CallLane()
        self._ready = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read())
        self._writer = loop.create_task(self._write())

    def kick(self) -> None:
        self._ready.set()

    async def _write(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            todo = self._lane.take_outbox()
            for i, batch in enumerate(todo):
                try:
                    await self._call.write(request_message(batch))
                except Exception as exc:  # noqa: BLE001 - the lane is gone
                    self._lane.write_failed([c for b in todo[i:] for c in b], exc)
                    return

    async def _read(self) -> None:
        w = self._lane.worker
        try:
            while True:
                msg = await self._call.read()
                if msg is grpc.aio.EOF:
                    break
                self._lane.received(msg)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                log.info("worker %s has no call lane: unary calls from now on", w.id)
                w.lane_unavailable()
                return
            log.debug("worker %s: call lane ended: %s %s", w.id, exc.code().name,
                      exc.details())
        await w.wait_exit()

    def stop_writing(self) -> None:
        self._writer.cancel()

    async def done_writing(self) -> None:
        self._writer.cancel()
        with contextlib.suppress(Exception):
            await self._call.done_writing()

    async def wait_closed(self, timeout: float) -> bool:
        if not self._reader.done():
            await asyncio.wait({self._reader}, timeout=timeout)
        ended = self._reader.done()
        self._reader.cancel()
        return ended


class SocketLink(asyncio.BufferedProtocol):
    """The lane as frames on the worker's lane socket (runtime.protocol.frames). A call goes
    out at once, the calls sent after it in the same loop iteration as one frame; answers are
    read straight into the link's FrameBuffer and handled from buffer_updated, with no task
    in between."""

    def __init__(self, lane: Lane, limit: int) -> None:
        self._lane = lane
        self._frames = FrameBuffer(limit)
        self._transport: asyncio.Transport | None = None
        self._flush_pending = False
        self._stopped = False
        self._broken: asyncio.Task[None] | None = None
        self._closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def kick(self) -> None:
        # The first call of a loop iteration goes out at once (a lone call waits for
        # nothing); calls sent after it in the same iteration follow as one frame, written
        # by the callback scheduled here, which runs while the worker is busy anyway.
        if not self._flush_pending:
            self._flush_pending = True
            self._lane._loop.call_soon(self._flush)
            self._write()

    def _flush(self) -> None:
        self._flush_pending = False
        if not self._stopped:
            self._write()

    def _write(self) -> None:
        todo = self._lane.take_outbox()
        t = self._transport
        if t is None or t.is_closing():
            self._lane.write_failed([c for b in todo for c in b],
                                    ConnectionResetError("the lane socket is closed"))
            return
        for batch in todo:
            t.write(request_frame(batch))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._frames.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            for frame in self._frames.filled(nbytes):
                self._lane.received(pb.LaneResponse.FromString(frame))
        except (FrameError, DecodeError) as exc:
            log.error("worker %s: bad frame on the call lane: %s", self._lane.worker.id, exc)
            assert self._transport is not None
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("worker %s: call lane ended: %s", self._lane.worker.id, exc)
        self._closed.set_result(None)
        self._broken = self._lane._loop.create_task(self._lane.worker.wait_exit())

    def stop_writing(self) -> None:
        self._stopped = True  # nothing more goes out

    async def done_writing(self) -> None:
        if not self._stopped:
            self._write()  # calls sent in this loop iteration still go out
        self.stop_writing()
        t = self._transport
        if t is not None and not t.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                if t.can_write_eof():
                    t.write_eof()
                else:  # TLS: no half-close
                    t.write(END)

    async def wait_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the worker to close the connection (then abort it);
        whether it had."""
        if not self._closed.done():
            await asyncio.wait({self._closed}, timeout=timeout)
            if not self._closed.done() and self._transport is not None:
                self._transport.abort()
                return False
        return True
