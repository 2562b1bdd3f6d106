"""Every event the host emits, with its measurements and metadata (the documented contract).

Events from adapter code (`runtime.worker.telemetry`) arrive as ``adapter.<name>`` and are not
listed here: their measurements are the adapter's own. Every event carries ``pool`` in its
metadata; worker events also ``worker``.
"""

from __future__ import annotations

from typing import NamedTuple


class EventSpec(NamedTuple):
    description: str
    measurements: tuple[str, ...]
    metadata: tuple[str, ...]


CATALOG: dict[str, EventSpec] = {
    "pool.started": EventSpec("all of a pool's workers are ready",
                              ("duration_ms", "size"), ("pool",)),
    "pool.stopped": EventSpec("a pool was closed", ("uptime_s",), ("pool",)),
    "pool.call.dispatched": EventSpec(
        "a call was handed to a worker", ("queue_ms",),
        ("pool", "worker", "tool", "correlation_id")),
    "pool.call.completed": EventSpec(
        "a call finished (successfully or not)", ("duration_ms",),
        ("pool", "tool", "correlation_id", "status", "error_category")),
    "pool.call.tool_error": EventSpec(
        "a call ended with its tool's exception (with pool.call.completed; not streams or "
        "map items); ml_category is the ML failure its message names (shape_mismatch, "
        "dtype_mismatch, device_mismatch, out_of_memory; '' and mapped 0 when none)",
        ("mapped",), ("pool", "tool", "remote_type", "ml_category")),
    "pool.call.poisoned": EventSpec(
        "a call (tool and arguments) has now cost poison_after workers: it is refused from "
        "now on (PoisonCall) until the pool restarts", ("crashes",), ("pool", "tool")),
    "pool.circuit.opened": EventSpec(
        "the crash barrier's circuit opened: more than circuit_threshold crashes within "
        "circuit_window_s (from closed), or its half-open trial failed (from half_open); new "
        "calls fail fast with CircuitOpen", ("failures",), ("pool", "causes", "from")),
    "pool.circuit.half_open": EventSpec(
        "circuit_reset_s after it opened, the circuit lets one trial call through",
        ("open_s",), ("pool",)),
    "pool.circuit.closed": EventSpec(
        "the circuit closed: its trial call succeeded (reason trial_succeeded) or "
        "pool.reset_circuit() closed it (reason manual)", ("open_s",), ("pool", "reason")),
    "pool.stream.started": EventSpec(
        "a stream got its worker and started (or, refused before that, ended)", ("queue_ms",),
        ("pool", "worker", "tool", "correlation_id")),
    "pool.stream.completed": EventSpec(
        "a stream ended: outcome ok (every chunk read), error (it failed) or cancelled (the "
        "caller stopped reading); chunks and bytes are what the host received for the caller, "
        "items it never read after an early close included",
        ("chunks", "bytes", "duration_ms"),
        ("pool", "worker", "tool", "correlation_id", "outcome", "error_category")),
    "pool.saturated": EventSpec(
        "the queue started to hold calls: every worker was busy", ("queued", "capacity"),
        ("pool",)),
    "pool.drained": EventSpec("the queue became empty again after a saturation",
                              ("saturated_ms",), ("pool",)),
    "worker.started": EventSpec("a worker process was spawned", (),
                                ("pool", "worker", "pid")),
    "worker.ready": EventSpec("a worker answered and serves calls", ("startup_ms",),
                              ("pool", "worker", "pid")),
    "worker.recycled": EventSpec(
        "a worker is being replaced (reason: ttl, requests, memory, manual)",
        ("requests", "rss_mb", "uptime_s"), ("pool", "worker", "pid", "reason")),
    "worker.crashed": EventSpec(
        "a worker process died (cause: oom, segfault, killed, exit, gpu, ...)",
        ("exit_code", "uptime_s"), ("pool", "worker", "pid", "cause", "reason")),
    "worker.hung": EventSpec("a worker missed its heartbeats and is being killed",
                             ("missed",), ("pool", "worker", "pid")),
    "worker.exited": EventSpec("a worker process ended (any reason, clean stops included)",
                               ("exit_code", "uptime_s"), ("pool", "worker", "pid")),
    "session.created": EventSpec("a session was opened", (), ("pool", "session_id")),
    "session.closed": EventSpec("a session was closed by its owner", ("age_s",),
                                ("pool", "session_id")),
    "session.expired": EventSpec("a session passed its ttl unused and was dropped", ("age_s",),
                                 ("pool", "session_id")),
    "worker.result.unserializable": EventSpec(
        "results of a tool held values of this type that JSON cannot hold and no hook could "
        "convert: sent as markers (runtime.is_unserializable); counted in the worker and "
        "sent within 0.5 s, count since the last event", ("count",),
        ("pool", "worker", "tool", "type")),
    "telemetry.dropped": EventSpec(
        "a worker's telemetry buffer was full and dropped events", ("dropped",),
        ("pool", "worker")),
}
