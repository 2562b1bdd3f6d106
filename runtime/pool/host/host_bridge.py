"""The host's side of BridgeService, one servicer per listener.

    listener                   Ping, Heartbeat,     GetExposedElixirTools,  ExecuteTool,
                               InitializeSession,   ExecuteElixirTool       ExecuteStreamingTool
                               RegisterTools        (host tools)            (host tools + pools)
    host.sock (0700 run dir)   yes                  yes                     yes
    bridge: 127.0.0.1 TCP      yes                  yes                     PERMISSION_DENIED
    [tool_bridge]: 127.0.0.1   with the token       with the token          with the token

Workers call host tools (Snakepit's "Elixir tools") with ExecuteElixirTool; ExecuteTool runs
any tool of the host (`tool_router`). Snakepit's bridge dials its host over TCP without
credentials, so the bridge listener answers what the bridge needs and refuses ExecuteTool: any
local user can reach a loopback port, and ExecuteTool would hand them every pool. The
``[tool_bridge]`` listener, only with a token, serves everything to calls that carry it as
gRPC metadata ``authorization: Bearer <token>`` (`TokenGate`, compared in constant time).
The rest of the service (CallLane, sessions, telemetry) is the workers' side: UNIMPLEMENTED.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ...logs import logger
from ...protocol import codec, pb, pb_grpc
from .host_tools import HostToolRegistry
from .tool_router import ToolRouter, error_json

log = logger("lifecycle")

AUTH_HEADER = "authorization"
AUTH_SCHEME = "Bearer "
NO_DEADLINE_S = 1e8  # grpc reports "no deadline" as a huge time remaining


MAX_REGISTERED = 64  # RegisterTools catalogues kept (newest), by the id the worker sent
MAX_TOOLS_KEPT = 1000  # tools kept of one catalogue



def _timeout(context: Any) -> float | None:
    left = context.time_remaining()
    return None if left is None or left > NO_DEADLINE_S else max(left, 0.001)


def token_matches(metadata: Any, token: str) -> bool:
    """Whether the call's metadata carries ``authorization: Bearer <token>`` (constant time:
    how much of a guess matched must not show in how long the answer takes)."""
    expected = (AUTH_SCHEME + token).encode()
    ok = False
    for key, value in metadata or ():
        if key.lower() == AUTH_HEADER:
            given = value.encode() if isinstance(value, str) else bytes(value)
            ok |= hmac.compare_digest(given, expected)
    return ok


class TokenGate(grpc.aio.ServerInterceptor):
    """Ends every call that lacks the token with UNAUTHENTICATED, before any servicer runs
    (grpc's own auth example does it so: the refusal is sent before any message, whatever
    kind of RPC the client started)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        if token_matches(handler_call_details.invocation_metadata, self._token):
            return await continuation(handler_call_details)
        method = handler_call_details.method

        async def refuse(request: Any, context: Any) -> None:
            log.warning("refused %s on the host's [tool_bridge] listener from %s: no valid "
                        "token", method, context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "the host's [tool_bridge] listener needs its token as "
                                f"metadata '{AUTH_HEADER}: {AUTH_SCHEME}<token>'")

        return grpc.unary_unary_rpc_method_handler(refuse)


class HostBridgeServicer(pb_grpc.BridgeServiceServicer):
    """BridgeService on one of the host's listeners; ``execute_tools``: whether it serves
    ExecuteTool / ExecuteStreamingTool (not on the bridge's TCP listener)."""

    def __init__(self, host_tools: HostToolRegistry, router: ToolRouter,
                 registered: dict[str, list[Any]], *, execute_tools: bool = True,
                 tools_from: Callable[[str, Any], Awaitable[bool]] | None = None) -> None:
        self.host_tools = host_tools
        self.router = router
        self.registered = registered  # worker id -> its ToolRegistrations (shared by listeners)
        self.execute_tools = execute_tools
        # the bridge's TCP listener: RegisterTools only from the host's own bridge workers,
        # whose pool learns the catalogue (``tools_from(peer, tools)``: False for a stranger)
        self.tools_from = tools_from

    async def Ping(self, request: Any, context: Any) -> Any:
        return pb.PingResponse(message=f"pong: {request.message}",
                               server_time=codec.timestamp_now())

    async def Heartbeat(self, request: Any, context: Any) -> Any:
        return pb.HeartbeatResponse(server_time=codec.timestamp_now(), session_valid=True)

    async def InitializeSession(self, request: Any, context: Any) -> Any:
        return pb.InitializeSessionResponse(success=True)

    async def RegisterTools(self, request: Any, context: Any) -> Any:
        if self.tools_from is not None and not await self.tools_from(context.peer(),
                                                                     request.tools):
            return pb.RegisterToolsResponse(
                success=False, error_message="RegisterTools is taken only from this host's "
                                             "own Snakepit bridge workers")
        # Kept for `registered_tools`, bounded: the bridge's TCP listener takes this from any
        # local user, and a bridge registers again for every session under a fresh id.
        self.registered.pop(request.worker_id, None)
        while len(self.registered) >= MAX_REGISTERED:
            del self.registered[next(iter(self.registered))]  # the oldest goes
        self.registered[request.worker_id] = list(request.tools[:MAX_TOOLS_KEPT])
        return pb.RegisterToolsResponse(
            success=True, tool_ids={t.name: f"{request.worker_id}:{t.name}"
                                    for t in request.tools})

    async def GetExposedElixirTools(self, request: Any, context: Any) -> Any:
        return pb.GetExposedElixirToolsResponse(
            tools=[t.spec() for t in self.host_tools.visible(request.session_id)])

    async def ExecuteElixirTool(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        resp = pb.ExecuteElixirToolResponse()
        try:
            tool = self.host_tools.lookup(request.tool_name, request.session_id)
            if tool is None:
                raise self.host_tools.unknown(request.tool_name, request.session_id)
            codec.encode_result(resp, await tool.run(codec.decode_params(request)),
                                tool_name=request.tool_name)
        except Exception as exc:  # noqa: BLE001 - a host tool's failure goes back to the worker
            resp = pb.ExecuteElixirToolResponse(success=False, error_message=error_json(
                exc, request.tool_name, request.session_id))
        resp.execution_time_ms = int((time.perf_counter() - started) * 1000)
        return resp

    async def _admit(self, context: Any, rpc: str) -> None:
        """Let an ExecuteTool call through, or end it (the bridge's TCP listener)."""
        if not self.execute_tools:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{rpc} is not served on the host's TCP listener for Snakepit "
                                "bridge workers (any local user can reach it): call it on the "
                                "host's unix socket, or on the [tool_bridge] listener with its "
                                "token")

    async def ExecuteTool(self, request: Any, context: Any) -> Any:
        await self._admit(context, "ExecuteTool")
        return await self.router.execute(request, _timeout(context))

    async def ExecuteStreamingTool(self, request: Any, context: Any) -> Any:
        await self._admit(context, "ExecuteStreamingTool")
        try:
            async for chunk in self.router.stream(request, _timeout(context)):
                yield chunk
        except Exception as exc:  # noqa: BLE001 - as a worker ends a failed stream
            await context.abort(grpc.StatusCode.INTERNAL,
                                error_json(exc, request.tool_name, request.session_id))
