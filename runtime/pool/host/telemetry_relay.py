"""Host side of worker telemetry: one ``StreamTelemetry`` stream per ready worker, whose events
are re-emitted on the host bus as ``adapter.<name>`` with pool, worker and correlation id.

The same stream carries the pool's `TelemetryControl` to the worker (Snakepit's toggle,
sampling and filter messages, all three each time). pit's worker acknowledges what it applied
(`protocol.CONTROL_APPLIED`, after the events it sent before), so `TelemetryRelay.apply`
returns once the worker filters with it; other workers (Snakepit's bridge) are not waited for.
Spans the worker finished (`SPAN_EVENT`) go to the host's tracer provider instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from ... import telemetry
from ...logs import logger
from ...protocol import CONTROL_APPLIED, RUNTIME_EVENTS, SPAN_EVENT, pb
from ...telemetry import tracing
from ...telemetry.control import TelemetryControl

CONTROL_ACK_S = 5.0  # how long `apply` waits for the worker to acknowledge a control
ADAPTER_PREFIX = "adapter."

log = logger("telemetry")


def _value(v: Any) -> float | int | str:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else 0


def control_messages(control: TelemetryControl, *, host_names: bool) -> list[Any]:
    """The three TelemetryControl messages that set ``control`` in a worker. With
    ``host_names`` False (a worker that matches the names it emits, as Snakepit's bridge
    does), globs lose their ``adapter.`` prefix."""
    def names(globs: tuple[str, ...]) -> list[str]:
        if host_names:
            return list(globs)
        return [g[len(ADAPTER_PREFIX):] if g.startswith(ADAPTER_PREFIX) else g for g in globs]

    return [pb.TelemetryControl(toggle=pb.TelemetryToggle(enabled=control.enabled)),
            pb.TelemetryControl(sampling=pb.TelemetrySamplingUpdate(
                sampling_rate=control.sample)),
            pb.TelemetryControl(filter=pb.TelemetryEventFilter(
                allow=names(control.allow), deny=names(control.deny)))]


class TelemetryRelay:
    """One worker's telemetry stream: `run` relays its events, `apply` sends it a control.
    ``acks``: the worker acknowledges controls (pit's worker announces ``telemetry_control``)."""

    def __init__(self, stub: Any, pool: str, worker: str, *, acks: bool) -> None:
        self.pool, self.worker, self.acks = pool, worker, acks
        self._call = stub.StreamTelemetry()  # controls go by call.write()
        self._written = 0  # control messages written
        self._applied = 0  # ... that the worker acknowledged
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._write_lock = asyncio.Lock()
        self._ended = False

    async def apply(self, control: TelemetryControl, timeout: float = CONTROL_ACK_S) -> bool:
        """Send ``control``; True once the worker acknowledged it (False: it does not
        acknowledge, did not within ``timeout``, or its stream ended)."""
        messages = control_messages(control, host_names=self.acks)
        async with self._write_lock:
            try:
                for message in messages:
                    await self._call.write(message)
            except (grpc.RpcError, asyncio.InvalidStateError, RuntimeError):
                return False  # the stream ended (the worker stopped)
            self._written += len(messages)
            target = self._written
        if not self.acks or self._ended:
            return False
        if self._applied >= target:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            log.warning("pool %r: worker %s did not acknowledge its telemetry control within "
                        "%g s", self.pool, self.worker, timeout)
            return False
        finally:
            self._waiters = [(n, f) for n, f in self._waiters if f is not fut]
        return self._applied >= target

    def _acknowledged(self, count: int) -> None:
        self._applied = count
        for target, fut in self._waiters:
            if target <= count and not fut.done():
                fut.set_result(None)

    async def run(self) -> None:
        """Until the stream ends (the worker stops) or the task is cancelled."""
        call = self._call
        try:
            async for ev in call:
                parts = list(ev.event_parts)
                name = ".".join(parts)
                if name == CONTROL_APPLIED and self.acks:
                    self._acknowledged(int(_value(ev.measurements["count"])))
                    continue
                if name == SPAN_EVENT:  # a worker's span, for the host's tracer provider
                    tracing.received(ev.metadata, self.pool, self.worker)
                    continue
                if name not in RUNTIME_EVENTS:  # the worker runtime's own keep their names
                    name = ADAPTER_PREFIX + name
                metadata = {**ev.metadata, "pool": self.pool, "worker": self.worker}
                if ev.correlation_id:
                    metadata["correlation_id"] = ev.correlation_id
                telemetry.emit(name, {k: _value(v) for k, v in ev.measurements.items()},
                               metadata, ev.timestamp_ns or None)
        except (grpc.RpcError, asyncio.CancelledError):
            pass
        finally:
            self._ended = True
            for _, fut in self._waiters:  # nothing more will be acknowledged
                if not fut.done():
                    fut.set_result(None)
            with contextlib.suppress(Exception):
                call.cancel()
