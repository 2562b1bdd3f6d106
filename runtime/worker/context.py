"""The per-call context a tool can reach: session, metadata, deadline, host tools.

A tool receives it through a parameter named ``ctx`` or by calling `current_context()`.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..protocol import codec, pb, pb_grpc

current_call: contextvars.ContextVar[SessionContext | None] = contextvars.ContextVar(
    "pit_context", default=None)

HOST_CALL_DEFAULT_TIMEOUT_S = 60.0


class HostToolError(RuntimeError):
    """A host tool failed or could not be reached; ``.payload`` holds the host's error."""

    def __init__(self, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.payload = payload or {}


class HostClient:
    """The worker's channel to the host's BridgeService (created on first use)."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._stub: Any = None
        self._lock = threading.Lock()

    def stub(self) -> Any:
        """The BridgeService stub on the host's channel (made on first use)."""
        if not self.address:
            raise HostToolError("this worker was started without --host-address; "
                                "host tools are unavailable")
        with self._lock:
            if self._stub is None:
                import grpc

                channel = grpc.insecure_channel(self.address)
                self._stub = pb_grpc.BridgeServiceStub(channel)
            return self._stub

    def call(self, name: str, args: dict[str, Any], *, session_id: str,
             correlation_id: str, timeout: float | None) -> Any:
        import grpc

        req = pb.ExecuteElixirToolRequest(session_id=session_id, tool_name=name)
        codec.encode_params(req, args)
        if correlation_id:
            req.metadata["correlation_id"] = correlation_id
        md = (("x-snakepit-correlation-id", correlation_id),) if correlation_id else None
        try:
            resp = self.stub().ExecuteElixirTool(
                req, timeout=timeout or HOST_CALL_DEFAULT_TIMEOUT_S, metadata=md)
        except grpc.RpcError as exc:
            raise HostToolError(f"host tool {name!r} could not be called: "
                                f"{exc.code().name}: {exc.details()}") from None
        if not resp.success:
            payload = codec.decode_error(resp.error_message)
            raise HostToolError(f"host tool {name!r} failed: {payload.get('message', '')}",
                                payload)
        return codec.decode_result(resp)

    def execute(self, name: str, args: Mapping[str, Any] | None, *, pool: str | None,
                session_id: str, correlation_id: str, timeout: float | None) -> Any:
        """Call any tool through the host's ExecuteTool: a host tool, or a pool's tool
        (``pool``: which pool; None: the host's routing rules)."""
        import grpc

        req = pb.ExecuteToolRequest(session_id=session_id, tool_name=name)
        try:
            codec.encode_params(req, args)
        except codec.CodecError as exc:
            raise HostToolError(f"tool {name!r}: {exc}") from None
        if pool:
            req.metadata["pool"] = pool
        if correlation_id:
            req.metadata["correlation_id"] = correlation_id
        if "opentelemetry.trace" in sys.modules:  # a traced call: the nested one is its child
            from opentelemetry.propagate import inject

            inject(req.metadata)  # the current span's traceparent (none: nothing)
        where = f"tool {name!r} of pool {pool!r}" if pool else f"tool {name!r}"
        try:
            resp = self.stub().ExecuteTool(req, timeout=timeout or HOST_CALL_DEFAULT_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise HostToolError(f"{where} could not be called through the host: "
                                f"{exc.code().name}: {exc.details()}") from None
        if not resp.success:
            payload = codec.decode_error(resp.error_message)
            raise HostToolError(f"{where} failed: {payload.get('type', 'Error')}: "
                                f"{payload.get('message', '')}", payload)
        return codec.decode_result(resp)

    def tools(self, *, session_id: str, timeout: float | None) -> dict[str, dict[str, Any]]:
        """The host's tools by name: ``name``, ``description``, ``streaming``,
        ``session_id`` ("" for a tool every session sees) and ``parameters`` (name ->
        ``type``, ``required``, ``description``, and ``default`` when it has one)."""
        import grpc

        req = pb.GetExposedElixirToolsRequest(session_id=session_id)
        try:
            resp = self.stub().GetExposedElixirTools(
                req, timeout=timeout or HOST_CALL_DEFAULT_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise HostToolError(f"host tools could not be listed: {exc.code().name}: "
                                f"{exc.details()}") from None
        return {t.name: {"name": t.name, "description": t.description,
                         "streaming": t.supports_streaming,
                         "session_id": t.metadata.get("session_id", ""),
                         "parameters": {p.name: _param(p) for p in t.parameters}}
                for t in resp.tools}


def _param(p: Any) -> dict[str, Any]:
    out = {"type": p.type, "required": p.required, "description": p.description}
    if p.default_value.value:  # JSON, as parameters travel
        try:
            out["default"] = codec.loads(p.default_value.value, f"default of {p.name!r}")
        except codec.CodecError:
            pass  # a peer's default that is not JSON: left out, as if unannounced
    return out


_EVENT_LOCK = threading.Lock()


class SessionContext:
    """What a running tool knows about its call."""

    __slots__ = ("session_id", "metadata", "correlation_id", "deadline", "_cancelled",
                 "tool_name", "_sessions", "_host")

    def __init__(self, *, session_id: str, metadata: dict[str, str], tool_name: str,
                 deadline: float | None, sessions: dict[str, dict[str, Any]],
                 host: HostClient) -> None:
        self.session_id = session_id
        self.metadata = metadata
        self.correlation_id = metadata.get("correlation_id", "")
        self.tool_name = tool_name
        self.deadline = deadline  # time.monotonic() value, or None for no deadline
        self._cancelled: threading.Event | None = None  # made when first asked for
        self._sessions = sessions
        self._host = host

    @property
    def cancelled(self) -> threading.Event:
        """Set when the call is cancelled or its deadline passed on the host."""
        event = self._cancelled
        if event is None:  # most calls never look: an Event per call cost ~2.5 µs
            with _EVENT_LOCK:
                if self._cancelled is None:
                    self._cancelled = threading.Event()
                event = self._cancelled
        return event

    def remaining(self) -> float | None:
        """Seconds left in the call's budget (None: no deadline)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    @property
    def session(self) -> dict[str, Any]:
        """State kept in this worker for the call's session (empty id: a per-worker dict)."""
        return self._sessions.setdefault(self.session_id, {})

    def call_host_tool(self, name: str, **kwargs: Any) -> Any:
        """Call a tool the host registered (`pool.register_host_tool`) and return its result."""
        return self._host.call(name, kwargs, session_id=self.session_id,
                               correlation_id=self.correlation_id, timeout=self.remaining())

    def call_tool(self, name: str, args: Mapping[str, Any] | None = None, *,
                  pool: str | None = None) -> Any:
        """Call any tool through the host (its ExecuteTool) and return its result: the tool
        ``name`` of ``pool`` (another pool of the host, or this one: it needs a free worker
        then), or with no pool a host tool of that name, else the host's default pool. Runs
        in this call's session, within what is left of its deadline. Raises HostToolError
        (``.payload``: the error's type, message and traceback)."""
        return self._host.execute(name, args, pool=pool, session_id=self.session_id,
                                  correlation_id=self.correlation_id, timeout=self.remaining())

    @property
    def host_tools(self) -> dict[str, dict[str, Any]]:
        """The tools the host registered, by name, with their descriptions and parameters
        (asks the host each time; raises HostToolError when it cannot be reached)."""
        return self._host.tools(session_id=self.session_id, timeout=self.remaining())


def current_context() -> SessionContext:
    """The context of the call running in this thread or task."""
    ctx = current_call.get()
    if ctx is None:
        raise RuntimeError("current_context() is only available inside a tool call")
    return ctx
