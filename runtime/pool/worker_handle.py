"""One worker seen from the pool: its state and counts, over its process and its channel.

    WorkerHandle: state, accepting, in_flight / capacity / limit, served, errors, recycling,
    |             samples, how it ended (`Ending`); start / stop / kill, the pool's callbacks
    +-- process: WorkerProcess   spawn or fork (own process group) --> ready file --> pid,
    |                            output tail, progress file, exit watch (awaited); with
    |                            backend = "ray", a RayWorkerProcess (a Ray actor's worker)
    +-- channel: WorkerChannel   aio channel --> Lane: send(): outbox -> writer -> worker
                                 (+ shared memory)    reader: results -> on_done callbacks,
                                                      slot_freed -> the pool's on_free
    process exit --> state dead, cause named --> fail pending calls (lane), retire direct
                     links, wake whoever waits for the exit, tell the pool, close the channel

While calls are tiny (average run time under PIPELINE_BELOW_MS, and the oldest call out for
less than PIPELINE_STALL_S) a busy worker may be handed up to ``pipeline`` more calls; the
writer packs whatever piled up into one message, which is what lets many small calls beat a
pipe-based pool. Pipelined calls count as in flight on that worker: if it dies they fail too.

A lane call whose deadline passes is answered with `CallTimeout` at once and cancelled in the
worker; its slot stays taken until the worker reports the call ended, and a worker that has
not within `CANCEL_GRACE_S` is killed (the pool replaces it), so a timed-out call never runs
on unseen. (A unary call, to a worker of another kind, can only end its RPC: `transport`.)

The pool's code reaches the parts themselves (``worker.process.python``,
``worker.channel.shm``, ``worker.samples.rss_mb``). All of it is the pool loop's, except the
channel's `next_call_id` and `read_result` (blocking callers' threads use them for direct
calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ..config import PoolConfig
from ..errors import WorkerExit, WorkerHung
from ..protocol import shm
from . import crash
from .events import worker_event
from .host.instance import HostInstance
from .lane import CANCEL_GRACE_S, OnDone, exit_error
from .transport import WorkerTransport, wait_answering
from .worker_channel import EXIT_WAIT_S, WorkerChannel
from .worker_process import TERM_GRACE_S, WorkerProcess

PIPELINE_BELOW_MS = 1.0  # pipeline calls to a busy worker only while calls average less
PIPELINE_STALL_S = 0.01  # ... and while its oldest call has been out for less than this
PREFETCH_BELOW_MS = 50.0  # one call prefetched while calls average less (and are on time)


@dataclass(slots=True)
class Samples:
    """What the pool last measured of a worker (its sampling and heartbeats)."""
    rss_mb: float = 0.0  # memory
    uss_mb: float = 0.0  # memory only this process holds (sampled every few seconds)
    cpu_pct: float = 0.0  # CPU use since the previous sample
    missed_heartbeats: int = 0


@dataclass(slots=True)
class Ending:
    """How a worker ends, filled in as the host learns it (the cause is the process's)."""
    stopping: bool = False  # the host is stopping it: its exit is expected
    reason: str = ""  # "was killed by SIGKILL (-9)", or why the host ended it
    forced: str = ""  # why the host killed it, when it did ("cancel_timeout")
    error: type[WorkerExit] = WorkerExit  # what the call it was running gets
    details: dict[str, Any] = field(default_factory=dict)  # more details for that error
    info: tuple[Any, ...] | None = None  # (progress, message, details, error) once dead


class WorkerHandle:
    def __init__(self, worker_id: str, config: PoolConfig, *, instance: HostInstance,
                 on_free: Callable[[WorkerHandle], None],
                 on_exit: Callable[[WorkerHandle], None], pipeline: int = 0) -> None:
        self.id = worker_id
        self.config = config
        self.state = "starting"  # starting | ready | draining | stopping | dead
        self.was_ready = False
        self.accepting = False
        self.in_flight = 0
        self.capacity = config.capacity
        self.served = 0
        self.errors = 0
        self.avg_ms = PIPELINE_BELOW_MS * 10  # assume calls are not tiny until measured
        self.exclusive_calls = 0  # granted streams (they run outside the lane, alone)
        self.recycle_reason = ""  # why the pool ended (or is ending) this worker
        self.replaced_reason = ""  # why the worker it replaced was ended ("" at pool start)
        self.max_requests = 0  # recycle after this many calls (0: never); jittered per worker
        self.ttl_s = 0.0  # recycle after this long (0: never); jittered per worker
        self.samples = Samples()
        self.ending = Ending()
        # called when a cancelled call would not stop and the worker is killed for it
        self.on_stuck: Callable[[WorkerHandle, Any], None] | None = None
        # called when the worker stops taking calls (stop, death): the pool's lending lets go
        self.on_retire: Callable[[WorkerHandle], None] | None = None
        self._on_free, self._on_exit = on_free, on_exit
        self._exited = asyncio.get_running_loop().create_future()  # its exit is recorded
        kind: type[WorkerProcess] = WorkerProcess
        if config.backend == "ray":  # imported here: a local pool loads none of Ray's side
            from .ray_process import RayWorkerProcess

            kind = RayWorkerProcess
        self.process = kind(worker_id, config, instance)
        self.channel = WorkerChannel(
            self, config, self._exited, pipeline=pipeline,
            shm_name=shm.worker_prefix(instance.id, config.name, worker_id))
        self.exit_wait_s = self.process.exit_wait_s or EXIT_WAIT_S
        self.channel.exit_wait_s = self.exit_wait_s

    # --- what the pool's protocols read of its parts --------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def exit_code(self) -> int | None:
        return self.process.exit_code

    @property
    def cause(self) -> str:
        return self.process.cause

    @property
    def exit_reason(self) -> str:
        return self.ending.reason

    @property
    def forced_cause(self) -> str:
        return self.ending.forced

    # --- start ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn (or fork) the process and wait until it serves; raises WorkerStartError."""
        process, channel = self.process, self.channel
        timeout = self.config.startup_timeout_ms / 1000
        await process.launch()
        worker_event("worker.started", self)
        process.watch(self._process_exited)
        deadline = asyncio.get_running_loop().time() + timeout
        kind = self.config.worker
        if kind != "command":  # pit's worker writes a JSON ready file, the bridge its port
            if not await process.wait_ready_file(deadline, self._exited.done):
                await self._not_ready(timeout)
            process.read_ready() if kind == "pit" else process.read_port()
        if (stub := process.call_stub()) is not None:
            channel.use_stub(*stub)
        else:
            channel.connect(process.address, process.secret, process.tls)
        if kind != "pit":  # ready once it answers, and only if it is the process we started
            if not await wait_answering(channel.ping, self._exited.done, deadline):
                await self._not_ready(timeout)
            await process.check_listener()
        await channel.open(process.ready_info, process.lane_endpoint, process.secret,
                           process.tls)
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
        was_stopping = self.ending.stopping
        self.state = "dead"
        await asyncio.sleep(0)  # let the output pump take the last lines
        ending, process = self.ending, self.process
        cause = process.classify(hung=ending.error is WorkerHung, forced=ending.forced)
        ending.reason = ending.reason or crash.describe(code, cause)
        details = {"worker": self.id, "pid": self.pid, "exit_code": code, "cause": cause,
                   "output_tail": process.output_tail(), **ending.details}
        ending.info = (process.progress(), f"worker {self.id} (pid {self.pid}) "
                       f"{ending.reason}", details, ending.error)
        self.channel.fail_calls(*ending.info)
        if self.on_retire is not None:
            self.on_retire(self)  # a direct call still out ends with its connection
        if not self._exited.done():
            self._exited.set_result(code)
        self.channel.release_shm()
        worker_event("worker.exited", self, {"exit_code": code,
                                             "uptime_s": round(self.uptime(), 3)})
        process.record_end(self.recycle_reason or cause or "stopped")
        if not was_stopping and self.was_ready:
            self._on_exit(self)  # a worker that dies while starting is its starter's business
        # Last, so the pool hears of the exit at once.
        await self.channel.close()

    # --- calls (the channel's; `send` and `limit` are the hot path) --------------------------
    def slot_freed(self) -> None:
        self._on_free(self)

    @property
    def limit(self) -> int:
        """Calls this worker may hold: its capacity, plus a pipeline while calls are tiny,
        or one prefetched call while they are short (so it never idles for a round trip
        between calls; a prefetched call waits at most about one short call)."""
        channel = self.channel
        lane = channel.lane
        if lane is None or not channel.pipeline or self.exclusive_calls:
            return self.capacity
        age = lane.oldest_age()
        if self.avg_ms < PIPELINE_BELOW_MS:
            if age < PIPELINE_STALL_S:
                return self.capacity + channel.pipeline
        elif self.capacity == 1 and self.avg_ms < PREFETCH_BELOW_MS and \
                age * 1000 < 2 * self.avg_ms:
            return 2
        return self.capacity

    def send(self, req: Any, timeout: float | None, on_done: OnDone,
             big: dict[str, Any] | None = None) -> int:
        """Start one call (its slot already taken); returns its call id (`WorkerChannel.send`:
        ``on_done`` once, from the loop; the slot back through ``on_free``)."""
        return self.channel.send(req, timeout, on_done, big)

    def stream(self, req: Any, timeout: float | None) -> AsyncIterator[Any]:
        """Yield ToolChunks of a streaming call granted as exclusive; frees the slot at the end."""
        return self.channel.stream(req, timeout)

    def abandon(self, cid: int, err: BaseException) -> None:
        """Answer call ``cid`` with ``err`` now and cancel it in the worker (lane calls)."""
        self.channel.abandon(cid, err)

    async def ping(self, timeout: float) -> bool:
        """One heartbeat: does the worker's gRPC server answer within ``timeout``?"""
        return await self.channel.ping(timeout)

    async def cleanup_session(self, session_id: str, timeout: float = 5.0) -> bool:
        """Tell the worker to drop a session's state (it calls on_session_end)."""
        return await self.channel.cleanup_session(session_id, timeout)

    def lane_unavailable(self) -> None:
        """The peer answered UNIMPLEMENTED: plain unary calls from now on."""
        self.channel.lane = None

    async def wait_exit(self) -> None:
        """A connection to the worker (its lane, a direct link) broke: usually the process
        died. Wait up to EXIT_WAIT_S (a Ray worker: longer, `ray_process`) for the exit to
        name the cause; a worker that lives on
        without the connection is killed."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), self.exit_wait_s)
        if not self._exited.done() and not self.ending.stopping:
            self.ending.reason = "closed its call lane"
            self.kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exited), EXIT_WAIT_S)

    def death_error(self, lone: bool, cid: int = 0) -> Exception:
        """What a call out on this worker gets when it died: the same error, cause, output
        tail and blame a lane call gets (`lane.exit_error`). ``cid``: a call numbered like
        the lane's (a direct call), judged by the worker's progress file too; 0: a unary call
        or a stream, to blame when ``lone`` (the only call out)."""
        if self.ending.info is None:
            return WorkerExit(f"worker {self.id} (pid {self.pid}) "
                              f"{self.exit_reason or 'lost its connection'}")
        progress, message, details, error = self.ending.info
        return exit_error(cid, progress if cid else None, message, details, error, lone)

    # --- stop -------------------------------------------------------------------------------
    def mark_hung(self, silent_s: float, dump: Path | None) -> None:
        """Kill a worker that stopped answering; its calls fail with WorkerHung."""
        self.ending.error = WorkerHung
        self.ending.details = {"stack_dump": str(dump) if dump else None, "cause": "hung"}
        where = f"; its stacks are in {dump}" if dump else ""
        self.ending.reason = (f"was hung: no heartbeat answer for {silent_s:.1f} s, killed"
                              f"{where}")
        self.kill()

    def kill_stuck(self, req: Any) -> None:
        """A cancelled call (timed out, or given up by its caller) did not stop within
        CANCEL_GRACE_S: kill the worker, as that call's doing. Cause ``cancel_timeout``: the
        call counts towards poison_after and the worker's death towards the circuit."""
        if self.state == "dead" or self.ending.forced:
            return
        self.ending.forced = "cancel_timeout"
        self.ending.reason = (f"was killed: a cancelled call to {req.tool_name!r} did not "
                              f"stop within {CANCEL_GRACE_S:g} s")
        if self.on_stuck is not None:
            self.on_stuck(self, req)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the worker's process group now."""
        self.process.kill()

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after TERM_GRACE_S; returns once it is gone."""
        self.ending.stopping = True
        self.accepting = False
        if self.state != "dead":
            self.state = "stopping"
        if self.on_retire is not None:
            self.on_retire(self)
        await self.channel.close_lane()
        if self.process.running:
            self.process.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), TERM_GRACE_S)
            except asyncio.TimeoutError:
                self.kill()
            await self._exited
        await self.process.wait_tasks(1.0)
        await self.channel.wait_closed(1.0)
        self.process.remove_files()

    def uptime(self) -> float:
        return time.time() - self.process.started_at


if TYPE_CHECKING:  # mypy holds WorkerHandle to the seam it implements (runtime/pool/transport.py)
    def _is_a_transport(worker: WorkerHandle) -> WorkerTransport:
        return worker
