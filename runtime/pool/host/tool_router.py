"""The host's ExecuteTool: any tool of the host, by name, for a client of the host.

    client (gRPC on host.sock, or TCP with the token; a worker's ctx.call_tool)
      ExecuteTool / ExecuteStreamingTool(tool_name, parameters, session_id, metadata)
        -> `choose`: metadata "pool" names a pool  -> that pool's tool
                     else a host tool of that name visible to the session -> the host tool
                     else the default pool (`pool_choice`: default_pool, the only
                     one or the one named "default", the only one with the tool)
        -> host tool: `HostTool.run` / `items`
           pool: PoolCore.prepare -> call / stream (queue, sessions, deadlines, retries as
           for any call of the pool)
      <- ExecuteToolResponse / ToolChunks; a failure is the JSON error payload a worker sends
         (`codec.encode_error`; a tool's own exception keeps its type and traceback)

A host tool wins over a pool's tool of the same name when no pool is named: host tools are
what the host's owner chose to expose, and the pool's tool stays reachable by naming its pool.
Arguments are decoded on the host and encoded again for the pool: a client's metadata never
reaches a worker with pit's private keys (shared-memory paths, pickle flags), and pickled
arguments are refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from ...errors import InvalidArgument, PitError, PoolNotFound, ToolNotFound
from ...protocol import arrays, codec, pb
from ..pool_choice import choose_default
from .host_tools import HostTool, HostToolRegistry

POOL_KEY = "pool"  # request metadata naming the pool a call is for
# Metadata a client may not pass on to a worker: pit's own keys (all "pit_..."), the codec's
# format markers, and the routing key itself.
PRIVATE_KEYS = ("pit_", codec.BINARY_FORMAT, codec.RESULT_FORMAT, POOL_KEY)
_CLOSED = ("closing", "closed")


class RoutablePool(Protocol):
    """What routing a call needs of a pool (`PoolCore` is one)."""

    state: str

    @property
    def name(self) -> str: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    def tool_spec(self, name: str) -> dict[str, Any] | None: ...
    def prepare(self, tool: str, args: Mapping[str, Any] | None, session_id: str | None,
                metadata: Mapping[str, str] | None, big: dict[str, Any] | None = None) -> Any: ...
    async def call(self, req: Any, timeout: float | None, *, idempotent: bool | None = None,
                   affinity: str | None = None, big: dict[str, Any] | None = None) -> Any: ...
    def stream(self, req: Any, timeout: float | None) -> AsyncIterator[Any]: ...


def choose(tool: str, metadata: Mapping[str, str], session_id: str,
           host_tools: HostToolRegistry, pools: Sequence[RoutablePool],
           preferred: str | None = None) -> HostTool | RoutablePool:
    """Where a call of ``tool`` goes (see the module docstring). Raises PoolNotFound."""
    wanted = metadata.get(POOL_KEY, "")
    if wanted:
        named = [p for p in pools if p.name == wanted]
        if not named:
            raise PoolNotFound(f"no pool named {wanted!r} on this host; pools: "
                               f"{_names(pools)}", details={"pool": wanted, "tool": tool})
        return next((p for p in named if p.state not in _CLOSED), named[0])
    found = host_tools.lookup(tool, session_id)
    if found is not None:
        return found
    return default_pool(tool, pools, preferred)


def default_pool(tool: str, pools: Sequence[RoutablePool],
                 preferred: str | None = None) -> RoutablePool:
    """The pool a call that names none goes to (`pool_choice.choose_default`, as for
    `runtime.execute()`): ``preferred`` (the config's default_pool), the only pool or the one
    named "default", else the only pool whose workers have ``tool``."""
    live = [p for p in pools if p.state not in _CLOSED]
    if not live:
        raise PoolNotFound(f"{tool!r} is no host tool, and no pool is running on this host "
                           "to run it", details={"tool": tool})
    by_name = {p.name: p for p in live}
    return by_name[choose_default(tool, list(by_name),
                                  lambda name: by_name[name].tool_spec(tool) is not None,
                                  preferred=preferred,
                                  how_to_name=f"metadata {POOL_KEY} = <name>")]


def _names(pools: Sequence[RoutablePool]) -> str:
    return ", ".join(sorted({p.name for p in pools})) or "none"


def request_args(req: Any) -> dict[str, Any]:
    """The call's arguments, read from its parameters and binary parameters only (never
    from shared memory a client's metadata names); pickled ones are refused."""
    clean = pb.ExecuteToolRequest(tool_name=req.tool_name)
    clean.parameters.MergeFrom(req.parameters)
    clean.binary_parameters.update(req.binary_parameters)
    for key, value in req.metadata.items():
        if key.startswith((codec.BINARY_FORMAT, arrays.PARAM)):  # how a binary one is laid out
            clean.metadata[key] = value
    try:
        return codec.decode_params(clean)
    except codec.CodecError as exc:
        raise InvalidArgument(f"tool {req.tool_name!r}: {exc}") from None


def forwarded_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The client's metadata a pool call carries on to the worker (``ctx.metadata``)."""
    return {k: v for k, v in metadata.items() if not k.startswith(PRIVATE_KEYS)}


def error_json(exc: BaseException, tool: str, session_id: str = "") -> str:
    """The JSON error payload for a call through the host, as a worker would send it: a
    tool's exception keeps its type, message and traceback; pit's errors their category."""
    if not isinstance(exc, PitError):  # a host tool raised: like a worker tool's exception
        return codec.encode_error(exc, tool_name=tool, session_id=session_id)
    payload = codec.error_payload(exc, tool_name=tool, session_id=session_id,
                                  category=exc.category)
    if exc.remote_type:  # the worker's own payload, read back by `errors.from_payload`
        prefix = f"tool {tool!r} raised {exc.remote_type}: "
        message = exc.message
        if exc.category == "remote_error" and message.startswith(prefix):
            message = message[len(prefix):]
        tb = exc.remote_traceback or ""
        payload.update(type=exc.remote_type, message=message, traceback=tb,
                       stacktrace=tb.splitlines())
    if exc.hint:
        payload["hint"] = exc.hint  # pit extension, as "category" is
    return orjson.dumps(payload).decode()


class ToolRouter:
    """Runs calls that arrive on the host's ExecuteTool / ExecuteStreamingTool."""

    def __init__(self, host_tools: HostToolRegistry,
                 pools: Callable[[], Sequence[RoutablePool]],
                 preferred: Callable[[], str | None] = lambda: None) -> None:
        self.host_tools = host_tools
        self.pools = pools  # the instance's pools, read at each call (they come and go)
        self.preferred = preferred  # the config's default_pool, read at each call

    def _target(self, req: Any) -> HostTool | RoutablePool:
        target = choose(req.tool_name, req.metadata, req.session_id, self.host_tools,
                        self.pools(), self.preferred())
        if not isinstance(target, HostTool) and target.loop is not asyncio.get_running_loop():
            raise PitError(f"pool {target.name!r} runs on another event loop than its host's "
                           "server; calls through the host cannot reach it")
        return target

    def _prepare(self, pool: RoutablePool, req: Any, args: dict[str, Any],
                 big: dict[str, Any] | None = None) -> Any:
        try:
            return pool.prepare(req.tool_name, args, req.session_id or None,
                                forwarded_metadata(req.metadata), big)
        except ToolNotFound as exc:
            if POOL_KEY in req.metadata:
                raise
            # It came here as no host tool: say so, and where the tool is if a pool has it.
            scope = f" for session {req.session_id!r}" if req.session_id else ""
            others = [p.name for p in self.pools()
                      if p is not pool and p.state not in _CLOSED and p.tool_spec(req.tool_name)]
            hint = (f"pool {others[0]!r} has it: name the pool in the request's metadata "
                    f"({POOL_KEY} = {others[0]!r})" if others else exc.hint)
            raise ToolNotFound(f"no host tool {req.tool_name!r}{scope}, and {exc.message}",
                               details=exc.details, hint=hint) from None

    async def execute(self, req: Any, timeout: float | None) -> Any:
        """An ExecuteToolResponse for ``req`` (never raises for the call's own failure);
        ``timeout``: the client's deadline, None for the pool's call_timeout."""
        started = time.perf_counter()
        resp = pb.ExecuteToolResponse()
        try:
            target = self._target(req)
            args = request_args(req)
            if isinstance(target, HostTool):
                value = await target.run(args)
            else:
                big: dict[str, Any] = {}
                prepared = self._prepare(target, req, args, big)
                value = await target.call(prepared, timeout, big=big)
            codec.encode_result(resp, value, tool_name=req.tool_name)
        except Exception as exc:  # noqa: BLE001 - every failure goes back as a payload
            resp = pb.ExecuteToolResponse(success=False, error_message=error_json(
                exc, req.tool_name, req.session_id))
        resp.execution_time_ms = int((time.perf_counter() - started) * 1000)
        return resp

    async def stream(self, req: Any, timeout: float | None) -> AsyncIterator[Any]:
        """The ToolChunks of a streaming call, closed by an empty final chunk. Raises what
        failed (`error_json` makes it the payload)."""
        target = self._target(req)
        args = request_args(req)
        if isinstance(target, HostTool):
            items = target.items(args)
        else:
            items = target.stream(self._prepare(target, req, args), timeout)
        n = 0
        async for item in items:
            n += 1
            yield codec.encode_chunk(item, req.tool_name, n)
        yield codec.final_chunk(req.tool_name, n + 1)
