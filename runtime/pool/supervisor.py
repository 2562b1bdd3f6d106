"""Keeps a pool's workers healthy while it runs: heartbeats, TTL and memory recycling.

    every heartbeat_interval_ms:  Ping each ready worker (timeout heartbeat_timeout_ms)
        answer      -> missed = 0
        no answer   -> missed += 1; at heartbeat_max_missed: dump its stacks (SIGUSR1 ->
                       faulthandler, copied to <state_dir>/dumps/), kill it; its calls fail
                       with WorkerHung and the pool replaces it

Pings run concurrently and overlap, so a hung worker is declared after about
timeout + (max_missed - 1) * interval. Every RECYCLE_CHECK_S, workers past their (jittered)
ttl_s or over max_memory_mb of RSS (sampled with psutil in a thread) are recycled; the pool
replaces them without downtime.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import psutil

RECYCLE_CHECK_S = 0.5
SESSION_CHECK_S = 1.0

if TYPE_CHECKING:
    from .async_pool import AsyncPool
    from .worker_handle import WorkerHandle


class Supervisor:
    def __init__(self, pool: AsyncPool) -> None:
        self.pool = pool
        self.config = pool.config
        self._tasks: set[asyncio.Task[Any]] = set()
        self._main: asyncio.Task[None] | None = None
        self._last_ok: dict[str, float] = {}

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.config.heartbeat_interval_ms > 0:
            self._main = loop.create_task(self._heartbeats())
        if self.config.ttl_s or self.config.max_memory_mb:
            self._spawn(self._recycling())
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
            for worker in self.pool.live_workers():
                if worker.state in ("ready", "draining") and \
                        worker.missed_heartbeats < self.config.heartbeat_max_missed:
                    self._spawn(self._beat(worker))

    async def _recycling(self) -> None:
        """TTL and memory checks (max_requests is checked as each call ends)."""
        while True:
            await asyncio.sleep(RECYCLE_CHECK_S)
            workers = [w for w in self.pool.live_workers() if w.state == "ready"]
            if self.config.max_memory_mb:
                samples = await asyncio.to_thread(_rss_mb, [w.pid for w in workers])
                for worker, rss in zip(workers, samples, strict=True):
                    worker.rss_mb = rss
                    if rss > self.config.max_memory_mb:
                        self.pool.start_recycle(worker, "memory")
            for worker in workers:
                if worker.ttl_s and worker.uptime() >= worker.ttl_s:
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


def _rss_mb(pids: list[int | None]) -> list[float]:
    """Resident memory of each worker in MiB (0 when it is gone); runs off the event loop."""
    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid).memory_info().rss / 2**20 if pid else 0.0)
        except psutil.Error:
            out.append(0.0)
    return out
