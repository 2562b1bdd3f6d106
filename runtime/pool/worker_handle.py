"""One worker seen from the host: its process, readiness, call lane, death, stop.

    WorkerProcess: spawn (own process group) --> ready file --> pid, output, exit watch
          |
    aio channel --> CallLane stream
                     |  send(): outbox -> writer task -> worker
    process exit (awaited) ---> fail pending calls ---+  reader task: results -> on_done callbacks

While calls are tiny (average run time under PIPELINE_BELOW_MS, and the oldest call out for
less than PIPELINE_STALL_S) a busy worker may be handed up to ``pipeline`` more calls; the
writer packs whatever piled up into one message, which is what lets many small calls beat a
pipe-based pool. Pipelined calls count as in flight on that worker: if it dies they fail too.

A call whose deadline passes is answered with `CallTimeout` at once and cancelled in the worker;
its slot stays taken until the worker reports the call ended, and a worker that has not within
`CANCEL_GRACE_S` is killed (the pool replaces it), so a timed-out call never runs on unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from ..config import PoolConfig
from ..errors import CallTimeout, WorkerExit, WorkerHung, from_payload
from ..logs import logger
from ..protocol import arrays, codec, pb, pb_grpc, shm
from . import crash
from .events import worker_event
from .host.instance import HostInstance
from .host.telemetry_relay import relay
from .lane import CANCEL_GRACE_S, Lane, OnDone, deliver, exit_error
from .shm import Grant, WorkerShm
from .transport import WorkerTransport, wait_answering
from .worker_process import TERM_GRACE_S, WorkerProcess

if TYPE_CHECKING:
    from .forkserver import ForkServer

# A command-started worker is pinged before it listens: without these, gRPC's reconnect
# backoff (1 s at first) made each one take ~1 s longer to be found ready than it was.
COMMAND_CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 20),
                           ("grpc.min_reconnect_backoff_ms", 20),
                           ("grpc.max_reconnect_backoff_ms", 500))
EXIT_WAIT_S = 1.0  # after the lane breaks, how long to wait for the exit code
PIPELINE_BELOW_MS = 1.0  # pipeline calls to a busy worker only while calls average less
PIPELINE_STALL_S = 0.01  # ... and while its oldest call has been out for less than this
PREFETCH_BELOW_MS = 50.0  # one call prefetched while calls average less (and are on time)

grpc_log = logger("grpc")


def _deliver_task(on_done: OnDone, task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        deliver(on_done, None, WorkerExit("the call was cancelled"))
    elif task.exception() is not None:
        deliver(on_done, None, task.exception())
    else:
        deliver(on_done, task.result(), None)


class WorkerHandle:
    def __init__(self, worker_id: str, config: PoolConfig, *, instance: HostInstance,
                 on_free: Callable[[WorkerHandle], None],
                 on_exit: Callable[[WorkerHandle], None], pipeline: int = 0) -> None:
        self.id = worker_id
        self.config = config
        self.state = "starting"  # starting | ready | draining | stopping | dead
        self.accepting = False
        self.in_flight = 0
        self.capacity = config.capacity
        self.served = 0
        self.errors = 0
        self.exit_reason = ""
        self._instance = instance
        self.was_ready = False
        self.exit_error: type[WorkerExit] = WorkerExit
        self.forced_cause = ""  # why the host killed it, when it did ("cancel_timeout")
        # called when a cancelled call would not stop and the worker is killed for it
        self.on_stuck: Callable[[WorkerHandle, Any], None] | None = None
        self.exit_details: dict[str, Any] = {}
        self.missed_heartbeats = 0
        self.recycle_reason = ""  # why the pool ended (or is ending) this worker
        self.replaced_reason = ""  # why the worker it replaced was ended ("" at pool start)
        self.max_requests = 0  # recycle after this many calls (0: never); jittered per worker
        self.ttl_s = 0.0  # recycle after this long (0: never); jittered per worker
        self.rss_mb = 0.0  # last memory sample
        self.uss_mb = 0.0  # memory only this process holds (sampled every few seconds)
        self.cpu_pct = 0.0  # CPU use since the previous sample
        self._on_free, self._on_exit = on_free, on_exit
        self.process = WorkerProcess(worker_id, config, instance)
        self.shm: WorkerShm | None = None  # shared-memory arenas, once ready (Linux)
        self._channel: Any = None
        self._lane: Lane | None = None
        self._stub: Any = None
        self._loop = asyncio.get_running_loop()
        self.avg_ms = PIPELINE_BELOW_MS * 10  # assume calls are not tiny until measured
        self.pipeline = pipeline
        self.exclusive_calls = 0  # granted streams (they run outside the lane, alone)
        # called when the worker stops taking calls (stop, death): the pool's lending lets go
        self.on_retire: Callable[[WorkerHandle], None] | None = None
        self.lendable = False  # set once ready, when its lane socket takes more connections
        self.exit_info: tuple[Any, ...] | None = None  # (progress, message, details, error)
        self._relay: asyncio.Task[Any] | None = None
        self._exited = self._loop.create_future()
        self._stopping = False

    # --- the process's, under the names the pool's code reads -------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def started_at(self) -> float:
        return self.process.started_at

    @property
    def ready_info(self) -> dict[str, Any]:
        return self.process.ready_info

    @property
    def exit_code(self) -> int | None:
        return self.process.exit_code

    @property
    def cause(self) -> str:
        return self.process.cause

    @property
    def lane_socket(self) -> Path:
        return self.process.lane_socket

    @property
    def python(self) -> str:
        return self.process.python

    @python.setter
    def python(self, value: str) -> None:
        self.process.python = value

    @property
    def bridge(self) -> Path | None:
        return self.process.bridge

    @bridge.setter
    def bridge(self, value: Path | None) -> None:
        self.process.bridge = value

    @property
    def extra_env(self) -> dict[str, str]:
        return self.process.extra_env

    @extra_env.setter
    def extra_env(self, value: dict[str, str]) -> None:
        self.process.extra_env = value

    @property
    def forkserver(self) -> ForkServer | None:
        return self.process.forkserver

    @forkserver.setter
    def forkserver(self, value: ForkServer | None) -> None:
        self.process.forkserver = value

    def zygote_argv(self) -> list[str]:
        return self.process.zygote_argv()

    def env(self) -> dict[str, str]:
        return self.process.env()

    async def dump_stacks(self, dest_dir: Path) -> Path | None:
        return await self.process.dump_stacks(dest_dir)

    # --- start ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn (or fork) the process and wait until it serves; raises WorkerStartError."""
        process = self.process
        timeout = self.config.startup_timeout_ms / 1000
        await process.launch()
        worker_event("worker.started", self)
        process.watch(self._process_exited)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self.config.worker_command:
            if not await process.wait_ready_file(deadline, self._exited.done):
                await self._not_ready(timeout)
            process.read_ready()
        limit = self.config.max_message_mb * 1024 * 1024
        self._channel = grpc.aio.insecure_channel(
            process.address,
            options=[("grpc.max_send_message_length", limit),
                     ("grpc.max_receive_message_length", limit),
                     # A fixed flow-control window: with BDP probing it grew with the timing
                     # and let a stream's producer run 12k-24k small chunks ahead of a slow
                     # consumer (500 without; no cost measured on streams or 16 MiB calls).
                     ("grpc.http2.bdp_probe", 0),
                     *(COMMAND_CHANNEL_OPTIONS if self.config.worker_command else ())])
        self._stub = pb_grpc.BridgeServiceStub(self._channel)
        if self.config.worker_command:  # no ready file: it is ready once it answers
            if not await wait_answering(self.ping, self._exited.done, deadline):
                await self._not_ready(timeout)
            await process.check_listener()
        if self.config.call_lane and "call_lane" in self.ready_info.get("features", ()):
            lane_socket = str(self.lane_socket) if self.ready_info.get("lane_socket") else None
            self._lane = await Lane.open(self, self._stub, limit, lane_socket)
        self._relay = loop.create_task(relay(self._stub, self.config.name, self.id))
        threshold = self.config.shm_threshold_kb * 1024
        self.lendable = self._lane is not None and self._lane.kind == "socket" and \
            "lane_connections" in self.ready_info.get("features", ())
        if threshold and "shm" in self.ready_info.get("features", ()) and shm.available():
            self.shm = WorkerShm(f"{shm.PREFIX}{self._instance.id}-{self.id}", threshold,
                                 views=self.config.shm_views)
        if self._exited.done():  # it died during the last steps: not ready after all
            await self._not_ready(timeout)
        self.state, self.accepting = "ready", True
        self.was_ready = True

    async def _not_ready(self, timeout: float) -> NoReturn:
        """Raise the start error of a worker that exited, or did not get ready in time."""
        if self._exited.done():
            await asyncio.sleep(0.05)  # let the output pump catch the last lines
            raise self.process.start_error(f"{self.exit_reason} before it was ready")
        self.kill()
        raise self.process.start_error(f"was not ready within {timeout:g} s "
                                       "(startup_timeout_ms)")

    async def _process_exited(self, code: int | None) -> None:
        """The process exited (its exit watch calls this): name why, fail what was out on it,
        wake whoever waits for the exit, tell the pool."""
        self.accepting = False
        was_stopping = self._stopping
        self.state = "dead"
        await asyncio.sleep(0)  # let the output pump take the last lines
        process = self.process
        cause = process.classify(hung=self.exit_error is WorkerHung, forced=self.forced_cause)
        self.exit_reason = self.exit_reason or crash.describe(code, cause)
        details = {"worker": self.id, "pid": self.pid, "exit_code": code, "cause": cause,
                   "output_tail": process.output_tail(), **self.exit_details}
        self.exit_info = (process.progress(), f"worker {self.id} (pid {self.pid}) "
                          f"{self.exit_reason}", details, self.exit_error)
        if self._lane is not None:
            self._lane.fail_all(*self.exit_info)
        if self.on_retire is not None:
            self.on_retire(self)  # a direct call still out ends with its connection
        if not self._exited.done():
            self._exited.set_result(code)
        if self.shm is not None:
            self.shm.close()
        worker_event("worker.exited", self, {"exit_code": code,
                                             "uptime_s": round(self.uptime(), 3)})
        process.record_end(self.recycle_reason or cause or "stopped")
        if not was_stopping and self.was_ready:
            self._on_exit(self)  # a worker that dies while starting is its starter's business
        if self._channel is not None:
            # Last, so the pool hears of the exit at once. With a grace, RPCs still open on
            # the dead connection end with their real status (UNAVAILABLE -> WorkerExit
            # naming the exit); closing at once would cancel them locally, and a stream's
            # reader would take that for its own cancellation.
            await self._channel.close(grace=EXIT_WAIT_S)

    # --- calls ------------------------------------------------------------------------------
    def slot_freed(self) -> None:
        self._on_free(self)

    @property
    def lane_kind(self) -> str:
        """How calls reach this worker: "socket", "grpc" (the CallLane stream) or "unary"."""
        return "unary" if self._lane is None else self._lane.kind

    def lane_unavailable(self) -> None:
        """The peer answered UNIMPLEMENTED: plain unary calls from now on."""
        self._lane = None

    async def wait_exit(self) -> None:
        """A connection to the worker (its lane, a direct link) broke: usually the process
        died. Wait up to EXIT_WAIT_S for the exit to name the cause; a worker that lives on
        without the connection is killed."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), EXIT_WAIT_S)
        if not self._exited.done() and not self._stopping:
            self.exit_reason = "closed its call lane"
            self.kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exited), EXIT_WAIT_S)

    def next_call_id(self) -> int:
        """An id from the lane's sequence (any thread: direct calls share it, so the
        worker's progress file orders every call)."""
        assert self._lane is not None
        return self._lane.next_id()

    async def send_cancel(self, cid: int) -> None:
        if self._lane is not None:
            await self._lane.send_cancel(cid)

    @property
    def limit(self) -> int:
        """Calls this worker may hold: its capacity, plus a pipeline while calls are tiny,
        or one prefetched call while they are short (so it never idles for a round trip
        between calls; a prefetched call waits at most about one short call)."""
        if not self.pipeline or self.exclusive_calls or self._lane is None:
            return self.capacity
        age = self._lane.oldest_age()
        if self.avg_ms < PIPELINE_BELOW_MS:
            if age < PIPELINE_STALL_S:
                return self.capacity + self.pipeline
        elif self.capacity == 1 and self.avg_ms < PREFETCH_BELOW_MS and \
                age * 1000 < 2 * self.avg_ms:
            return 2
        return self.capacity

    def send(self, req: Any, timeout: float | None, on_done: OnDone,
             big: dict[str, Any] | None = None) -> int:
        """Start one call (its slot already taken); returns its call id.

        ``on_done(response, None)`` or ``on_done(None, error)`` is called exactly once, from
        the loop, as soon as the outcome is known. The slot is given back through
        ``on_free`` when the call has really ended in the worker. ``big``: large bytes
        arguments, sent through shared memory (inline to a worker that cannot map it).
        """
        if self.shm is not None:
            grant = self.shm.attach(req, big)
            if grant is not None:
                on_done = _releasing(grant, on_done)
        elif big:
            for name, value in big.items():
                codec.put_inline(req, name, value)
        if self._lane is not None:
            return self._lane.send(req, timeout, on_done)
        task = self._loop.create_task(self._call_unary(req, timeout))
        task.add_done_callback(lambda t: _deliver_task(on_done, t))
        return 0

    def decode_result(self, resp: Any, tool: str) -> Any:
        """A successful answer's value, out of its shared-memory arena or the message; a large
        bytes or array result gets the tool's next call an arena for its result.
        Raises CodecError / ValueError for a value that cannot be read."""
        value, size = self.read_result(resp)
        self.note_result(tool, size)
        return value

    def read_result(self, resp: Any) -> tuple[Any, int | None]:
        """(value, its size for `note_result`) of a successful answer; writes no state, so a
        blocking caller's thread may use it (direct calls, which never use an arena)."""
        ref = resp.metadata.get(shm.RESULT)
        if ref:
            if self.shm is None:
                raise ValueError(f"worker {self.id} answered through shared memory it was not "
                                 "offered")
            return self.shm.read_result(ref, resp.metadata.get(arrays.RESULT)), \
                shm.parse(ref)[2]
        value = codec.decode_result(resp, allow_pickle=self.config.allow_pickle)
        if self.shm is None:
            return value, None
        return value, codec.raw_size(value) if isinstance(value, bytes) or arrays.is_array(
            value) else 0

    def note_result(self, tool: str, size: int | None) -> None:
        """Remember how large ``tool``'s result was (the loop's bookkeeping: a large one gets
        its next call an arena)."""
        if size is not None and self.shm is not None:
            self.shm.note_result(tool, size)

    def abandon(self, cid: int, err: BaseException) -> None:
        """Answer call ``cid`` with ``err`` now and cancel it in the worker (lane calls)."""
        if self._lane is not None:
            self._lane.abandon(cid, err)

    async def _call_unary(self, req: Any, timeout: float | None) -> Any:
        """Plain ExecuteTool, for peers without the call lane (Snakepit workers)."""
        try:
            call = self._stub.ExecuteTool(req, timeout=timeout)
            waiter = asyncio.ensure_future(call)
            done, _ = await asyncio.wait({waiter, self._exited},
                                         return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                call.cancel()
                raise self.death_error(lone=self.in_flight <= 1)
            resp = waiter.result()
            self.served += 1
            return resp
        except grpc.aio.AioRpcError as exc:
            raise await self._rpc_failure(exc, req.tool_name, lone=self.in_flight <= 1) \
                from None
        finally:
            self._on_free(self)

    def death_error(self, lone: bool, cid: int = 0) -> Exception:
        """What a call out on this worker gets when it died: the same error, cause, output
        tail and blame a lane call gets (`lane.exit_error`). ``cid``: a call numbered like
        the lane's (a direct call), judged by the worker's progress file too; 0: a unary call
        or a stream, to blame when ``lone`` (the only call out)."""
        if self.exit_info is None:
            return WorkerExit(f"worker {self.id} (pid {self.pid}) "
                              f"{self.exit_reason or 'lost its connection'}")
        progress, message, details, error = self.exit_info
        return exit_error(cid, progress if cid else None, message, details, error, lone)

    async def _rpc_failure(self, exc: Any, tool: str, lone: bool) -> Exception:
        """The PitError for a failed unary or streaming RPC. A broken connection usually
        means the worker died: wait a moment for its exit to name the cause."""
        code = exc.code()
        grpc_log.debug("worker %s: %s failed: %s %s", self.id, tool, code.name, exc.details())
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            self.errors += 1
            return CallTimeout(f"call to {tool!r} timed out on worker {self.id}")
        if code == grpc.StatusCode.INTERNAL and exc.details().startswith("{"):
            self.errors += 1  # an error payload: the same class a unary call would get
            return from_payload(codec.decode_error(exc.details()), tool,
                                {"tool": tool, "worker": self.id})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), EXIT_WAIT_S)
        if self.state == "dead" or self._exited.done():
            return self.death_error(lone)
        return WorkerExit(f"worker {self.id} (pid {self.pid}) failed the call: "
                          f"{exc.code().name}: {exc.details()}")

    async def stream(self, req: Any, timeout: float | None) -> AsyncIterator[Any]:
        """Yield ToolChunks of a streaming call granted as exclusive; frees the slot at the end."""
        call = self._stub.ExecuteStreamingTool(req, timeout=timeout)
        try:
            # A dying worker ends the RPC with an error; _rpc_failure names the exit.
            while (chunk := await call.read()) is not grpc.aio.EOF:
                yield chunk
            self.served += 1
        except grpc.aio.AioRpcError as exc:  # a stream is granted alone: it is to blame
            raise await self._rpc_failure(exc, req.tool_name, lone=True) from None
        finally:
            self.exclusive_calls -= 1  # taken by the scheduler when it granted the slot
            call.cancel()
            self._on_free(self)

    # --- stop -------------------------------------------------------------------------------
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


    def mark_hung(self, silent_s: float, dump: Path | None) -> None:
        """Kill a worker that stopped answering; its calls fail with WorkerHung."""
        self.exit_error = WorkerHung
        self.exit_details = {"stack_dump": str(dump) if dump else None, "cause": "hung"}
        where = f"; its stacks are in {dump}" if dump else ""
        self.exit_reason = (f"was hung: no heartbeat answer for {silent_s:.1f} s, killed"
                            f"{where}")
        self.kill()

    def kill_stuck(self, req: Any) -> None:
        """A cancelled call (timed out, or given up by its caller) did not stop within
        CANCEL_GRACE_S: kill the worker, as that call's doing. Cause ``cancel_timeout``: the
        call counts towards poison_after and the worker's death towards the circuit."""
        if self.state == "dead" or self.forced_cause:
            return
        self.forced_cause = "cancel_timeout"
        self.exit_reason = (f"was killed: a cancelled call to {req.tool_name!r} did not stop "
                            f"within {CANCEL_GRACE_S:g} s")
        if self.on_stuck is not None:
            self.on_stuck(self, req)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the worker's process group now."""
        self.process.kill()

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after TERM_GRACE_S; returns once it is gone."""
        self._stopping = True
        self.accepting = False
        if self.state != "dead":
            self.state = "stopping"
        if self.on_retire is not None:
            self.on_retire(self)
        if self._lane is not None:
            await self._lane.close()
        if self.process.running:
            self.process.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), TERM_GRACE_S)
            except asyncio.TimeoutError:
                self.kill()
            await self._exited
        await self.process.wait_tasks(1.0)
        if self._relay is not None and not self._relay.done():
            await asyncio.wait({self._relay}, timeout=1.0)
            self._relay.cancel()
        if self._lane is not None:
            await self._lane.wait_reader(1.0)
        self.process.remove_files()

    def uptime(self) -> float:
        return time.time() - self.process.started_at



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


if TYPE_CHECKING:  # mypy holds WorkerHandle to the seam it implements (runtime/pool/transport.py)
    def _is_a_transport(worker: WorkerHandle) -> WorkerTransport:
        return worker
