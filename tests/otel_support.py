"""Test support for OpenTelemetry (import only where ``opentelemetry`` is importable)."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.util._once import Once


def set_global_provider(provider: Any | None) -> None:
    """The API lets a process set its global tracer provider once; tests set and clear it
    (None: back to the API's default proxy, as in a program that never set one)."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    if provider is not None:
        trace.set_tracer_provider(provider)
