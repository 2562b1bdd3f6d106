"""OpenTelemetry traces of a pool's calls, on the host (optional: pit runs without OTel).

    caller's span (a web request's, ...)
      pit.call <tool>   host, kind CLIENT: started where the call is prepared (the caller's
        |               thread, so the caller's current span is its parent), ended when the
        |               call is answered; pool, tool, worker, queue wait, outcome, category
        +-- pit.tool <tool>   worker, kind SERVER: parented by the W3C ``traceparent`` the
              |               call carries in its request metadata (`runtime.worker.tracing`)
              +-- spans the tool opens with the OpenTelemetry API

Tracing is on when ``opentelemetry`` is imported and a tracer provider other than the API's
default proxy is set (by the application, or by ``[telemetry] otel = true``, which sets one up
from the standard ``OTEL_*`` environment with the OTLP exporter: `setup_from_env`). Otherwise
nothing is imported, nothing is added to a call and each call pays a few dict lookups (a
fraction of a microsecond, whether OTel is absent or imported with no provider set). A
caller's own ``traceparent`` in ``metadata=`` is the parent when it has one (a call relayed
from another process).

Workers export nothing themselves: their finished spans come back over the worker's
telemetry stream as `SPAN_EVENT` events, and `received` rebuilds each one (ids, parent, times,
attributes, events, status) and hands it to the host provider's span processors, so one
exporter (the application's) sees the whole trace. That needs the SDK's ``TracerProvider``
in the host (any provider built on it); spans of another kind of provider are dropped.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from typing import Any

import orjson

from ..logs import logger
from ..protocol import SPAN_EVENT, TRACEPARENT, codec

__all__ = ["SPAN_EVENT", "TRACEPARENT", "dispatched", "finish", "received", "setup_from_env",
           "start_call", "streaming", "tracer"]

log = logger("telemetry")

TRACE_MODULE = "opentelemetry.trace"
MAX_OPEN_SPANS = 100_000  # calls whose span is open; past it the oldest are forgotten
SCOPE = "pit"
UNKNOWN = object()
# OTel makes the provider this names on the first get_tracer_provider() (an API rule)
ENV_PROVIDER = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ

# Per-process cache: the provider last seen and its tracer (a provider changes only in tests).
_cache: list[Any] = [None, None]
# The open host spans of calls under way, by the traceparent each call carries.
_open: dict[str, Any] = {}
_failures: set[str] = set()  # kinds of tracing failure already logged (once each)


def tracer() -> Any | None:
    """The tracer of pit's host spans, or None when tracing is off (cheap: see the module)."""
    trace = sys.modules.get(TRACE_MODULE)
    if trace is None:
        return None
    # The global provider as set_tracer_provider left it (None until then): reading it costs
    # a tenth of get_tracer_provider(), which looks the environment up while none is set.
    provider: Any = getattr(trace, "_TRACER_PROVIDER", UNKNOWN)
    if provider is None and not ENV_PROVIDER:
        return None
    if provider is None or provider is UNKNOWN:
        provider = trace.get_tracer_provider()
    if provider is _cache[0]:
        return _cache[1]
    found = None
    if not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        from ..version import __version__

        found = provider.get_tracer(SCOPE, __version__)
    _cache[:] = [provider, found]
    return found


def start_call(req: Any, pool: str) -> None:
    """Open the host span of a prepared call and put its ``traceparent`` in the call's
    metadata (on the caller's thread: its current span is the parent). Does nothing when
    tracing is off, so the request is then exactly as without OTel."""
    t = tracer()
    if t is None:
        return
    try:
        _open_span(t, req, pool)
    except Exception as exc:  # noqa: BLE001 - tracing never fails a call
        _failed("opening a call's span", exc)


def _open_span(t: Any, req: Any, pool: str) -> None:
    from opentelemetry import trace
    from opentelemetry.propagate import extract, inject

    md = req.metadata
    parent = extract(dict(md)) if TRACEPARENT in md else None
    attributes: dict[str, Any] = {"pit.pool": pool, "pit.tool": req.tool_name,
                                  "pit.correlation_id": md.get("correlation_id", "")}
    if md.get(codec.MAP_FLAG):
        attributes["pit.map"] = True
    if req.session_id:
        attributes["pit.session_id"] = req.session_id
    span = t.start_span(f"pit.call {req.tool_name}", context=parent,
                        kind=trace.SpanKind.CLIENT, attributes=attributes)
    carrier: dict[str, str] = {}
    inject(carrier, context=trace.set_span_in_context(span))
    md.update(carrier)
    key = carrier.get(TRACEPARENT)
    if key is None:  # a propagator without W3C trace context: nothing links the worker's
        span.end()
        return
    if len(_open) >= MAX_OPEN_SPANS:  # a path that never answered: do not grow forever
        with contextlib.suppress(RuntimeError, StopIteration):  # another thread's change
            _open.pop(next(iter(_open)), None)
    _open[key] = span


def streaming(req: Any) -> None:
    """Mark the open span of ``req`` as a stream's."""
    span = _open.get(req.metadata.get(TRACEPARENT, "")) if _open else None
    if span is not None:
        span.set_attribute("pit.stream", True)


def dispatched(req: Any, worker: str, queue_ms: float) -> None:
    """The call got ``worker`` after ``queue_ms`` in the queue (on the loop)."""
    span = _open.get(req.metadata.get(TRACEPARENT, "")) if _open else None
    if span is not None:
        span.set_attributes({"pit.worker": worker, "pit.queue_ms": queue_ms})


