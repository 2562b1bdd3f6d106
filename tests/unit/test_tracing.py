"""OpenTelemetry pieces without processes: the host span of a prepared request, the wire form
of a worker span (encode in the worker, rebuild on the host), the gRPC headers a traced call
carries to Snakepit-style workers, and ``[telemetry] otel``."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import Status, StatusCode  # noqa: E402

from runtime.config import load_config  # noqa: E402
from runtime.errors import ConfigError, PoolSaturated  # noqa: E402
from runtime.pool.worker_channel import CORRELATION_HEADER, call_headers  # noqa: E402
from runtime.protocol import pb  # noqa: E402
from runtime.telemetry import tracing  # noqa: E402
from runtime.worker import tracing as worker_tracing  # noqa: E402
from tests.otel_support import set_global_provider  # noqa: E402

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "the app"}))
    provider.add_span_processor(SimpleSpanProcessor(exp))
    set_global_provider(provider)
    yield exp
    set_global_provider(None)


def request(**metadata: str) -> pb.ExecuteToolRequest:
    req = pb.ExecuteToolRequest(tool_name="ping")
    req.metadata.update({"correlation_id": "c-1", **metadata})
    return req


def test_off_a_request_is_left_exactly_as_it_was() -> None:
    set_global_provider(None)
    assert tracing.tracer() is None
    req = request()
    before = req.SerializeToString(deterministic=True)
    tracing.start_call(req, "p")
    assert req.SerializeToString(deterministic=True) == before
    tracing.finish(req, None)  # nothing open: nothing happens


def test_on_the_host_span_is_open_until_the_call_ends(exporter: InMemorySpanExporter) -> None:
    req = request()
    tracing.start_call(req, "p")
    assert req.metadata["traceparent"].startswith("00-")
    tracing.dispatched(req, "worker-3", 1.5)
    assert exporter.get_finished_spans() == ()
    tracing.finish(req, PoolSaturated("full"))
    tracing.finish(req, None)  # a second end of the same call is ignored
    [span] = exporter.get_finished_spans()
    assert span.name == "pit.call ping" and span.parent is None
    assert f"{span.context.span_id:016x}" in req.metadata["traceparent"]
    assert dict(span.attributes) == {
        "pit.pool": "p", "pit.tool": "ping", "pit.correlation_id": "c-1",
        "pit.worker": "worker-3", "pit.queue_ms": 1.5, "pit.outcome": "error",
        "pit.error_category": "pool_saturated"}
    assert span.status.status_code is StatusCode.ERROR


def test_a_worker_span_comes_back_as_it_was(exporter: InMemorySpanExporter) -> None:
    """Encoded as the worker's span processor sends it, rebuilt as the host exports it."""
    provider = TracerProvider()
    made = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(made))
    parent = trace.set_span_in_context(trace.NonRecordingSpan(trace.SpanContext(
        0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331, is_remote=True,
        trace_flags=trace.TraceFlags(1))))
    with provider.get_tracer("adapter", "1.2").start_as_current_span(
            "inner", context=parent, kind=trace.SpanKind.SERVER,
            attributes={"n": 3, "tags": ("a", "b"), "ok": True}) as span:
        span.add_event("loaded", {"rows": 10})
        span.set_status(Status(StatusCode.ERROR, "bad"))
    [original] = made.get_finished_spans()
    data = worker_tracing.encode(original)
    tracing.received({"span": orjson.dumps(data).decode()}, "p", "worker-1")
    [back] = exporter.get_finished_spans()
    assert back.context == original.context and back.parent == original.parent
    assert (back.name, back.kind, back.start_time, back.end_time) == \
        (original.name, original.kind, original.start_time, original.end_time)
    assert dict(back.attributes) == {**original.attributes, "pit.pool": "p",
                                     "pit.worker": "worker-1"}
    assert [(e.name, dict(e.attributes), e.timestamp) for e in back.events] == \
        [(e.name, dict(e.attributes), e.timestamp) for e in original.events]
    assert (back.status.status_code, back.status.description) == (StatusCode.ERROR, "bad")
    assert (back.instrumentation_scope.name, back.instrumentation_scope.version) == \
        ("adapter", "1.2")
    assert back.resource.attributes["service.name"] == "the app"  # the host's resource


