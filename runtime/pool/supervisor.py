"""Keeps a pool's workers healthy while it runs: heartbeats now, recycling next.

    every heartbeat_interval_ms:  Ping each ready worker (timeout heartbeat_timeout_ms)
        answer      -> missed = 0
        no answer   -> missed += 1; at heartbeat_max_missed: dump its stacks (SIGUSR1 ->
                       faulthandler, copied to <state_dir>/dumps/), kill it; its calls fail
                       with WorkerHung and the pool replaces it

Pings run concurrently and overlap, so a hung worker is declared after about
timeout + (max_missed - 1) * interval.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

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
        if self.config.heartbeat_interval_ms > 0:
            self._main = asyncio.get_running_loop().create_task(self._heartbeats())

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