def finish(req: Any, err: BaseException | None, attributes: Mapping[str, Any] | None = None,
           cancelled: bool = False) -> None:
    """End the host span of ``req`` (once: later calls for the same call do nothing):
    outcome ok, error (``err``) or cancelled (by its caller)."""
    span = _open.pop(req.metadata.get(TRACEPARENT, ""), None) if _open else None
    if span is None:
        return
    try:
        _end_span(span, err, attributes, cancelled)
    except Exception as exc:  # noqa: BLE001 - tracing never fails a call
        _failed("ending a call's span", exc)


def _end_span(span: Any, err: BaseException | None, attributes: Mapping[str, Any] | None,
              cancelled: bool) -> None:
    from opentelemetry.trace import Status, StatusCode

    if attributes:
        span.set_attributes(attributes)
    if cancelled:
        span.set_attribute("pit.outcome", "cancelled")
    elif err is None:
        span.set_attribute("pit.outcome", "ok")
    else:
        category = getattr(err, "category", None) or type(err).__name__
        span.set_attributes({"pit.outcome": "error", "pit.error_category": category})
        span.set_status(Status(StatusCode.ERROR, f"{category}: {err}"[:500]))
    span.end()


def received(metadata: Mapping[str, str], pool: str, worker: str) -> None:
    """A span a worker finished (a `SPAN_EVENT`'s metadata): rebuilt and handed to the
    host provider's span processors, which export it as if the host had made it."""
    t = tracer()
    if t is None:
        return
    trace = sys.modules[TRACE_MODULE]
    provider = trace.get_tracer_provider()
    # The SDK has no public way to hand a finished span to a provider's processors.
    processor = getattr(provider, "_active_span_processor", None)
    if processor is None:
        log.debug("worker span dropped: the tracer provider is not the SDK's")
        return
    try:
        span = rebuild(orjson.loads(metadata["span"]), provider.resource, pool, worker)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        log.debug("worker span dropped: %s", exc)
        return
    try:
        processor.on_end(span)
    except Exception as exc:  # noqa: BLE001 - the relay goes on with the next event
        _failed("exporting a worker's span", exc)


def _failed(what: str, exc: Exception) -> None:
    """OpenTelemetry failed pit: the call goes on untraced; said once per kind of failure."""
    key = f"{what}: {type(exc).__name__}"
    if key not in _failures:
        _failures.add(key)
        log.warning("tracing: %s failed (%r); the call goes on, untraced", what, exc)


def rebuild(data: Mapping[str, Any], resource: Any, pool: str, worker: str) -> Any:
    """A ReadableSpan from a worker's `runtime.worker.tracing.encode` dict."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import (
        Link,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TraceFlags,
        TraceState,
    )

    trace_id = int(data["trace_id"], 16)
    flags = TraceFlags(data.get("flags", 1))
    state = TraceState(list(data.get("state", [])))

    def context(span_id: str, remote: bool) -> Any:
        return SpanContext(trace_id, int(span_id, 16), is_remote=remote, trace_flags=flags,
                           trace_state=state)

    parent = data.get("parent")
    scope = data.get("scope") or ["pit.worker", None]
    attributes = {**_attributes(data.get("attributes")), "pit.pool": pool,
                  "pit.worker": worker}
    status = data.get("status") or ["UNSET", None]
    return ReadableSpan(
        name=str(data["name"]), context=context(data["span_id"], False),
        parent=context(parent, bool(data.get("parent_remote"))) if parent else None,
        resource=resource, attributes=attributes,
        events=[Event(str(name), _attributes(attrs), int(ts))
                for name, ts, attrs in data.get("events", [])],
        links=[Link(SpanContext(int(tid, 16), int(sid, 16), is_remote=True),
                    _attributes(attrs)) for tid, sid, attrs in data.get("links", [])],
        kind=SpanKind[data.get("kind", "INTERNAL")],
        status=Status(StatusCode[status[0]], status[1]),
        start_time=int(data["start"]), end_time=int(data["end"]),
        instrumentation_scope=InstrumentationScope(scope[0], scope[1]))


def _attributes(values: Mapping[str, Any] | None) -> dict[str, Any]:
    # JSON turned tuples into lists; span attributes hold sequences as tuples
    return {str(k): tuple(v) if isinstance(v, list) else v for k, v in (values or {}).items()}


def setup_from_env() -> bool:
    """``[telemetry] otel = true``: set a tracer provider that exports with OTLP as the
    ``OTEL_*`` environment says (endpoint, headers, protocol, service name...), unless the
    application has set one already (then it is used as it is). False, with a warning that
    says what to install, when the packages are missing."""
    try:
        from opentelemetry import trace

        if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            return True  # the application's own provider wins
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if _otlp_protocol() == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore
                OTLPSpanExporter,
            )
    except ImportError as exc:
        log.warning("[telemetry] otel = true, but OpenTelemetry is not installed (%s): "
                    "pip install 'pit-pools[otel]'; calls are not traced", exc)
        return False
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def _otlp_protocol() -> str:
    """The OTLP protocol the standard environment asks for (grpc by default)."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if os.environ.get(name):
            return "grpc" if os.environ[name].strip() == "grpc" else "http"
    return "grpc"
