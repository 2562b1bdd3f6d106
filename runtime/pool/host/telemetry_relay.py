"""Host side of worker telemetry: one ``StreamTelemetry`` stream per ready worker, whose events
are re-emitted on the host bus as ``adapter.<name>`` with pool, worker and correlation id.
Spans the worker finished (`SPAN_EVENT`) go to the host's tracer provider instead."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from ... import telemetry
from ...protocol import RUNTIME_EVENTS, SPAN_EVENT
from ...telemetry import tracing


def _value(v: Any) -> float | int | str:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else 0


async def relay(stub: Any, pool: str, worker: str) -> None:
    """Until the stream ends (the worker stops) or the task is cancelled."""
    call = stub.StreamTelemetry()  # no request iterator: controls would go by call.write()
    try:
        async for ev in call:
            parts = list(ev.event_parts)
            name = ".".join(parts)
            if name == SPAN_EVENT:  # a worker's span, for the host's tracer provider
                tracing.received(ev.metadata, pool, worker)
                continue
            if name not in RUNTIME_EVENTS:  # the worker runtime's own keep their names
                name = f"adapter.{name}"
            metadata = {**ev.metadata, "pool": pool, "worker": worker}
            if ev.correlation_id:
                metadata["correlation_id"] = ev.correlation_id
            telemetry.emit(name, {k: _value(v) for k, v in ev.measurements.items()}, metadata,
                           ev.timestamp_ns or None)
    except (grpc.RpcError, asyncio.CancelledError):
        pass
    finally:
        call.cancel()
