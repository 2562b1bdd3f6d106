"""OpenTelemetry across the process boundary, with real workers: the host's ``pit.call``
span, the worker's ``pit.tool`` span under it, the tool's own spans under that, all exported
by the host's provider (an in-memory exporter here), on every call path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode  # noqa: E402

from runtime import AsyncPool, Pool  # noqa: E402
from tests.conftest import wait_until  # noqa: E402
from tests.otel_support import set_global_provider  # noqa: E402

TRACED = "tests.adapters.traced:TracedAdapter"
# the call paths: a lent worker's socket (direct), the call lane, unary gRPC ExecuteTool
PATHS = {"direct": {}, "lane": {"direct_calls": False},
         "grpc": {"call_lane": False, "direct_calls": False}}


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    set_global_provider(provider)
    yield exporter
    set_global_provider(None)
    provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    """The one span of that name, once it has arrived (worker spans come over telemetry)."""
    assert wait_until(lambda: len(named(exporter, name)) >= 1), \
        f"no span {name!r}; got {[s.name for s in exporter.get_finished_spans()]}"
    [span] = named(exporter, name)
    return span


def assert_child(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.context.trace_id == parent.context.trace_id
    assert child.parent is not None and child.parent.span_id == parent.context.span_id


@pytest.mark.parametrize("path", list(PATHS))
def test_execute_host_span_worker_span_and_tool_span_nest(
        exported: InMemorySpanExporter, path: str) -> None:
    caller = trace.get_tracer("a web app")
    with Pool(adapter=TRACED, size=1, **PATHS[path]) as pool:
        worker_ids = {w.id for w in pool.stats().workers}
        with caller.start_as_current_span("GET /predict") as request:
            assert pool.execute("traced_work", {"x": 21}) == 42
        host = one(exported, "pit.call traced_work")
        worker = one(exported, "pit.tool traced_work")
        inner = one(exported, "inner work")
    assert_child(host, one(exported, "GET /predict"))
    assert host.context.trace_id == request.get_span_context().trace_id
    assert host.kind is trace.SpanKind.CLIENT and worker.kind is trace.SpanKind.SERVER
    assert_child(worker, host)
    assert_child(inner, worker)
    attrs = host.attributes
    assert attrs["pit.pool"] == "default" and attrs["pit.tool"] == "traced_work"
    assert attrs["pit.worker"] in worker_ids and attrs["pit.queue_ms"] >= 0
    assert attrs["pit.outcome"] == "ok" and "pit.error_category" not in attrs
    assert worker.attributes["pit.worker"] == attrs["pit.worker"]
    assert inner.attributes["x"] == 21
    assert host.start_time <= worker.start_time <= inner.start_time
    assert inner.end_time <= worker.end_time <= host.end_time


def test_a_stream_is_traced_like_a_call(exported: InMemorySpanExporter) -> None:
    with Pool(adapter=TRACED, size=1) as pool:
        with trace.get_tracer("app").start_as_current_span("job"):
            assert list(pool.stream("traced_stream", {"n": 3})) == [0, 1, 2]
        host = one(exported, "pit.call traced_stream")
        worker = one(exported, "pit.tool traced_stream")
        assert wait_until(lambda: len(named(exported, "inner chunk")) == 3)
    assert_child(host, one(exported, "job"))
    assert_child(worker, host)
    for inner in named(exported, "inner chunk"):
        assert_child(inner, worker)
    assert host.attributes["pit.stream"] is True and host.attributes["pit.chunks"] == 3
    assert host.attributes["pit.outcome"] == "ok" and worker.attributes["pit.chunks"] == 3


def test_an_async_pool_call_nests_under_the_callers_span(
        exported: InMemorySpanExporter) -> None:
    async def main() -> None:
        async with AsyncPool(adapter=TRACED, size=1) as pool:
            with trace.get_tracer("app").start_as_current_span("handler"):
                assert await pool.execute("traced_work") == 2
            await asyncio.to_thread(one, exported, "inner work")

    asyncio.run(main())
    host = one(exported, "pit.call traced_work")
    assert_child(host, one(exported, "handler"))
    assert_child(one(exported, "pit.tool traced_work"), host)


def test_a_failed_call_marks_both_spans(exported: InMemorySpanExporter) -> None:
    with Pool(adapter=TRACED, size=1) as pool:
        with pytest.raises(Exception, match="the tool failed"):
            pool.execute("traced_fail")
        host = one(exported, "pit.call traced_fail")
        worker = one(exported, "pit.tool traced_fail")
    assert host.status.status_code is StatusCode.ERROR
    assert host.attributes["pit.outcome"] == "error"
    assert host.attributes["pit.error_category"] == "remote_error"
    assert worker.status.status_code is StatusCode.ERROR
    assert worker.attributes["pit.error_type"] == "ValueError"
    assert_child(worker, host)


def test_map_chunks_are_traced(exported: InMemorySpanExporter) -> None:
    with Pool(adapter=TRACED, size=1) as pool:
        assert list(pool.map("traced_work", ({"x": i} for i in range(4)), chunksize=2)) \
            == [0, 2, 4, 6]
        assert wait_until(lambda: len(named(exported, "pit.tool traced_work")) == 2)
    hosts = named(exported, "pit.call traced_work")
    assert len(hosts) == 2 and all(h.attributes["pit.map"] is True for h in hosts)
    by_id = {h.context.span_id: h for h in hosts}
    for worker in named(exported, "pit.tool traced_work"):
        assert worker.parent is not None and worker.parent.span_id in by_id
    assert wait_until(lambda: len(named(exported, "inner work")) == 4)


def test_a_callers_traceparent_in_metadata_is_the_parent(
        exported: InMemorySpanExporter) -> None:
    theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with Pool(adapter=TRACED, size=1) as pool:
        assert pool.execute("trace_header", metadata={"traceparent": theirs}) == \
            "0af7651916cd43dd8448eb211c80319c"
        host = one(exported, "pit.call trace_header")
    assert host.context.trace_id == 0x0af7651916cd43dd8448eb211c80319c
    assert host.parent is not None and host.parent.span_id == 0xb7ad6b7169203331


def test_without_a_provider_no_trace_context_travels() -> None:
    set_global_provider(None)
    with Pool(adapter=TRACED, size=1) as pool:
        untraced = pool.execute("metadata_keys")
        assert pool.execute("trace_header") == ""
        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        set_global_provider(provider)
        try:
            traced = pool.execute("metadata_keys")  # the same pool, now traced
            one(exporter, "pit.tool metadata_keys")
        finally:
            set_global_provider(None)
        after = pool.execute("metadata_keys")  # and off again
    assert "traceparent" not in untraced and "traceparent" not in after
    assert untraced == after
    assert set(traced) - set(untraced) == {"traceparent"}
    assert len(named(exporter, "pit.call metadata_keys")) == 1



def test_an_async_tools_spans_nest_under_its_worker_span(
        exported: InMemorySpanExporter) -> None:
    with Pool(adapter=TRACED, size=1) as pool:
        assert pool.execute("traced_async", {"x": 1}) == 2
        worker = one(exported, "pit.tool traced_async")
        inner = one(exported, "inner async")
    assert_child(inner, worker)
    assert_child(worker, one(exported, "pit.call traced_async"))


def test_a_tool_calling_another_tool_through_the_host_continues_the_trace(
        exported: InMemorySpanExporter) -> None:
    with Pool(adapter=TRACED, size=2) as pool:
        assert pool.execute("traced_relay", {"x": 5}) == 10
        outer_worker = one(exported, "pit.tool traced_relay")
        inner_host = one(exported, "pit.call traced_work")
        inner_worker = one(exported, "pit.tool traced_work")
        one(exported, "inner work")
    assert_child(outer_worker, one(exported, "pit.call traced_relay"))
    relaying = one(exported, "relaying")
    assert_child(relaying, outer_worker)
    assert_child(inner_host, relaying)
    assert_child(inner_worker, inner_host)
    assert_child(one(exported, "inner work"), inner_worker)


def test_a_call_its_caller_gives_up_on_ends_its_span_as_cancelled(
        exported: InMemorySpanExporter) -> None:
    async def main() -> None:
        async with AsyncPool(adapter=TRACED, size=1) as pool:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(pool.execute("traced_sleep", {"seconds": 30}), 0.3)
            await asyncio.to_thread(one, exported, "pit.tool traced_sleep")

    asyncio.run(main())
    host = one(exported, "pit.call traced_sleep")
    assert host.attributes["pit.outcome"] == "cancelled"
    worker = one(exported, "pit.tool traced_sleep")
    assert_child(worker, host)
    assert worker.attributes["pit.error_category"] == "timeout"  # cancelled in the worker


def test_snakepit_bridge_calls_get_host_spans(exported: InMemorySpanExporter) -> None:
    """The bridge gets the traceparent as gRPC headers; its own spans are its to export
    (README: Snakepit's own bridge as workers)."""
    from tests import bridge

    python, why = bridge.bridge_python()
    if python is None:
        pytest.skip(why)
    with Pool(worker="snakepit", command=bridge.command(python), adapter=bridge.SHOWCASE,
              size=1) as pool:
        with trace.get_tracer("app").start_as_current_span("job"):
            assert pool.execute("add", {"a": 1, "b": 2}) == 3
            assert [c["index"] for c in pool.stream("stream_data", {"count": 2})] == [1, 2]
        worker_id = pool.stats().workers[0].id
    job = one(exported, "job")
    for name in ("pit.call add", "pit.call stream_data"):
        host = one(exported, name)
        assert_child(host, job)
        assert host.attributes["pit.worker"] == worker_id
        assert host.attributes["pit.outcome"] == "ok"


def test_a_stream_closed_early_ends_its_span_as_cancelled(
        exported: InMemorySpanExporter) -> None:
    with Pool(adapter=TRACED, size=1) as pool:
        stream = pool.stream("traced_stream", {"n": 100_000})
        assert next(stream) == 0
        stream.close()
        host = one(exported, "pit.call traced_stream")
        worker = one(exported, "pit.tool traced_stream")
    assert host.attributes["pit.outcome"] == "cancelled"
    assert host.status.status_code is StatusCode.UNSET
    assert_child(worker, host)


def test_a_stream_closed_or_dropped_before_it_ran_ends_its_span(
        exported: InMemorySpanExporter) -> None:
    """Its generator never started, so the end that runs in its finally never ran: the span
    stayed among the open ones for ever, never exported."""
    async def dropped_async(pool: AsyncPool) -> None:
        stream = pool.stream("traced_stream", {"n": 3})
        await stream.aclose()

    with Pool(adapter=TRACED, size=1) as pool:
        pool.stream("traced_stream", {"n": 3}).close()
        pool.stream("traced_stream", {"n": 3})  # dropped at once
        assert wait_until(lambda: len(named(exported, "pit.call traced_stream")) == 2)
    asyncio.run(_with_async_pool(dropped_async))
    spans = named(exported, "pit.call traced_stream")
    assert [s.attributes["pit.outcome"] for s in spans] == ["cancelled"] * 3


async def _with_async_pool(body):  # noqa: ANN001, ANN202
    async with AsyncPool(adapter=TRACED, size=1) as pool:
        await body(pool)


def test_calls_cancelled_before_they_reached_the_pool_end_their_spans(
        exported: InMemorySpanExporter) -> None:
    """A future cancelled before the pool's loop took it (as map does with chunks it no
    longer wants) used to leave its span open, never exported."""
    with Pool(adapter=TRACED, size=1) as pool:
        futures = [pool.submit("traced_work", {"x": i}) for i in range(200)]
        cancelled = sum(f.cancel() for f in futures)
        for f in futures:
            if not f.cancelled():
                f.result(30)
        assert wait_until(lambda: len(named(exported, "pit.call traced_work")) == 200), \
            f"{len(named(exported, 'pit.call traced_work'))} of 200 spans ended"
    outcomes = [s.attributes["pit.outcome"] for s in named(exported, "pit.call traced_work")]
    assert outcomes.count("cancelled") == cancelled
    assert outcomes.count("ok") == 200 - cancelled
