"""The host's Control service (pit.control): snapshots on request, or streamed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from ..protocol import pit_control_pb2 as cpb
from ..protocol import pit_control_pb2_grpc as cpb_grpc
from .snapshot import instance_snapshot

MIN_INTERVAL_MS = 250  # 4 Hz at most


class ControlServicer(cpb_grpc.ControlServicer):
    def __init__(self, instance: Any) -> None:
        self.instance = instance

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


def add_control_service(instance: Any, server: Any) -> None:
    cpb_grpc.add_ControlServicer_to_server(ControlServicer(instance), server)
