"""Checking and encoding a call before it is dispatched (any thread): bad input fails here,
at once, with an error that names it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InvalidArgument, PoolNotReady, ShutdownError, ToolNotFound
from ..logs import logger, redact
from ..protocol import arrays, codec, pb
from ..telemetry import tracing

if TYPE_CHECKING:
    from ..config import PoolConfig
    from ..errors import PitError


class PreparingPool(Protocol):
    """What checking a call needs of the pool: its state, its tools, its limits."""

    failure: PitError | None
    max_call_bytes: int

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> PoolConfig: ...
    @property
    def state(self) -> str: ...
    def knows_tools(self) -> bool: ...
    def tool_spec(self, name: str) -> dict[str, Any] | None: ...
    def tools(self) -> list[dict[str, Any]]: ...
    def correlation_id(self) -> str: ...

log = logger("pool")
MIB = 1024 * 1024


def prepare_call(pool: PreparingPool, tool: str, args: Mapping[str, Any] | None,
                 session_id: str | None, metadata: Mapping[str, str] | None,
                 big: dict[str, Any] | None = None) -> Any:
    """Check and encode a call; the request to dispatch. Raises the error that names what
    was wrong (pool not running, unknown tool, bad arguments, too large).
    With a ``big`` dict, large bytes arguments are left out of the request and put there
    (`dispatch` sends them through shared memory where the worker can map it)."""
    if pool.state != "running":
        if pool.failure is not None:
            lines = [ln for ln in pool.failure.message.splitlines() if ln.strip()]
            last = f" ({lines[-1].strip()})" if len(lines) > 1 else ""
            raise PoolNotReady(
                f"pool {pool.name!r} failed to start: {lines[0] if lines else ''}{last}",
                details={"pool": pool.name, "cause": pool.failure.category},
                hint=pool.failure.hint)
        if pool.state in ("closing", "closed"):
            raise ShutdownError(f"pool {pool.name!r} is closed")
        raise PoolNotReady(f"pool {pool.name!r} is not started", hint="call start() first")
    if pool.knows_tools() and pool.tool_spec(tool) is None:
        names = sorted(t["name"] for t in pool.tools())
        raise ToolNotFound(f"pool {pool.name!r} has no tool {tool!r}; available tools: "
                           f"{', '.join(names)}",
                           details={"tool": tool, "pool": pool.name})
    if args is not None and type(args) is not dict and not isinstance(args, Mapping):
        raise TypeError(f"args must be a mapping of parameter names to values, "
                        f"got {type(args).__name__}")
    if log.isEnabledFor(logging.DEBUG):
        log.debug("pool %r: call %s(%s)%s", pool.name, tool, redact(args or {}),
                  f" session {session_id}" if session_id else "")
    req = pb.ExecuteToolRequest(tool_name=tool, session_id=session_id or "")
    try:
        codec.encode_params(req, args, big=big, threshold=pool.config.shm_threshold_kb * 1024,
                            device_copy=pool.config.allow_device_copy)
    except codec.CodecError as exc:
        raise InvalidArgument(f"tool {tool!r}: {exc}") from None
    if metadata:
        req.metadata.update(metadata)
    if "correlation_id" not in req.metadata:
        req.metadata["correlation_id"] = pool.correlation_id()
    if "numpy" in sys.modules:  # array results of 10 KB or more may come back raw
        req.metadata[arrays.WANTED] = str(arrays.RAW_MIN_BYTES)
    size = req.ByteSize() + (sum(codec.raw_size(v) for v in big.values()) if big else 0)
    if size > pool.max_call_bytes:
        raise InvalidArgument(
            f"call to {tool!r} is {size / MIB:.1f} MiB, over the pool's limit of "
            f"{pool.config.max_message_mb} MiB (max_message_mb)",
            details={"tool": tool, "bytes": size},
            hint="raise max_message_mb, or pass a path or a handle instead of the data")
    tracing.start_call(req, pool.name)  # last: a call refused above has no span
    return req
