"""Adapters written against Snakepit's Python bridge (`snakepit_bridge`), as a Snakepit user
would write them, for runtime/worker/snakepit_adapters.py. Importable only with the bridge on
the path (tests put ../shared/snakepit-bridge/python on PYTHONPATH)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from snakepit_bridge import telemetry
from snakepit_bridge.base_adapter import BaseAdapter, tool

LIFECYCLE: dict[str, int] = {"instances": 0, "initialized": 0, "cleaned": 0}


class QuotaExceeded(Exception):
    """An adapter's own exception type: its name must reach the caller."""


class Chunk:
    """What Snakepit's streaming code reads off a yielded item: .data, .is_final."""

    def __init__(self, data: Any, is_final: bool = False) -> None:
        self.data = data
        self.is_final = is_final


class ModernAdapter(BaseAdapter):
    """@tool methods only (no execute_tool), async initialize/cleanup: one instance per call."""

    def __init__(self) -> None:
        super().__init__()
        LIFECYCLE["instances"] += 1
        self.ready = False

    async def initialize(self) -> None:
        await asyncio.sleep(0)
        self.ready = True
        LIFECYCLE["initialized"] += 1

    async def cleanup(self) -> None:
        LIFECYCLE["cleaned"] += 1

    @tool(description="Counts of adapter instances, initialize() and cleanup() calls so far")
    def lifecycle(self) -> dict[str, Any]:
        return {**LIFECYCLE, "ready": self.ready, "pid": os.getpid()}

    @tool(description="Scale a number")
    def scale(self, x: float, factor: int = 2) -> float:
        return x * factor

    @tool(description="Who is calling")
    def whoami(self) -> dict[str, Any]:
        ctx = self.session_context
        return {"session_id": self.session_id, "metadata": dict(ctx.request_metadata),
                "repr": repr(ctx)}

    @tool(description="Call a host tool")
    def via_host(self, name: str, payload: dict) -> Any:
        ctx = self.session_context
        return {"listed": sorted(ctx.elixir_tools),
                "result": ctx.call_elixir_tool(name, **payload)}

    @tool(description="Over quota")
    def over_quota(self, used: int) -> None:
        raise QuotaExceeded(f"used {used} of 10")

    @tool(description="Count asynchronously", supports_streaming=True)
    async def countdown(self, n: int):  # noqa: ANN201 - an async generator, as users write
        for i in range(n, 0, -1):
            await asyncio.sleep(0)
            yield Chunk({"left": i}, is_final=(i == 1))

    @tool(description="Emit a telemetry event")
    def emit(self, label: str) -> bool:
        telemetry.emit("modern.work", {"units": 3}, {"label": label})
        return telemetry.is_enabled()
