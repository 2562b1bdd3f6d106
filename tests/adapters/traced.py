"""An adapter whose tools open OpenTelemetry spans (imported by real workers in test_otel)."""

from __future__ import annotations

from collections.abc import Iterator

from opentelemetry import trace

from runtime.worker import Adapter, SessionContext, tool

tracer = trace.get_tracer(__name__)  # a proxy until the worker sets its provider up


class TracedAdapter(Adapter):
    @tool
    def traced_work(self, x: int = 1) -> int:
        with tracer.start_as_current_span("inner work") as span:
            span.set_attribute("x", x)
            return x * 2

    @tool
    def traced_stream(self, n: int) -> Iterator[int]:
        for i in range(n):
            with tracer.start_as_current_span("inner chunk"):
                pass
            yield i

    @tool
    def traced_fail(self) -> None:
        raise ValueError("the tool failed")

    @tool
    def metadata_keys(self, ctx: SessionContext) -> list[str]:
        return sorted(ctx.metadata)

    @tool
    def trace_header(self, ctx: SessionContext) -> str:
        """The traceparent the call carried, as the tool's own OTel context sees it."""
        span = trace.get_current_span().get_span_context()
        return f"{span.trace_id:032x}" if span.is_valid else ""

    @tool
    def traced_relay(self, ctx: SessionContext, x: int) -> int:
        """Call traced_work through the host, inside a span of its own."""
        with tracer.start_as_current_span("relaying"):
            return ctx.call_tool("traced_work", {"x": x}, pool="default")

    @tool
    async def traced_async(self, x: int) -> int:
        with tracer.start_as_current_span("inner async"):
            return x + 1

    @tool
    def traced_sleep(self, seconds: float) -> None:
        import time

        end = time.monotonic() + seconds
        while time.monotonic() < end:  # short sleeps: a cancel lands between them
            time.sleep(0.01)
