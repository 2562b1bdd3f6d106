"""The host's side of BridgeService: workers call host tools ("Elixir tools" in Snakepit).

Served with grpc.aio on a unix socket in the instance's run directory. A sync host tool runs in
a thread so it may itself call into a pool without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from ...protocol import codec, pb, pb_grpc


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def host_tool_spec(name: str, fn: Callable[..., Any]) -> Any:
    spec = pb.ToolSpec(name=name, description=(inspect.getdoc(fn) or "").split("\n")[0])
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return spec
    for p in params:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        spec.parameters.add(name=p.name, type="any", required=p.default is p.empty)
    return spec


class HostBridgeServicer(pb_grpc.BridgeServiceServicer):
    def __init__(self, tools: dict[str, Callable[..., Any]]) -> None:
        self.tools = tools  # shared, mutable: register_host_tool adds to it
        self.registered: dict[str, list[Any]] = {}  # worker id -> the ToolRegistrations sent

    async def Ping(self, request: Any, context: Any) -> Any:
        return pb.PingResponse(message=f"pong: {request.message}", server_time=_now())

    async def Heartbeat(self, request: Any, context: Any) -> Any:
        return pb.HeartbeatResponse(server_time=_now(), session_valid=True)

    async def InitializeSession(self, request: Any, context: Any) -> Any:
        return pb.InitializeSessionResponse(success=True)

    async def RegisterTools(self, request: Any, context: Any) -> Any:
        self.registered[request.worker_id] = list(request.tools)
        return pb.RegisterToolsResponse(
            success=True, tool_ids={t.name: f"{request.worker_id}:{t.name}"
                                    for t in request.tools})

    async def GetExposedElixirTools(self, request: Any, context: Any) -> Any:
        return pb.GetExposedElixirToolsResponse(
            tools=[host_tool_spec(n, f) for n, f in sorted(self.tools.items())])

    async def ExecuteElixirTool(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        resp = pb.ExecuteElixirToolResponse()
        fn = self.tools.get(request.tool_name)
        try:
            if fn is None:
                raise LookupError(f"unknown host tool {request.tool_name!r}; host tools: "
                                  f"{', '.join(sorted(self.tools)) or 'none registered'}")
            args = codec.decode_params(request)
            if inspect.iscoroutinefunction(fn):
                value = await fn(**args)
            else:
                value = await asyncio.to_thread(fn, **args)
            codec.encode_result(resp, value)
        except Exception as exc:  # noqa: BLE001 - a host tool's failure goes back to the worker
            resp = pb.ExecuteElixirToolResponse(success=False, error_message=codec.encode_error(
                exc, tool_name=request.tool_name, session_id=request.session_id))
        resp.execution_time_ms = int((time.perf_counter() - started) * 1000)
        return resp