def test_a_malformed_worker_span_is_dropped(exporter: InMemorySpanExporter,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="pit.telemetry"):
        tracing.received({"span": '{"name": "x"}'}, "p", "w")
        tracing.received({}, "p", "w")
    assert exporter.get_finished_spans() == ()
    assert "worker span dropped" in caplog.text


def test_trace_context_goes_as_grpc_headers_only_on_a_traced_call() -> None:
    assert call_headers(request()) == ((CORRELATION_HEADER, "c-1"),)
    assert call_headers(request(traceparent=TP, tracestate="k=v")) == (
        (CORRELATION_HEADER, "c-1"), ("traceparent", TP), ("tracestate", "k=v"))


def test_otel_in_the_config_is_true_or_false(tmp_path: Path) -> None:
    path = tmp_path / "pit.toml"
    assert load_config(cwd=tmp_path).telemetry.otel is False
    path.write_text("[telemetry]\notel = true\n")
    assert load_config(path).telemetry.otel is True
    path.write_text('[telemetry]\notel = "yes"\n')
    with pytest.raises(ConfigError, match=r"\[telemetry\] otel must be true or false"):
        load_config(path)


def test_setup_from_env_keeps_the_applications_provider(
        exporter: InMemorySpanExporter) -> None:
    mine = trace.get_tracer_provider()
    assert tracing.setup_from_env() is True
    assert trace.get_tracer_provider() is mine


def test_setup_from_env_without_the_exporter_says_what_to_install(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    set_global_provider(None)
    monkeypatch.setitem(sys.modules,
                        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with caplog.at_level(logging.WARNING, logger="pit.telemetry"):
        assert tracing.setup_from_env() is False
    assert "pip install 'pit-pools[otel]'" in caplog.text
    assert tracing.tracer() is None


def test_without_opentelemetry_imported_nothing_is_traced(
        exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    """As when it is not installed: pit never imports it itself to find out."""
    monkeypatch.delitem(sys.modules, "opentelemetry.trace")
    assert tracing.tracer() is None
    req = request()
    tracing.start_call(req, "p")
    assert "traceparent" not in req.metadata


def test_a_call_its_caller_cancels_ends_its_span_as_cancelled(
        exporter: InMemorySpanExporter) -> None:
    req = request()
    tracing.start_call(req, "p")
    tracing.finish(req, None, cancelled=True)
    [span] = exporter.get_finished_spans()
    assert span.attributes["pit.outcome"] == "cancelled"
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize(("protocol", "module"), [
    (None, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
    ("grpc", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
    ("http/protobuf", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
])
def test_setup_from_env_exports_with_the_otlp_exporter_the_env_names(
        monkeypatch: pytest.MonkeyPatch, protocol: str | None, module: str) -> None:
    """The OTLP exporter (not a test dependency) stood in for by an in-memory one."""
    set_global_provider(None)
    exported = InMemorySpanExporter()
    fake = types.ModuleType(module)
    fake.OTLPSpanExporter = lambda: exported  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module, fake)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    if protocol is None:
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    else:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    try:
        assert tracing.setup_from_env() is True
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        shutdown = provider.shutdown
        req = request()
        tracing.start_call(req, "p")
        tracing.finish(req, None)
        provider.force_flush()
        assert [s.name for s in exported.get_finished_spans()] == ["pit.call ping"]
        shutdown()
    finally:
        set_global_provider(None)


def test_a_tracing_failure_never_fails_the_call(exporter: InMemorySpanExporter,
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a broken propagator")

    monkeypatch.setattr("opentelemetry.propagate.inject", broken)
    req = request()
    with caplog.at_level(logging.WARNING, logger="pit.telemetry"):
        tracing.start_call(req, "p")
        tracing.start_call(request(), "p")
    assert "traceparent" not in req.metadata
    assert caplog.text.count("opening a call's span failed") == 1  # said once
