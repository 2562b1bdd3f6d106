"""Keeps a pool's workers healthy while it runs: heartbeats, TTL and memory recycling.

    every heartbeat_interval_ms:  Ping each ready worker (timeout heartbeat_timeout_ms)
        answer      -> missed = 0
        no answer   -> missed += 1; at heartbeat_max_missed: dump its stacks (SIGUSR1 ->
                       faulthandler, copied to <state_dir>/dumps/), kill it; its calls fail
                       with WorkerHung and the pool replaces it

Pings run concurrently and overlap, so a hung worker is declared after about
timeout + (max_missed - 1) * interval. Every SAMPLE_EVERY_S each worker's RSS and CPU % are
sampled (psutil, in a thread) into the pool's metrics, and workers past their (jittered) ttl_s
or over max_memory_mb are recycled; the pool replaces them without downtime.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

import psutil

SAMPLE_EVERY_S = 0.5
USS_EVERY = 5  # samples between USS readings
SESSION_CHECK_S = 1.0

if TYPE_CHECKING:
    from ..config import PoolConfig
    from .host.instance import HostInstance
    from .worker_handle import WorkerHandle


class SupervisedPool(Protocol):
    """What the supervisor needs of the pool: its workers, and where to report."""

    @property
    def config(self) -> PoolConfig: ...
    @property
    def instance(self) -> HostInstance: ...
    def live_workers(self) -> list[WorkerHandle]: ...
    def record_event(self, worker: WorkerHandle, reason: str) -> None: ...
    def start_recycle(self, worker: WorkerHandle, reason: str) -> None: ...
    def sample_load(self) -> None: ...
    async def expire_sessions(self) -> int: ...


class Supervisor:
    def __init__(self, pool: SupervisedPool) -> None:
        self.pool = pool
        self.config = pool.config
        self._tasks: set[asyncio.Task[Any]] = set()
        self._main: asyncio.Task[None] | None = None
        self._last_ok: dict[str, float] = {}

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.config.heartbeat_interval_ms > 0:
            self._main = loop.create_task(self._heartbeats())
        self._spawn(self._sampling())
        self._spawn(self._sessions())

    async def stop(self) -> None:
        tasks = [t for t in (self._main, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heartbeats(self) -> None:
        interval = self.config.heartbeat_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            live = self.pool.live_workers()
            for gone in set(self._last_ok) - {w.id for w in live}:
                del self._last_ok[gone]  # replaced or recycled workers
            for worker in live:
                if worker.state in ("ready", "draining") and \
                        worker.missed_heartbeats < self.config.heartbeat_max_missed:
                    self._spawn(self._beat(worker))

    async def _sampling(self) -> None:
        """Every second: RSS and CPU % of each worker (psutil, off the loop), a load sample
        for the metrics history, then TTL and memory recycling."""
        procs: dict[int, psutil.Process] = {}
        rounds = 0
        while True:
            await asyncio.sleep(SAMPLE_EVERY_S)
            workers = [w for w in self.pool.live_workers() if w.pid]
            uss = rounds % USS_EVERY == 0  # USS reads smaps: ~0.5 ms a worker, so less often
            rounds += 1
            samples = await asyncio.to_thread(_usage, procs, [w.pid for w in workers], uss)
            for worker, (rss, cpu, uss_mb) in zip(workers, samples, strict=True):
                worker.rss_mb, worker.cpu_pct = rss, cpu
                if uss_mb is not None:
                    worker.uss_mb = uss_mb
            self.pool.sample_load()
            for worker in workers:
                if worker.state != "ready":
                    continue
                if self.config.max_memory_mb and worker.rss_mb > self.config.max_memory_mb:
                    self.pool.start_recycle(worker, "memory")
                elif worker.ttl_s and worker.uptime() >= worker.ttl_s:
                    self.pool.start_recycle(worker, "ttl")

    async def _sessions(self) -> None:
        """Expire idle sessions (their workers drop the state)."""
        while True:
            await asyncio.sleep(SESSION_CHECK_S)
            await self.pool.expire_sessions()

    async def _beat(self, worker: WorkerHandle) -> None:
        now = time.monotonic()
        self._last_ok.setdefault(worker.id, now)
        if await worker.ping(self.config.heartbeat_timeout_ms / 1000):
            worker.missed_heartbeats = 0
            self._last_ok[worker.id] = time.monotonic()
            return
        if worker.state == "dead":
            return
        worker.missed_heartbeats += 1
        if worker.missed_heartbeats == self.config.heartbeat_max_missed:
            silent = time.monotonic() - self._last_ok.pop(worker.id, now)
            dump = await worker.dump_stacks(self.pool.instance.state_dir / "dumps")
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
