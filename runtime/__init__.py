"""pit: pools of isolated, long-lived Python worker processes over gRPC.

Host side:   Pool, AsyncPool, Pools, PoolExecutor, current_pools(), execute(), errors (PitError ...)
Worker side: Adapter, tool, SessionContext, current_context, Pickled
Results:     is_unserializable(value) tells a marker of a value the worker could not encode

Names resolve lazily, so a worker importing `runtime.worker` pulls in nothing host-side.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# gRPC's C core writes INFO lines to stderr (a GOAWAY seen as a worker shuts down, fork
# notices) unless told otherwise before it loads; pit reports what matters through its own
# loggers. An explicit GRPC_VERBOSITY wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

_EXPORTS = {
    "Pool": "runtime.pool.sync_pool",
    "Pools": "runtime.pool.sync_pool",
    "PoolExecutor": "runtime.pool.executor",
    "WorkerCrashed": "runtime.pool.executor",
    "InitializerFailed": "runtime.pool.executor",
    "AsyncPool": "runtime.pool.async_pool",
    "AsyncSession": "runtime.pool.session_handle",
    "SessionHandle": "runtime.pool.session_handle",
    "PoolStats": "runtime.pool.stats",
    "WorkerStats": "runtime.pool.stats",
    "StreamSummary": "runtime.pool.stream_run",
    "TelemetryControl": "runtime.telemetry.control",
    "current_pools": "runtime.pool.current",
    "execute": "runtime.pool.current",
    "stream": "runtime.pool.current",
    "Adapter": "runtime.worker.adapter",
    "tool": "runtime.worker.adapter",
    "SessionContext": "runtime.worker.context",
    "current_context": "runtime.worker.context",
    "Pickled": "runtime.protocol.codec",
    "is_unserializable": "runtime.protocol.graceful",
    "PoolConfig": "runtime.config",
    "load_config": "runtime.config",
    "PitError": "runtime.errors",
    "RemoteError": "runtime.errors",
    "ResultError": "runtime.errors",
    "ResultTooLarge": "runtime.errors",
    "CallTimeout": "runtime.errors",
    "QueueTimeout": "runtime.errors",
    "PoolSaturated": "runtime.errors",
    "WorkerExit": "runtime.errors",
    "WorkerHung": "runtime.errors",
    "PoisonCall": "runtime.errors",
    "CircuitOpen": "runtime.errors",
    "WorkerBusy": "runtime.errors",
    "SessionQuota": "runtime.errors",
    "SessionWorkerUnavailable": "runtime.errors",
    "SessionUnavailable": "runtime.errors",
    "WorkerStartError": "runtime.errors",
    "ToolNotFound": "runtime.errors",
    "InvalidArgument": "runtime.errors",
    "ConfigError": "runtime.errors",
    "ShutdownError": "runtime.errors",
    "EnvironmentProblem": "runtime.errors",
    "PoolNotFound": "runtime.errors",
    "PoolNotReady": "runtime.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
