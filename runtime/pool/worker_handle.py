"""One worker process seen from the host: spawn, readiness, call lane, death, stop.

    spawn (own process group) --> ready file --> aio channel --> CallLane stream
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
import collections
import contextlib
import json
import os
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from ..config import PoolConfig
from ..errors import (
    CallTimeout,
    PitError,
    WorkerExit,
    WorkerHung,
    WorkerStartError,
    from_payload,
)
from ..logs import logger
from ..protocol import arrays, codec, pb, pb_grpc, shm
from . import crash
from .events import worker_event
from .forkserver import ForkServer
from .host.instance import HostInstance
from .host.telemetry_relay import relay
from .lane import CANCEL_GRACE_S, Lane, OnDone, deliver, exit_error
from .shm import Grant, WorkerShm
from .transport import WorkerTransport, command_argv, free_port, listens_in_tree, wait_answering

READY_POLL_S = 0.005
# A command-started worker is pinged before it listens: without these, gRPC's reconnect
# backoff (1 s at first) made each one take ~1 s longer to be found ready than it was.
COMMAND_CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 20),
                           ("grpc.min_reconnect_backoff_ms", 20),
                           ("grpc.max_reconnect_backoff_ms", 500))
TERM_GRACE_S = 2.0  # SIGTERM -> SIGKILL
EXIT_WAIT_S = 1.0  # after the lane breaks, how long to wait for the exit code
OUTPUT_TAIL_LINES = 40
PIPELINE_BELOW_MS = 1.0  # pipeline calls to a busy worker only while calls average less
PIPELINE_STALL_S = 0.01  # ... and while its oldest call has been out for less than this
PREFETCH_BELOW_MS = 50.0  # one call prefetched while calls average less (and are on time)

log = logger("worker")
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
        self.pid: int | None = None
        self.started_at = time.time()
        self.ready_info: dict[str, Any] = {}
        self.exit_code: int | None = None
        self.exit_reason = ""
        self.output: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self._instance = instance
        self.python = sys.executable  # the pool's env interpreter, when it has one
        self.bridge: Path | None = None  # the worker bridge dir for env pools
        self.extra_env: dict[str, str] = {}  # device variables
        self._socket, self._ready_file = instance.worker_files()
        self.stack_file = self._socket.with_suffix(".stacks")
        self.progress_file = self._socket.with_suffix(".progress")
        self.lane_socket = self._socket.with_suffix(".lane")
        self._port = 0  # a command-started worker's loopback port
        self.cause = ""
        self.was_ready = False
        self._oom_before: int | None = None
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
        self._proc: Any = None  # asyncio.subprocess.Process, or a ForkedProcess
        self.forkserver: ForkServer | None = None  # None: spawn a fresh interpreter
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
        self._tasks: list[asyncio.Task[Any]] = []
        self._exited = self._loop.create_future()
        self._stopping = False

    # --- start ------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """Where its gRPC server listens: a unix socket in the run dir, or the loopback port
        of a command-started worker (see `transport`)."""
        if self.config.worker_command:
            return f"127.0.0.1:{self._port}"
        return f"unix:{self._socket}"

    def argv(self) -> list[str]:
        if self.config.worker_command:
            return command_argv(self.config.worker_command, port=self._port,
                                adapter=self.config.adapter, host_pid=os.getpid(),
                                run_id=self._instance.id, token=self._instance.token)
        argv = [self.python, "-m", "runtime.worker", "--adapter", self.config.adapter,
                "--listen", f"unix:{self._socket}", "--ready-file", str(self._ready_file),
                "--run-id", self._instance.id, "--instance-token", self._instance.token,
                "--host-address", self._instance.host_address, "--host-pid", str(os.getpid()),
                "--worker-id", self.id, "--max-message-mb", str(self.config.max_message_mb),
                "--max-sessions", str(self.config.max_sessions),
                "--session-ttl", f"{self.config.session_ttl_s:g}",
                "--stack-file", str(self.stack_file), "--threads", str(self.capacity)]
        if self.capacity == 1:  # progress is "the one running call": one thread only
            argv += ["--progress-file", str(self.progress_file)]
        if self.config.allow_pickle:
            argv.append("--allow-pickle")
        if self.config.call_lane and self.config.lane_socket:
            argv += ["--lane-socket", str(self.lane_socket)]
        if not self.config.dependent:
            argv.append("--independent")
        else:
            argv += ["--dependent-timeout", f"{self.config.dependent_timeout_ms / 1000:g}",
                     "--host-pings", f"{self.config.heartbeat_interval_ms / 1000:g}"]
        return argv

    def zygote_argv(self) -> list[str]:
        """What the pool's fork server needs of `argv` (forked workers inherit its command
        line, and `pit cleanup` recognises them by these markers)."""
        argv = ["--adapter", self.config.adapter, "--run-id", self._instance.id,
                "--instance-token", self._instance.token, "--host-pid", str(os.getpid())]
        return argv + (["--independent"] if not self.config.dependent else [])

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update(self.config.worker_env())
        if self.bridge is not None:
            # A pool env: only the bridge and the user's code, never the host's packages.
            env.pop("PYTHONHOME", None)
            paths = [str(self.bridge), *self._instance.python_path]
        else:
            paths = [*self._instance.python_path, env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    async def _spawn(self) -> None:
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv(), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                env=self.env(), start_new_session=True)
        except OSError as exc:
            raise WorkerStartError(
                f"pool {self.config.name!r}: cannot start worker with "
                f"{self.argv()[0]}: {exc}", hint="check the pool's python setting") from None

    async def start(self) -> None:
        """Spawn (or fork) the process and wait until it serves; raises WorkerStartError."""
        timeout = self.config.startup_timeout_ms / 1000
        try:
            await self._instance.ready_for_workers()
        except (PitError, OSError) as exc:  # a start failure the pool backs off from
            raise WorkerStartError(
                f"pool {self.config.name!r}: worker {self.id} cannot start: {exc}",
                details={"pool": self.config.name, "worker": self.id},
                hint=getattr(exc, "hint", None)) from None
        self._oom_before = crash.oom_kill_count()
        if self.config.worker_command:
            self._port = free_port()
        if self.forkserver is not None:
            self._proc = await self.forkserver.spawn(self.argv()[3:])
        else:
            await self._spawn()
        self.pid = self._proc.pid
        if self._instance.registry is not None:
            self._instance.registry.worker_started(
                instance_id=self._instance.id, token=self._instance.token,
                pool=self.config.name, worker_id=self.id, pid=self.pid,
                socket=self.address)
        worker_event("worker.started", self)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._pump_output()))
        self._tasks.append(loop.create_task(self._watch_exit()))
        deadline = loop.time() + timeout
        if not self.config.worker_command:
            await self._await_ready_file(deadline, timeout)
            self.ready_info = self._read_ready()
        limit = self.config.max_message_mb * 1024 * 1024
        self._channel = grpc.aio.insecure_channel(
            self.address,
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
                await self._not_ready(deadline, timeout)
            pid = self.pid
            if pid is None or not await asyncio.to_thread(listens_in_tree, pid, self._port):
                self.kill()
                raise self._start_error(
                    f"was answered on 127.0.0.1:{self._port} by a process it did not start "
                    "(another program took the port): refusing to send it calls")
            self.ready_info = {"pid": self.pid, "features": [], "tools": []}
        if self.config.call_lane and "call_lane" in self.ready_info.get("features", ()):
            lane_socket = str(self.lane_socket) if self.ready_info.get("lane_socket") else None
            self._lane = await Lane.open(self, self._stub, limit, lane_socket)
        self._tasks.append(loop.create_task(relay(self._stub, self.config.name, self.id)))
        threshold = self.config.shm_threshold_kb * 1024
        self.lendable = self._lane is not None and self._lane.kind == "socket" and \
            "lane_connections" in self.ready_info.get("features", ())
        if threshold and "shm" in self.ready_info.get("features", ()) and shm.available():
            self.shm = WorkerShm(f"{shm.PREFIX}{self._instance.id}-{self.id}", threshold,
                                 views=self.config.shm_views)
        if self._exited.done():  # it died during the last steps: not ready after all
            await self._not_ready(deadline, timeout)
        self.state, self.accepting = "ready", True
        self.was_ready = True

    async def _await_ready_file(self, deadline: float, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        while not self._ready_file.exists():
            if self._exited.done() or loop.time() > deadline:
                await self._not_ready(deadline, timeout)
            await asyncio.sleep(READY_POLL_S)

    async def _not_ready(self, deadline: float, timeout: float) -> NoReturn:
        """Raise the start error of a worker that exited, or did not get ready in time."""
        if self._exited.done():
            await asyncio.sleep(0.05)  # let the output pump catch the last lines
            raise self._start_error(f"{self.exit_reason} before it was ready")
        self.kill()
        raise self._start_error(f"was not ready within {timeout:g} s (startup_timeout_ms)")

    def _read_ready(self) -> dict[str, Any]:
        """The ready file, once it proves to come from the process we started: the host
        connects only to the socket paths it chose itself, never to ones a file names."""
        try:
            info = json.loads(self._ready_file.read_text())
            if not isinstance(info, dict):
                raise ValueError(f"a JSON {type(info).__name__}, not an object")
        except (OSError, ValueError) as exc:
            self.kill()
            raise self._start_error(f"wrote an unreadable ready file: {exc}") from None
        named = {"address": f"unix:{self._socket}", "lane_socket": str(self.lane_socket)}
        wrong = [f"{key}={info.get(key)!r}" for key, want in named.items()
                 if info.get(key) not in (None, want)]
        if info.get("pid") != self.pid or wrong:
            self.kill()
            raise self._start_error(
                f"has a ready file that is not its own (pid {info.get('pid')!r}, expected "
                f"{self.pid}"
                f"{'; ' + ', '.join(wrong) if wrong else ''}): something else wrote to the "
                "run dir")
        return info

    def _start_error(self, what: str) -> WorkerStartError:
        tail = "\n".join(self.output) or "(no output)"
        return WorkerStartError(
            f"pool {self.config.name!r}: worker {self.id} (pid {self.pid}) {what}.\n"
            f"Its last output:\n{tail}",
            details={"pool": self.config.name, "worker": self.id, "exit_code": self.exit_code,
                     "cause": self.cause},
            hint=f"check that adapter {self.config.adapter!r} imports and initializes: "
                 f"python -m runtime.worker --health-check --adapter {self.config.adapter}")

    async def _pump_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        prefix = f"[{self.config.name}/{self.id}]"
        async for raw in self._proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.output.append(line)
            log.debug("%s %s", prefix, line)

    async def _watch_exit(self) -> None:
        assert self._proc is not None
        code = await self._proc.wait()
        self.exit_code = code
        self.accepting = False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)  # leftovers in the worker's group
        was_stopping = self._stopping
        self.state = "dead"
        await asyncio.sleep(0)  # let the output pump take the last lines
        tail = crash.tail_text(list(self.output))
        self.cause = crash.classify(code, tail, oom_before=self._oom_before,
                                    oom_after=crash.oom_kill_count(),
                                    hung=self.exit_error is WorkerHung,
                                    forced=self.forced_cause)
        self.exit_reason = self.exit_reason or crash.describe(code, self.cause)
        details = {"worker": self.id, "pid": self.pid, "exit_code": code, "cause": self.cause,
                   "output_tail": tail, **self.exit_details}
        self.exit_info = (self._progress(), f"worker {self.id} (pid {self.pid}) "
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
        if self._instance.registry is not None:
            self._instance.registry.worker_ended(
                instance_id=self._instance.id, pool=self.config.name, worker_id=self.id,
                reason=self.recycle_reason or self.cause or "stopped")
        if not was_stopping and self.was_ready:
            self._on_exit(self)  # a worker that dies while starting is its starter's business
        if self._channel is not None:
            # Last, so the pool hears of the exit at once. With a grace, RPCs still open on
            # the dead connection end with their real status (UNAVAILABLE -> WorkerExit
            # naming the exit); closing at once would cancel them locally, and a stream's
            # reader would take that for its own cancellation.
            await self._channel.close(grace=EXIT_WAIT_S)

    def _progress(self) -> tuple[int, int] | None:
        """(call running when it died, last call it finished), from the shared file."""
        try:
            data = self.progress_file.read_bytes()
            running, last_done = struct.unpack("<QQ", data[:16])
            return running, last_done
        except (OSError, struct.error):
            return None

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

    async def dump_stacks(self, dest_dir: Path) -> Path | None:
        """Ask the worker for its Python stacks (SIGUSR1 -> faulthandler) and keep a copy."""
        if self._proc is None or self._proc.returncode is not None:
            return None
        with contextlib.suppress(OSError):
            start = self.stack_file.stat().st_size
            os.kill(self._proc.pid, signal.SIGUSR1)
            for _ in range(50):
                await asyncio.sleep(0.02)
                if self.stack_file.stat().st_size > start:
                    break
            await asyncio.sleep(0.05)  # let it finish writing every thread
            dest_dir.mkdir(parents=True, exist_ok=True)
            name = f"{self._instance.id}-{self.config.name}-{self.id}-{int(time.time())}.txt"
            dest = dest_dir / name
            dest.write_bytes(self.stack_file.read_bytes()[start:])
            return dest
        return None

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
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

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
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), TERM_GRACE_S)
            except asyncio.TimeoutError:
                self.kill()
            if self._proc is not None:
                await self._exited
        for task in self._tasks:
            if not task.done():
                await asyncio.wait({task}, timeout=1.0)
                task.cancel()
        if self._lane is not None:
            await self._lane.wait_reader(1.0)
        for path in (self._socket, self._ready_file, self.stack_file, self.progress_file,
                     self.lane_socket):
            with contextlib.suppress(OSError):
                path.unlink()

    def uptime(self) -> float:
        return time.time() - self.started_at


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
