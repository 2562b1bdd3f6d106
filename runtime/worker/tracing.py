"""OpenTelemetry in the worker: the ``pit.tool <tool>`` span of a traced call, and the spans
tools open, sent back to the host (see `runtime.telemetry.tracing` for the whole picture).

A call is traced when its request metadata carries a W3C ``traceparent`` (the host adds one
only while it traces). The first such call sets up tracing here, if the OpenTelemetry SDK is
importable in the worker's environment: a ``TracerProvider`` (unless adapter code set an SDK
one already) with a span processor that puts each finished span (`forward`) in the worker's
telemetry buffer as a `SPAN_EVENT` for the host to export. Nothing to configure in a worker,
and no exporter runs here. The tool runs with its span current, so spans adapter code opens
with the OpenTelemetry API (``trace.get_tracer(__name__).start_as_current_span(...)``) nest
under it. Without the SDK in the worker, or for calls without ``traceparent``, nothing here
runs beyond one metadata lookup.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import orjson

from ..protocol import SPAN_EVENT, TRACEPARENT, codec
from .context import current_call
from .telemetry import buffer

SCOPE = "pit.worker"

_setup_lock = threading.Lock()
_state: dict[str, Any] = {}  # per-process cache: "tracer" (None: no SDK here)


def forward(span: Any) -> None:
    """Put a finished span in the telemetry buffer for the host (dropped, and counted, when
    the buffer is full). The `_setup` provider's span processor calls it."""
    if not span.context.trace_flags.sampled:
        return
    ctx = current_call.get()
    # no wake-up per span: spans ride along with the next take (within 0.5 s)
    buffer.put((SPAN_EVENT, {}, {"span": orjson.dumps(encode(span)).decode()},
                time.time_ns(), ctx.correlation_id if ctx is not None else ""), wake=False)


def encode(span: Any) -> dict[str, Any]:
    """A finished SDK span as the JSON-able dict `runtime.telemetry.tracing.rebuild` reads."""
    ctx = span.context
    parent = span.parent
    scope = span.instrumentation_scope
    status = span.status
    return {
        "name": span.name, "trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}",
        "parent": f"{parent.span_id:016x}" if parent is not None else None,
        "parent_remote": bool(parent is not None and parent.is_remote),
        "flags": int(ctx.trace_flags), "state": list(ctx.trace_state.items()),
        "kind": span.kind.name, "start": span.start_time, "end": span.end_time,
        "attributes": _plain(span.attributes),
        "events": [[e.name, e.timestamp, _plain(e.attributes)] for e in span.events],
        "links": [[f"{lk.context.trace_id:032x}", f"{lk.context.span_id:016x}",
                   _plain(lk.attributes)] for lk in span.links],
        "status": [status.status_code.name, status.description],
        "scope": [scope.name, scope.version] if scope is not None else None,
    }


def _plain(attributes: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (attributes or {}).items()}


def _tracer() -> Any | None:
    """The worker's tracer, set up on the first traced call; None without the SDK."""
    if "tracer" in _state:
        return _state["tracer"]
    with _setup_lock:
        if "tracer" not in _state:
            _state["tracer"] = _setup()
    return _state["tracer"]


def _setup() -> Any | None:
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    except ImportError:
        return None

    class Forwarder(SpanProcessor):
        """Sends each span that ends to the host, which exports it."""

        def on_end(self, span: Any) -> None:
            forward(span)

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()  # whoever won, if adapter code raced us
        if not isinstance(provider, TracerProvider):
            return None
    provider.add_span_processor(Forwarder())
    from ..version import __version__

    return provider.get_tracer(SCOPE, __version__)


class ToolSpan:
    """The worker span of one traced call, current while it is open (one thread)."""

    __slots__ = ("span", "_token")

    def __init__(self, span: Any, token: Any) -> None:
        self.span = span
        self._token = token

    def end(self, error_message: str | None = None,
            attributes: dict[str, Any] | None = None) -> None:
        """End the span (and make the caller's context current again): ok, or failed with
        the call's error payload (JSON text)."""
        try:
            self._end(error_message, attributes)
        except Exception as exc:  # noqa: BLE001 - tracing never fails a call
            _broken(exc)

    def _end(self, error_message: str | None, attributes: dict[str, Any] | None) -> None:
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        if attributes:
            self.span.set_attributes(attributes)
        if error_message is None:
            self.span.set_attribute("pit.outcome", "ok")
        else:
            payload = codec.decode_error(error_message)
            category = str(payload.get("category") or "remote_error")
            self.span.set_attributes({"pit.outcome": "error", "pit.error_category": category,
                                      "pit.error_type": str(payload.get("type", ""))})
            self.span.set_status(Status(StatusCode.ERROR,
                                        f"{category}: {payload.get('message', '')}"[:500]))
        self.span.end()
        context.detach(self._token)


def begin(req: Any, **attributes: Any) -> ToolSpan | None:
    """The span of a call that carries ``traceparent``, made current; None otherwise (and
    when the worker has no OpenTelemetry SDK)."""
    if TRACEPARENT not in req.metadata:
        return None
    try:
        return _begin(req, attributes)
    except Exception as exc:  # noqa: BLE001 - tracing never fails a call
        _broken(exc)
        return None


def _broken(exc: Exception) -> None:
    sys.stderr.write(f"pit worker: tracing failed, the call goes on untraced: {exc!r}\n")


def _begin(req: Any, attributes: dict[str, Any]) -> ToolSpan | None:
    tracer = _tracer()
    if tracer is None:
        return None
    from opentelemetry import context, trace
    from opentelemetry.propagate import extract

    parent = extract(dict(req.metadata))
    span = tracer.start_span(f"pit.tool {req.tool_name}", context=parent,
                             kind=trace.SpanKind.SERVER,
                             attributes={"pit.tool": req.tool_name, **attributes})
    return ToolSpan(span, context.attach(trace.set_span_in_context(span, parent)))

