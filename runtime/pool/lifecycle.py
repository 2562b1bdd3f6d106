"""Keeping a pool at its size and healthy: start, reconcile, replace, recycle, watch.

    start_all -> start `size` workers, `start_batch` at a time
    a worker dies -> dropped; the reconcile task wakes up
    reconcile loop -> while fewer than `size` workers are starting/ready (workers being
                      recycled do not count), start the missing ones, a batch at a time,
                      backing off while replacements keep dying young of their own causes
    recycle   -> start the replacement first; once it is ready the old worker stops taking
                 calls, finishes what it holds (up to shutdown_grace_ms) and stops

    heartbeats -> every heartbeat_interval_ms: Ping each ready worker (timeout
                  heartbeat_timeout_ms); no answer heartbeat_max_missed times: dump its
                  stacks (SIGUSR1 -> faulthandler, copied to <state_dir>/dumps/), kill it; its
                  calls fail with WorkerHung and it is replaced
    sampling   -> every SAMPLE_EVERY_S: each worker's RSS and CPU % (psutil, in a thread)
                  into the pool's metrics; workers past their (jittered) ttl_s or over
                  max_memory_mb are recycled
    sessions   -> every SESSION_CHECK_S: idle sessions expire (their workers drop the state)

A worker killed from outside (SIGKILL/SIGTERM without OOM evidence) is replaced at once and
does not count towards backoff or the circuit breaker: it is nobody's code's fault. Pings
run concurrently and overlap, so a hung worker is declared after about
timeout + (max_missed - 1) * interval. Everything here runs on the pool's loop and reaches
pool state through the core's hooks (`LifecycleHost`).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from ..errors import PitError, WorkerStartError
from ..hardware import DeviceChoice
from ..logs import logger
from .crash import ATTRIBUTABLE
from .forkserver import ForkServer
from .forkserver import supported as forkserver_supported
from .host.loop_thread import off_loop
from .worker_handle import WorkerHandle

log = logger("lifecycle")

if TYPE_CHECKING:
    from ..config import PoolConfig
    from ..telemetry.control import TelemetryControl
    from .host.instance import HostInstance
    from .resilience import CrashBarrier


class RetiresWorkers(Protocol):
    def retire(self, worker: WorkerHandle) -> None: ...


@dataclass
class WorkerLaunch:
    """How the pool's workers start: its env's interpreter, the bridge dir of an env pool,
    the device variables (the pool sets them once, at start)."""

    python: str
    bridge: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    device: DeviceChoice | None = None


class LifecycleHost(Protocol):
    """What keeping the pool at size needs of the pool: its worker set and its events."""

    barrier: CrashBarrier
    launch: WorkerLaunch
    telemetry: TelemetryControl  # what new workers send of their events

    @property
    def config(self) -> PoolConfig: ...
    @property
    def instance(self) -> HostInstance: ...
    @property
    def closing(self) -> bool: ...
    @property
    def lending(self) -> RetiresWorkers: ...
    def new_worker_id(self) -> str: ...
    def add_worker(self, worker: WorkerHandle) -> None: ...
    def remove_worker(self, worker: WorkerHandle) -> None: ...
    def live_workers(self) -> list[WorkerHandle]: ...
    def slot_freed(self, worker: WorkerHandle) -> None: ...
    def worker_ready(self, worker: WorkerHandle) -> None: ...
    def worker_leaving(self, worker: WorkerHandle) -> None: ...
    def worker_gone(self, worker: WorkerHandle) -> None: ...
    def record_event(self, worker: WorkerHandle, reason: str) -> None: ...
    def sample_load(self) -> None: ...
    async def expire_sessions(self) -> int: ...

RESTART_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
JITTER = 0.1  # +-10 % on max_requests and ttl_s
YOUNG_S = 5.0  # a worker dying younger than this counts towards a crash streak
RECONCILE_EVERY_S = 1.0
SAMPLE_EVERY_S = 0.5
USS_EVERY = 5  # samples between USS readings
SESSION_CHECK_S = 1.0
EXTERNAL = ("killed", "terminated")


class Lifecycle:
    def __init__(self, pool: LifecycleHost) -> None:
        self.pool = pool
        self.config = pool.config
        self.crash_streak = 0
        self.restarts = 0
        self.start_error: PitError | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._recycling: set[asyncio.Task[Any]] = set()
        self.replacing: collections.deque[str] = collections.deque()  # reasons, oldest first
        self.forkserver: ForkServer | None = None
        self.spawn_only = False  # the adapter is not fork-safe
        self._watching: set[asyncio.Task[Any]] = set()  # heartbeats, sampling, sessions
        self._last_ok: dict[str, float] = {}  # worker id -> when it last answered a ping

    # --- start ------------------------------------------------------------------------------
    async def start_all(self) -> None:
        """Start every worker, `start_batch` at a time; raise the first start error."""
        left = self.config.size
        while left > 0:
            results = await self._start_batch(left)
            left -= len(results)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]

    async def _forkserver(self, worker: WorkerHandle) -> ForkServer | None:
        """The pool's fork server (started with the first worker), or None: spawn."""
        if self.config.start_method != "forkserver" or self.config.worker != "pit" or \
                self.config.backend != "local" or \
                not forkserver_supported() or \
                self.spawn_only:
            return None
        if self.forkserver is None:
            self.forkserver = ForkServer(
                self.config.name, worker.process.python, worker.process.zygote_argv(),
                worker.process.env(),
                instance=self.pool.instance,
                startup_timeout=self.config.startup_timeout_ms / 1000)
            await self.forkserver.spawn_ready()
            if not self.forkserver.fork_safe:
                log.info("pool %r: the adapter declares fork_safe = False: spawning workers",
                         self.config.name)
                await self.forkserver.close()
                self.forkserver, self.spawn_only = None, True
        return self.forkserver

    async def close_forkserver(self) -> None:
        if self.forkserver is not None:
            await self.forkserver.close()
            self.forkserver = None

    def run(self) -> None:
        """Start the reconcile loop (after start_all, or instead of it for start(wait=False))."""
        self._task = asyncio.get_running_loop().create_task(self._reconcile())

    def watch(self) -> None:
        """Start the heartbeats, sampling and session expiry (before the workers start: a
        worker that is ready early is pinged while the rest start, for a dependent worker
        takes the host's silence for a wedged host)."""
        if self.config.heartbeat_interval_ms > 0:
            self._spawn(self._heartbeats())
        self._spawn(self._sampling())
        self._spawn(self._sessions())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._watching.add(task)
        task.add_done_callback(self._watching.discard)

    async def stop(self) -> None:
        """Stop watching, replacing and recycling (the pool is closing)."""
        tasks = [t for t in (*self._watching, self._task, *self._recycling) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _start_batch(self, wanted: int) -> list[Any]:
        """Start up to ``start_batch`` of ``wanted`` workers at once: each one's handle, or the
        exception its start raised."""
        n = min(wanted, max(1, self.config.start_batch))
        return await asyncio.gather(*(self.start_worker() for _ in range(n)),
                                    return_exceptions=True)

    async def start_worker(self) -> WorkerHandle:
        pool = self.pool
        worker = WorkerHandle(
            pool.new_worker_id(), self.config, instance=pool.instance,
            on_free=pool.slot_freed, on_exit=self.worker_exited,
            pipeline=self.config.pipeline_depth)
        worker.on_stuck = lambda _worker, req: pool.barrier.blame_stuck(req)
        worker.process.python, worker.process.bridge = pool.launch.python, pool.launch.bridge
        worker.on_retire = pool.lending.retire
        if self.replacing:
            worker.replaced_reason = self.replacing.popleft()
        worker.process.extra_env = pool.launch.extra_env
        worker.process.forkserver = await self._forkserver(worker)
        if self.config.max_requests:
            # Jitter, so that workers started together do not all recycle together.
            worker.max_requests = max(1, round(self.config.max_requests
                                               * random.uniform(1 - JITTER, 1 + JITTER)))
        if self.config.ttl_s:
            worker.ttl_s = self.config.ttl_s * random.uniform(1 - JITTER, 1 + JITTER)
        pool.add_worker(worker)
        worker.channel.telemetry_control = pool.telemetry  # later changes reach it as a member
        try:
            await worker.start()
        except BaseException:
            pool.remove_worker(worker)
            await worker.stop()
            raise
        if pool.closing:
            await worker.stop()
            pool.remove_worker(worker)
            return worker
        pool.worker_ready(worker)
        return worker

    # --- replacement ------------------------------------------------------------------------
    def worker_exited(self, worker: WorkerHandle) -> None:
        """A ready worker died on its own: drop it; the reconcile loop replaces it."""
        pool = self.pool
        if not worker.recycle_reason:
            pool.record_event(worker, worker.forced_cause or "crashed")
        if worker.cause in ATTRIBUTABLE:
            pool.barrier.breaker.record_failure(worker.cause)
            self.crash_streak = self.crash_streak + 1 if worker.uptime() < YOUNG_S else 0
        pool.worker_gone(worker)
        if not pool.closing:
            log.warning("pool %r: worker %s (pid %s) %s; starting a replacement",
                        self.config.name, worker.id, worker.pid, worker.exit_reason)
        self._wake.set()

    def _missing(self) -> int:
        live = [w for w in self.pool.live_workers()
                if w.state in ("starting", "ready") and not w.recycle_reason]
        return self.config.size - len(live)

    async def _reconcile(self) -> None:
        while not self.pool.closing:
            try:
                await asyncio.wait_for(self._wake.wait(), RECONCILE_EVERY_S)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            while self._missing() > 0 and not self.pool.closing:
                await asyncio.sleep(self._backoff())
                for r in await self._start_batch(self._missing()):
                    if isinstance(r, WorkerStartError):
                        self._start_failed(r)
                    elif isinstance(r, BaseException):
                        raise r
                    else:
                        self.restarts += 1

    def _start_failed(self, exc: WorkerStartError) -> None:
        self.start_error = exc
        log.error("pool %r: replacement failed to start: %s", self.config.name,
                  exc.message.splitlines()[0])
        if exc.details.get("cause") in EXTERNAL:
            return  # killed from outside while starting: not its fault
        self.pool.barrier.breaker.record_failure("start_failure")
        self.crash_streak += 1

    def _backoff(self) -> float:
        """0 for a first crash, then growing delays while workers keep dying young."""
        if self.crash_streak <= 1:
            return 0.0
        return RESTART_BACKOFF_S[min(self.crash_streak - 2, len(RESTART_BACKOFF_S) - 1)]

    # --- recycling --------------------------------------------------------------------------
    def start_recycle(self, worker: WorkerHandle,
                      reason: str) -> asyncio.Task[None] | None:
        """Replace ``worker`` without downtime, in the background; the recycle's task, or
        None when the worker is already being replaced, not ready, or the pool closes."""
        if worker.recycle_reason or worker.state != "ready" or self.pool.closing:
            return None
        self.pool.record_event(worker, reason)
        if not self.config.recycle_overlap:
            worker.accepting = False  # no call past this one: its limit is exact
        task = asyncio.get_running_loop().create_task(self.recycle(worker))
        self._recycling.add(task)
        task.add_done_callback(self._recycling.discard)
        return task

    async def recycle(self, old: WorkerHandle) -> None:
        try:
            await self.start_worker()
        except WorkerStartError as exc:
            old.recycle_reason = ""  # keep serving with the old one; try again later
            old.accepting = old.state == "ready"
            log.error("pool %r: could not recycle %s: the replacement failed to start: %s",
                      self.config.name, old.id, exc.message.splitlines()[0])
            return
        old.accepting = False
        old.state = "draining"
        self.pool.worker_leaving(old)  # its sessions move (hint) or report it (strict)
        loop = asyncio.get_running_loop()
        end = loop.time() + self.config.shutdown_grace_ms / 1000
        try:
            while old.in_flight > 0 and loop.time() < end and old.state != "dead":
                await asyncio.sleep(0.01)
        finally:  # also when the pool closes meanwhile: the old process must not outlive it
            self.pool.worker_gone(old)
            await old.stop()
        self.restarts += 1

    # --- health -----------------------------------------------------------------------------
    async def _heartbeats(self) -> None:
        interval = self.config.heartbeat_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            live = self.pool.live_workers()
            for gone in set(self._last_ok) - {w.id for w in live}:
                del self._last_ok[gone]  # replaced or recycled workers
            for worker in live:
                if worker.state in ("ready", "draining") and \
                        worker.samples.missed_heartbeats < self.config.heartbeat_max_missed:
                    self._spawn(self._beat(worker))

    async def _sampling(self) -> None:
        """Every second: RSS and CPU % of each worker (psutil, off the loop), a load sample
        for the metrics history, then TTL and memory recycling."""
        procs: dict[int, psutil.Process] = {}
        rounds = 0
        while True:
            await asyncio.sleep(SAMPLE_EVERY_S)
            uss = rounds % USS_EVERY == 0  # USS reads smaps: ~0.5 ms a worker, so less often
            rounds += 1
            live = [w for w in self.pool.live_workers() if w.pid]
            got: list[Any] = [None] * len(live)  # None: sampled here, by pid
            if self.config.backend == "ray":  # placed elsewhere: sampled by its actor
                got = await asyncio.gather(*(w.process.usage(uss) for w in live),
                                           return_exceptions=True)
            pids = [w.pid for w, g in zip(live, got, strict=True) if g is None]
            here = iter(await off_loop(functools.partial(_usage, procs, pids, uss))
                        if pids else ())
            workers = []
            for worker, sample in zip(live, got, strict=True):
                if sample is None:
                    sample = next(here)
                if isinstance(sample, BaseException):
                    continue  # an actor that did not answer: not sampled this round
                workers.append(worker)
                worker.samples.rss_mb, worker.samples.cpu_pct = sample[0], sample[1]
                if sample[2] is not None:
                    worker.samples.uss_mb = sample[2]
            self.pool.sample_load()
            for worker in workers:
                if worker.state != "ready":
                    continue
                if self.config.max_memory_mb and worker.samples.rss_mb > self.config.max_memory_mb:
                    self.start_recycle(worker, "memory")
                elif worker.ttl_s and worker.uptime() >= worker.ttl_s:
                    self.start_recycle(worker, "ttl")

    async def _sessions(self) -> None:
        """Expire idle sessions (their workers drop the state)."""
        while True:
            await asyncio.sleep(SESSION_CHECK_S)
            await self.pool.expire_sessions()

    async def _beat(self, worker: WorkerHandle) -> None:
        now = time.monotonic()
        self._last_ok.setdefault(worker.id, now)
        if await worker.ping(self.config.heartbeat_timeout_ms / 1000):
            worker.samples.missed_heartbeats = 0
            self._last_ok[worker.id] = time.monotonic()
            return
        if worker.state == "dead":
            return
        worker.samples.missed_heartbeats += 1
        if worker.samples.missed_heartbeats == self.config.heartbeat_max_missed:
            silent = time.monotonic() - self._last_ok.pop(worker.id, now)
            dump = await worker.process.dump_stacks(self.pool.instance.state_dir / "dumps")
            self.pool.record_event(worker, "hung")
            worker.mark_hung(silent, dump)


def _usage(procs: dict[int, psutil.Process], pids: list[int | None],
           uss: bool) -> list[tuple[float, float, float | None]]:
    """(RSS MiB, CPU % since the last call, USS MiB when ``uss``) of each worker (0s when
    gone); off the loop."""
    out = []
    for pid in pids:
        try:
            proc = procs.get(pid or 0)
            if proc is None:
                proc = procs[pid or 0] = psutil.Process(pid)
                proc.cpu_percent(None)  # the first reading primes the counter
            with proc.oneshot():
                mem = proc.memory_full_info() if uss else proc.memory_info()
                out.append((mem.rss / 2**20, proc.cpu_percent(None),
                            mem.uss / 2**20 if uss else None))
        except psutil.Error:
            procs.pop(pid or 0, None)
            out.append((0.0, 0.0, 0.0))
    for gone in set(procs) - {p for p in pids if p}:
        del procs[gone]
    return out
