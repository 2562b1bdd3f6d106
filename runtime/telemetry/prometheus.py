"""Prometheus exporter (``[telemetry] prometheus_port = 9464``): pool and worker metrics on
``http://127.0.0.1:<port>/metrics``, read from the same snapshots as `pit status`.

Only loopback: put a proxy in front to expose it further. The snapshot is taken on the host's
event loop (never while the loop mutates pool state); a scrape costs one snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from ..logs import logger

log = logger("telemetry")
SCRAPE_TIMEOUT_S = 2.0


def families(snapshot: dict[str, Any]) -> Iterator[Any]:
    """The metric families of one instance snapshot (`runtime.control.snapshot`)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def g(name: str, doc: str, labels: list[str]) -> Any:
        return GaugeMetricFamily(f"pit_{name}", doc, labels=labels)

    def c(name: str, doc: str, labels: list[str]) -> Any:
        return CounterMetricFamily(f"pit_{name}", doc, labels=labels)

    calls = c("pool_calls", "Calls finished (ok or failed)", ["pool"])
    failed = c("pool_calls_failed", "Calls that failed", ["pool"])
    errors = c("pool_errors", "Failed calls by error category", ["pool", "category"])
    streams = c("pool_streams", "Streams ended (ok, failed or closed early)", ["pool"])
    streams_started = c("pool_streams_started", "Streams called", ["pool"])
    streams_failed = c("pool_streams_failed", "Streams that failed", ["pool"])
    stream_chunks = c("pool_stream_chunks", "Stream items received for callers",
                      ["pool"])
    stream_bytes = c("pool_stream_bytes", "Encoded size of the stream items received",
                     ["pool"])
    circuit_open = g("pool_circuit_open", "1 while the crash barrier's circuit is open or "
                     "half-open, else 0", ["pool"])
    recycles = c("pool_recycles", "Workers replaced, by reason", ["pool", "reason"])
    queued = g("pool_queue_depth", "Calls waiting for a worker", ["pool"])
    max_queue = g("pool_queue_max", "Queue limit (max_queue)", ["pool"])
    in_flight = g("pool_in_flight", "Calls running in workers", ["pool"])
    capacity = g("pool_capacity", "Calls the ready workers can run at once", ["pool"])
    workers = g("pool_workers", "Worker processes by state", ["pool", "state"])
    sessions = g("pool_sessions", "Open sessions", ["pool"])
    rate = g("pool_calls_per_second", "Calls per second over the last 60 s", ["pool"])
    latency = g("pool_latency_seconds", "Call latency quantiles over the last 60 s",
                ["pool", "quantile"])
    rss = g("worker_rss_bytes", "Worker resident memory", ["pool", "worker", "pid"])
    uss = g("worker_uss_bytes", "Memory only the worker holds (sampled every few seconds)",
            ["pool", "worker", "pid"])
    cpu = g("worker_cpu_percent", "Worker CPU use since the previous sample",
            ["pool", "worker", "pid"])
    served = c("worker_requests", "Calls served by the worker", ["pool", "worker", "pid"])
    werrors = c("worker_errors", "Calls that failed in the worker", ["pool", "worker", "pid"])
    uptime = g("worker_uptime_seconds", "Seconds since the worker started",
               ["pool", "worker", "pid"])
    for p in snapshot["pools"]:
        name = p["name"]
        calls.add_metric([name], p["calls"])
        failed.add_metric([name], p["failed"])
        counts = p.get("streams") or {}
        for family, key in ((streams, "completed"), (streams_started, "started"),
                            (streams_failed, "failed"), (stream_chunks, "chunks"),
                            (stream_bytes, "bytes")):
            family.add_metric([name], counts.get(key, 0))
        circuit_open.add_metric([name], int(p.get("circuit", "closed") != "closed"))
        for category, n in p["errors"].items():
            errors.add_metric([name, category], n)
        for reason, n in p["recycles"].items():
            recycles.add_metric([name, reason], n)
        queued.add_metric([name], p["queued"])
        max_queue.add_metric([name], p["max_queue"])
        in_flight.add_metric([name], p["in_flight"])
        capacity.add_metric([name], p["capacity"])
        sessions.add_metric([name], p["sessions"])
        rate.add_metric([name], p["calls_per_s"])
        for q, key in (("0.5", "p50_ms"), ("0.95", "p95_ms"), ("0.99", "p99_ms")):
            if p[key] is not None:
                latency.add_metric([name, q], p[key] / 1000)
        states: dict[str, int] = {}
        for w in p["workers"]:
            states[w["state"]] = states.get(w["state"], 0) + 1
            labels = [name, w["id"], str(w["pid"])]
            rss.add_metric(labels, (w["rss_mb"] or 0) * 1024 * 1024)
            uss.add_metric(labels, (w.get("uss_mb") or 0) * 1024 * 1024)
            cpu.add_metric(labels, w["cpu_pct"] or 0.0)
            served.add_metric(labels, w["requests"])
            werrors.add_metric(labels, w["errors"])
            uptime.add_metric(labels, w["uptime_s"])
        for state, n in states.items():
            workers.add_metric([name, state], n)
    yield from (calls, failed, errors, streams, streams_started, streams_failed,
                stream_chunks, stream_bytes, circuit_open, recycles, queued, max_queue,
                in_flight, capacity, workers, sessions, rate, latency, rss, uss, cpu, served,
                werrors, uptime)


class _Collector:
    def __init__(self, instance: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.instance = instance
        self.loop = loop

    def collect(self) -> Iterator[Any]:
        from ..control.snapshot import instance_snapshot

        async def take() -> dict[str, Any]:
            return instance_snapshot(self.instance, history=False)

        try:
            snap = asyncio.run_coroutine_threadsafe(take(), self.loop).result(SCRAPE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a failed scrape must not break the host
            log.warning("prometheus scrape: no snapshot: %s", exc)
            return
        yield from families(snap)


def start_exporter(instance: Any, port: int) -> Any:
    """Serve /metrics on 127.0.0.1:``port``; returns the server (``.shutdown()``) or None
    when the port cannot be bound (logged as an error: the pools run on without it)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(instance, asyncio.get_running_loop()))  # type: ignore[arg-type]
    try:
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        log.error("prometheus exporter: cannot listen on 127.0.0.1:%d (%s); "
                  "[telemetry] prometheus_port needs a free port", port, exc)
        return None
    log.info("prometheus exporter on http://127.0.0.1:%d/metrics", port)
    return server
