"""How calls reach one worker: its gRPC channel, its call lane and its shared memory.

    send(req) --> shm.attach (large bytes into arenas) --> Lane.send --> lane socket frames
                                                       |              or the CallLane stream
                                                       \\-> unary ExecuteTool (no lane)
    stream(req) --> ExecuteStreamingTool        ping() / cleanup_session() --> unary RPCs
    an answer --> read_result (out of its arena, or the message) --> the caller's on_done

It opens in two steps: `connect` (the gRPC channel: enough to ping a command-started worker
while it comes up), then `open` once the worker is ready (the lane, the telemetry relay and
shared memory, as far as the worker's announced features allow). A failed RPC usually means
the worker died: the channel waits up to EXIT_WAIT_S for its owner's record of the exit (the
``exited`` future) and answers with the owner's `death_error`. It knows nothing of the process
behind it (`worker_process`) nor of the pool: its owner (`ChannelOwner`, the `WorkerHandle`)
keeps the counts and hands slots back. The loop's, except `next_call_id` and `read_result`,
which blocking callers' threads use for direct calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from ..errors import CallTimeout, WorkerExit, WorkerStartError, from_payload
from ..logs import logger
from ..protocol import arrays, channel_options, codec, pb, pb_grpc, shm
from ..protocol.secret import SecretStub
from ..telemetry.control import DEFAULT as ALL_EVENTS
from ..telemetry.control import TelemetryControl
from .host.telemetry_relay import TelemetryRelay
from .lane import Lane, LaneWorker, OnDone, deliver
from .lane_wire import worker_timeout
from .shm import Grant, WorkerShm

if TYPE_CHECKING:
    from ..config import PoolConfig
    from ..protocol.tls import HostTls

# A command-started worker is pinged before it listens: without these, gRPC's reconnect
# backoff (1 s at first) made each one take ~1 s longer to be found ready than it was.
COMMAND_CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 20),
                           ("grpc.min_reconnect_backoff_ms", 20),
                           ("grpc.max_reconnect_backoff_ms", 500))
EXIT_WAIT_S = 1.0  # after a connection breaks, how long to wait for the exit code
TLS_CHECK_S = 10.0  # a worker on TLS must answer a first ping within this (handshake included)

grpc_log = logger("grpc")


class ChannelOwner(LaneWorker, Protocol):
    """What a channel needs of the worker it serves (`WorkerHandle` is one)."""

    in_flight: int
    state: str
    exclusive_calls: int

    def death_error(self, lone: bool, cid: int = 0) -> Exception: ...


def _deliver_task(on_done: OnDone, task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        deliver(on_done, None, WorkerExit("the call was cancelled"))
    elif task.exception() is not None:
        deliver(on_done, None, task.exception())
    else:
        deliver(on_done, task.result(), None)


class WorkerChannel:
    """The ways to one worker's server. ``lane`` is None until `open`, and for a worker
    without the call lane (unary calls then); ``shm`` is None without shared memory."""

    def __init__(self, worker: ChannelOwner, config: PoolConfig, exited: asyncio.Future[Any],
                 *, shm_name: str, pipeline: int) -> None:
        self.worker = worker
        self.config = config
        self.pipeline = pipeline  # calls a busy worker's lane may carry beyond its capacity
        self.lane: Lane | None = None
        self.shm: WorkerShm | None = None  # shared-memory arenas, once ready (Linux)
        self.lendable = False  # set once ready, when its lane socket takes more connections
        self.exit_wait_s = EXIT_WAIT_S  # how long a failed RPC waits for the exit's record
        self._exited = exited  # done once the owner has recorded the worker's exit
        self._shm_name = shm_name
        self._loop = asyncio.get_running_loop()
        self._channel: Any = None
        self._stub: Any = None
        self._relay: asyncio.Task[Any] | None = None
        self._telemetry: TelemetryRelay | None = None
        # the pool's telemetry control: sent when the relay opens, and on every change
        self.telemetry_control: TelemetryControl = ALL_EVENTS
        self._unary: dict[int, asyncio.Task[Any]] = {}  # unary calls out, by call id
        self._unary_ids = itertools.count(1)
        self.route = ""  # set when calls go through a stand-in stub (`use_stub`)

    # --- opening ----------------------------------------------------------------------------
    def connect(self, address: str, secret: str = "", tls: HostTls | None = None) -> None:
        """The gRPC channel to ``address`` (it connects on first use); every RPC carries
        ``secret`` when one is given (a worker on TCP: `protocol.secret`), over TLS with
        ``tls`` (`protocol.tls`)."""
        options = [*channel_options(self.config.max_message_bytes),
                   *(COMMAND_CHANNEL_OPTIONS if self.config.worker != "pit" else ())]
        self._channel = grpc.aio.insecure_channel(address, options=options) if tls is None \
            else grpc.aio.secure_channel(address, tls.channel_credentials(),
                                         options=[*options, *tls.channel_options()])
        self._stub = pb_grpc.BridgeServiceStub(self._channel)
        if secret:
            self._stub = SecretStub(self._stub, secret)

    def use_stub(self, stub: Any, route: str) -> None:
        """Calls go through ``stub`` (the gRPC stub's methods, e.g. `ray_stub.RayActorStub`
        for a Ray worker the host cannot reach) instead of a gRPC channel: unary calls, no
        lane, telemetry relay or shared memory; ``route`` names it in `lane_kind`."""
        self._stub, self.route = stub, route

    async def open(self, ready_info: dict[str, Any], lane_socket: Path | str,
                   secret: str = "", tls: HostTls | None = None) -> None:
        """The worker is ready: its call lane (over ``lane_socket`` when it serves one), its
        telemetry relay and shared memory, as its ``ready_info`` features allow (none of
        them through a stand-in stub). A worker on TLS is pinged first (through a stand-in
        stub too): a refused certificate is a WorkerStartError now, not every call failing."""
        if tls is not None:
            await self._check_tls()
        if self.route:
            return
        features = ready_info.get("features", ())
        if self.config.call_lane and "call_lane" in features:
            path = str(lane_socket) if ready_info.get("lane_socket") else None
            self.lane = await Lane.open(self.worker, self._stub,
                                        self.config.max_message_bytes, path, secret, tls)
        self._telemetry = TelemetryRelay(self._stub, self.config.name, self.worker.id,
                                         acks="telemetry_control" in features)
        self._relay = self._loop.create_task(self._telemetry.run())
        if not self.telemetry_control.is_default:  # in force before its first call
            await self._telemetry.apply(self.telemetry_control)
        threshold = self.config.shm_threshold_kb * 1024
        self.lendable = self.lane is not None and self.lane.kind == "socket" and \
            "lane_connections" in features
        if threshold and "shm" in features and shm.available():
            self.shm = WorkerShm(self._shm_name, threshold, views=self.config.shm_views)

    async def _check_tls(self) -> None:
        try:
            await self._stub.Ping(pb.PingRequest(message="tls"), timeout=TLS_CHECK_S)
        except grpc.aio.AioRpcError as exc:
            # a refusal is not worth a Ray worker's long exit wait: a moment for a death
            await asyncio.wait({self._exited}, timeout=EXIT_WAIT_S)
            if self._exited.done():
                return  # it died: its start fails naming its exit (WorkerHandle.start)
            raise WorkerStartError(
                f"worker {self.worker.id}: no answer over TLS: {exc.code().name}: "
                f"{exc.details()}", details={"worker": self.worker.id},
                hint="the pool's tls.ca must have issued the worker's certificate (tls.cert), "
                     "and tls.server_name must be a name in it (without one: the worker's "
                     "IP address)") from None

    async def control_telemetry(self, control: TelemetryControl) -> bool:
        """The pool's telemetry control changed: send it (once open; until then it is kept for
        `open`). True once the worker acknowledged it."""
        self.telemetry_control = control
        if self._telemetry is None:
            return False
        return await self._telemetry.apply(control)

    @property
    def lane_kind(self) -> str:
        """How calls reach this worker: "socket", "grpc" (the CallLane stream), "unary", or
        the stand-in stub's route ("ray-actor")."""
        return self.route or ("unary" if self.lane is None else self.lane.kind)

    # --- calls ------------------------------------------------------------------------------
    def next_call_id(self) -> int:
        """An id from the lane's sequence (any thread: direct calls share it, so the
        worker's progress file orders every call)."""
        assert self.lane is not None
        return self.lane.next_id()

    async def send_cancel(self, cid: int) -> None:
        if self.lane is not None:
            await self.lane.send_cancel(cid)

    def send(self, req: Any, timeout: float | None, on_done: OnDone,
             big: dict[str, Any] | None = None) -> int:
        """Start one call (its slot already taken); returns its call id.

        ``on_done(response, None)`` or ``on_done(None, error)`` is called exactly once, from
        the loop, as soon as the outcome is known. The slot is given back through the owner's
        ``slot_freed`` when the call has really ended in the worker. ``big``: large bytes
        arguments, sent through shared memory (inline to a worker that cannot map it).
        """
        if self.shm is not None:
            grant = self.shm.attach(req, big)
            if grant is not None:
                on_done = _releasing(grant, on_done)
        elif big:
            for name, value in big.items():
                codec.put_inline(req, name, value)
        if self.lane is not None:
            return self.lane.send(req, timeout, on_done)
        cid = next(self._unary_ids)
        task = self._loop.create_task(self._call_unary(req, timeout))
        self._unary[cid] = task

        def done(t: asyncio.Task[Any]) -> None:
            self._unary.pop(cid, None)
            _deliver_task(on_done, t)

        task.add_done_callback(done)
        return cid

    def read_result(self, resp: Any) -> tuple[Any, int | None]:
        """(value, its size for `note_result`) of a successful answer; writes no state, so a
        blocking caller's thread may use it (direct calls, which never use an arena)."""
        ref = resp.metadata.get(shm.RESULT)
        if ref:
            if self.shm is None:
                raise ValueError(f"worker {self.worker.id} answered through shared memory it "
                                 "was not offered")
            return self.shm.read_result(ref, resp.metadata.get(arrays.RESULT)), \
                shm.parse(ref)[2]
        value = codec.decode_result(resp, allow_pickle=self.config.allow_pickle)
        if self.shm is None:
            return value, None
        return value, len(resp.binary_result)  # raw bytes, arrays, Arrow: their size

    def note_result(self, tool: str, size: int | None) -> None:
        """Remember how large ``tool``'s result was (the loop's bookkeeping: a large one gets
        its next call an arena)."""
        if size is not None and self.shm is not None:
            self.shm.note_result(tool, size)

    def abandon(self, cid: int, err: BaseException) -> None:
        """Answer call ``cid`` with ``err`` now and cancel it in the worker: a lane call by
        CancelCalls (the lane keeps its slot until the worker says it ended), a unary call by
        cancelling its RPC (its slot is free at once: a worker of another kind may finish the
        tool unseen; Snakepit's bridge does)."""
        if self.lane is not None:
            self.lane.abandon(cid, err)
        elif (task := self._unary.get(cid)) is not None:
            task.cancel()

    async def _call_unary(self, req: Any, timeout: float | None) -> Any:
        """Plain ExecuteTool, for peers without the call lane (Snakepit workers)."""
        w = self.worker
        try:
            call = self._stub.ExecuteTool(
                req, timeout=None if timeout is None else worker_timeout(timeout),
                metadata=call_headers(req))
            waiter = asyncio.ensure_future(call)
            try:
                done, _ = await asyncio.wait({waiter, self._exited},
                                             return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                call.cancel()  # abandoned: the RPC ends, the worker hears of it
                raise
            if waiter not in done:
                call.cancel()
                raise w.death_error(lone=w.in_flight <= 1)
            resp = waiter.result()
            w.served += 1
            return resp
        except grpc.aio.AioRpcError as exc:
            err = await self._rpc_failure(exc, req.tool_name, lone=w.in_flight <= 1)
            raise err from err.__cause__  # a tool's error keeps the worker's traceback
        finally:
            w.slot_freed()

    async def _rpc_failure(self, exc: Any, tool: str, lone: bool) -> Exception:
        """The PitError for a failed unary or streaming RPC. A broken connection usually
        means the worker died: wait a moment for its exit to name the cause."""
        w = self.worker
        code = exc.code()
        grpc_log.debug("worker %s: %s failed: %s %s", w.id, tool, code.name, exc.details())
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            w.errors += 1
            return CallTimeout(f"call to {tool!r} timed out on worker {w.id}")
        if code == grpc.StatusCode.INTERNAL and exc.details().startswith("{"):
            w.errors += 1  # an error payload: the same class a unary call would get
            return from_payload(codec.decode_error(exc.details()), tool,
                                {"tool": tool, "worker": w.id})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), self.exit_wait_s)
        if w.state == "dead" or self._exited.done():
            return w.death_error(lone)
        return WorkerExit(f"worker {w.id} (pid {w.pid}) failed the call: "
                          f"{exc.code().name}: {exc.details()}")

    async def stream(self, req: Any, timeout: float | None) -> AsyncIterator[Any]:
        """Yield ToolChunks of a streaming call granted as exclusive; frees the slot at the end."""
        call = self._stub.ExecuteStreamingTool(
            req, timeout=None if timeout is None else worker_timeout(timeout),
            metadata=call_headers(req))
        try:
            # A dying worker ends the RPC with an error; _rpc_failure names the exit.
            while (chunk := await call.read()) is not grpc.aio.EOF:
                yield chunk
            self.worker.served += 1
        except grpc.aio.AioRpcError as exc:  # a stream is granted alone: it is to blame
            err = await self._rpc_failure(exc, req.tool_name, lone=True)
            raise err from err.__cause__  # a tool's error keeps the worker's traceback
        finally:
            self.worker.exclusive_calls -= 1  # taken by the scheduler when it granted the slot
            call.cancel()
            self.worker.slot_freed()

    async def cleanup_session(self, session_id: str, timeout: float = 5.0) -> bool:
        """Tell the worker to drop a session's state (it calls on_session_end)."""
        try:
            resp = await self._stub.CleanupSession(
                pb.CleanupSessionRequest(session_id=session_id), timeout=timeout)
            return bool(resp.success)
        except grpc.aio.AioRpcError:
            return False

    async def ping(self, timeout: float) -> bool:
        """One heartbeat: does the worker's gRPC server answer within ``timeout``?"""
        try:
            await self._stub.Ping(pb.PingRequest(message="heartbeat"), timeout=timeout)
            return True
        except grpc.aio.AioRpcError:
            return False

    # --- the end ----------------------------------------------------------------------------
    def fail_calls(self, progress: tuple[int, int] | None, message: str,
                   details: dict[str, Any], error: type[WorkerExit]) -> None:
        """The worker died: answer every lane call out on it (`Lane.fail_all`)."""
        if self.lane is not None:
            self.lane.fail_all(progress, message, details, error)

    def release_shm(self) -> None:
        """Unlink the worker's arenas (a leased one stays mapped until its views are gone)."""
        if self.shm is not None:
            self.shm.close()

    async def close_lane(self) -> None:
        """No more calls: end the lane so the worker's handler returns."""
        if self.lane is not None:
            await self.lane.close()

    async def wait_closed(self, timeout: float) -> None:
        """Give the telemetry relay up to ``timeout`` to end (then cancel it), and the lane's
        reader as long."""
        if self._relay is not None and not self._relay.done():
            await asyncio.wait({self._relay}, timeout=timeout)
            self._relay.cancel()
        if self.lane is not None:
            await self.lane.wait_reader(timeout)

    async def close(self) -> None:
        """Close the gRPC channel once the worker exited. With a grace, RPCs still open on the
        dead connection end with their real status (UNAVAILABLE -> WorkerExit naming the
        exit); closing at once would cancel them locally, and a stream's reader would take
        that for its own cancellation."""
        if self._channel is not None:
            await self._channel.close(grace=EXIT_WAIT_S)


