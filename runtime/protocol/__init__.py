"""Wire protocol: generated stubs (snakepit.bridge) and the codec that is the only user of them."""

from . import snakepit_bridge_pb2 as pb
from . import snakepit_bridge_pb2_grpc as pb_grpc

PROTOCOL_VERSION = "snakepit.bridge/0.13+pit.1"
# Telemetry events of the worker runtime, not of adapter code: the host relays them under these
# names (the others become adapter.<name>), so adapter code may not emit them.
RESULT_UNSERIALIZABLE = "worker.result.unserializable"
# A span the worker finished, for the host's tracer provider (runtime.telemetry.tracing):
# metadata "span" holds it as JSON. Never on the host's event bus.
SPAN_EVENT = "otel.span"
RUNTIME_EVENTS = frozenset({"telemetry.dropped", RESULT_UNSERIALIZABLE, SPAN_EVENT})
# pit's worker answers the TelemetryControl messages it applied with this event (measurement
# ``count``: controls applied so far); the host's relay consumes it and never re-emits it.
CONTROL_APPLIED = "telemetry.control_applied"

# W3C trace context of a call, in its request metadata (host and worker spans)
TRACEPARENT = "traceparent"


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """The gRPC options of a channel to a worker (the host's, and a Ray actor's forwarder)."""
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # A fixed flow-control window: with BDP probing it grew with the timing and let a
            # stream's producer run 12k-24k small chunks ahead of a slow consumer (500
            # without; no cost measured on streams or 16 MiB calls).
            ("grpc.http2.bdp_probe", 0)]


__all__ = ["pb", "pb_grpc", "PROTOCOL_VERSION", "RESULT_UNSERIALIZABLE", "RUNTIME_EVENTS",
           "CONTROL_APPLIED", "SPAN_EVENT", "TRACEPARENT", "channel_options"]
