"""The host's Control service (pit.control): snapshots on request, or streamed; the workers'
output (`runtime.pool.host.worker_output`), read back or followed; and `pit stop`.

Stop closes the host's pools gracefully. A program that handles SIGTERM (`pit run` does, by
closing its pools and exiting) gets SIGTERM in its main thread, the one thread a signal can
wake from a blocking wait: its own shutdown then runs as it would for `kill`. A program that
does not (SIGTERM would kill it on the spot, skipping every close) has its pools closed here
and keeps running; its calls then fail as on any closed pool.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import orjson

from ..logs import logger
from ..protocol import pit_control_pb2 as cpb
from ..protocol import pit_control_pb2_grpc as cpb_grpc
from .snapshot import instance_snapshot

log = logger("pool")
MIN_INTERVAL_MS = 250  # 4 Hz at most
FOLLOW_BUFFER_LINES = 10_000  # per follower; past it, lines are dropped and counted
EXITING = "exiting"  # StopReply.outcome: the program got SIGTERM and exits
POOLS_CLOSED = "pools_closed"  # the pools close, the program keeps running


def _log_close_failures(done: asyncio.Future[list[Any]]) -> None:
    """A pool whose close failed on `pit stop` is said in the host's log, not lost."""
    if done.cancelled():
        return
    for result in done.result():
        if isinstance(result, BaseException):
            log.error("pit stop: a pool failed to close: %r", result)


def handles_sigterm() -> bool:
    """Whether this program set a SIGTERM handler of its own (SIGTERM then stops it
    gracefully rather than killing it)."""
    return signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)


class ControlServicer(cpb_grpc.ControlServicer):
    def __init__(self, instance: Any) -> None:
        self.instance = instance
        self._closing: asyncio.Future[Any] | None = None  # Stop's close of the pools

    def _snapshot(self, pool: str) -> Any:
        data = instance_snapshot(self.instance, pool)
        return cpb.Snapshot(json=orjson.dumps(data), taken_at_ns=time.time_ns())

    async def GetStatus(self, request: Any, context: Any) -> Any:
        return self._snapshot(request.pool)

    async def WatchStatus(self, request: Any, context: Any) -> Any:
        interval = max(request.interval_ms, MIN_INTERVAL_MS) / 1000
        while True:
            yield self._snapshot(request.pool)
            await asyncio.sleep(interval)

    async def Stop(self, request: Any, context: Any) -> Any:
        if handles_sigterm():
            main = threading.main_thread().ident
            assert main is not None  # the main thread has started: we run inside it
            signal.pthread_kill(main, signal.SIGTERM)
            return cpb.StopReply(outcome=EXITING, pid=os.getpid())
        if self._closing is None:
            # Not awaited here: a standalone pool's close stops this very server, which
            # would cancel this call, and the close with it, half done. The reply goes out
            # first; the caller watches the pools close (`client.stop`).
            self._closing = asyncio.gather(
                *(core.close() for core in tuple(self.instance.cores)),
                return_exceptions=True)
            self._closing.add_done_callback(_log_close_failures)
        return cpb.StopReply(outcome=POOLS_CLOSED, pid=os.getpid())

    async def ReadOutput(self, request: Any, context: Any) -> Any:
        output = self.instance.output
        since = request.since_ns / 1e9

        def wanted(line: Any) -> bool:
            return ((not request.pool or line.pool == request.pool)
                    and (not request.worker or line.worker == request.worker))

        queue: asyncio.Queue[Any] = asyncio.Queue(FOLLOW_BUFFER_LINES)
        dropped = 0

        def take(line: Any) -> None:
            nonlocal dropped
            if not wanted(line):
                return
            try:
                queue.put_nowait(line)
            except asyncio.QueueFull:
                dropped += 1

        if request.follow:  # before the backlog is read: no line falls between the two
            output.subscribe(take)
        try:
            sent = 0
            for line in output.lines(pool=request.pool, worker=request.worker, since=since):
                sent = line.seq
                yield _line(line, 0)
            while request.follow:
                line = await queue.get()
                if line.seq <= sent:
                    continue
                lost, dropped = dropped, 0
                yield _line(line, lost)
        finally:
            output.unsubscribe(take)


def _line(line: Any, dropped: int) -> Any:
    return cpb.OutputLine(pool=line.pool, worker=line.worker, text=line.text,
                          at_ns=int(line.at * 1e9), dropped=dropped)


def add_control_service(instance: Any, server: Any) -> None:
    cpb_grpc.add_ControlServicer_to_server(ControlServicer(instance), server)