def _releasing(grant: Grant, on_done: OnDone) -> OnDone:
    """``on_done`` that gives the call's arenas back once its answer has been read, or drops
    them (never reused) when the call ended without one: the worker may still write there."""

    def done(resp: Any, err: BaseException | None) -> None:
        if err is not None:
            grant.discard()  # before the caller hears of it
            on_done(resp, err)
            return
        try:
            on_done(resp, err)  # reads the result out of the arena
        finally:
            grant.release()

    return done


CORRELATION_HEADER = "x-snakepit-correlation-id"  # what Snakepit's bridge reads
TRACE_HEADERS = ("traceparent", "tracestate")  # W3C trace context, when the call is traced


def call_headers(req: Any) -> tuple[tuple[str, str], ...]:
    """The call's correlation id as the gRPC header Snakepit's bridge takes for its logs and
    spans (pit's own worker reads it from the request's metadata), and its W3C trace
    context (``traceparent``, only on a traced call: `runtime.telemetry.tracing`) as headers,
    as Snakepit sends them, for a bridge whose gRPC server is instrumented with
    OpenTelemetry."""
    md = req.metadata
    cid = md.get("correlation_id", "")
    headers: tuple[tuple[str, str], ...] = ((CORRELATION_HEADER, cid),) if cid else ()
    if TRACE_HEADERS[0] in md:
        headers += tuple((k, md[k]) for k in TRACE_HEADERS if md.get(k))
    return headers
