"""pit: pools of isolated, long-lived Python worker processes over gRPC.

Host side:   Pool, AsyncPool, Pools, PoolExecutor, current_pools(), execute(), errors (PitError ...)
Worker side: Adapter, tool, SessionContext, current_context, Pickled
Results:     is_unserializable(value) tells a marker of a value the worker could not encode

Names resolve lazily, so a worker importing `runtime.worker` pulls in nothing host-side.
"""

from __future__ import annotations

import os

from . import lazy
from .version import __version__

# gRPC's C core writes INFO lines to stderr (a GOAWAY seen as a worker shuts down, fork
# notices) unless told otherwise before it loads; pit reports what matters through its own
# loggers. An explicit GRPC_VERBOSITY wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

TYPE_CHECKING = False  # not typing's: typing (with the re and enum it imports) was ~90 % of
# `import runtime` (~12 of 13 ms past the interpreter's start here); type checkers read this name
if TYPE_CHECKING:  # what type checkers see (`X as X`: re-exported); at run time the names
    # resolve lazily, below
    from .config import (
        PoolConfig as PoolConfig,
    )
    from .config import (
        load_config as load_config,
    )
    from .errors import (
        CallTimeout as CallTimeout,
    )
    from .errors import (
        CircuitOpen as CircuitOpen,
    )
    from .errors import (
        ConfigError as ConfigError,
    )
    from .errors import (
        EnvironmentProblem as EnvironmentProblem,
    )
    from .errors import (
        InvalidArgument as InvalidArgument,
    )
    from .errors import (
        PitError as PitError,
    )
    from .errors import (
        PoisonCall as PoisonCall,
    )
    from .errors import (
        PoolNotFound as PoolNotFound,
    )
    from .errors import (
        PoolNotReady as PoolNotReady,
    )
    from .errors import (
        PoolSaturated as PoolSaturated,
    )
    from .errors import (
        QueueTimeout as QueueTimeout,
    )
    from .errors import (
        RemoteError as RemoteError,
    )
    from .errors import (
        ResultError as ResultError,
    )
    from .errors import (
        ResultTooLarge as ResultTooLarge,
    )
    from .errors import (
        SessionQuota as SessionQuota,
    )
    from .errors import (
        SessionUnavailable as SessionUnavailable,
    )
    from .errors import (
        SessionWorkerUnavailable as SessionWorkerUnavailable,
    )
    from .errors import (
        ShutdownError as ShutdownError,
    )
    from .errors import (
        ToolNotFound as ToolNotFound,
    )
    from .errors import (
        WorkerBusy as WorkerBusy,
    )
    from .errors import (
        WorkerExit as WorkerExit,
    )
    from .errors import (
        WorkerHung as WorkerHung,
    )
    from .errors import (
        WorkerStartError as WorkerStartError,
    )
    from .pool.async_pool import (
        AsyncPool as AsyncPool,
    )
    from .pool.current import (
        current_pools as current_pools,
    )
    from .pool.current import (
        execute as execute,
    )
    from .pool.current import (
        stream as stream,
    )
    from .pool.executor import (
        InitializerFailed as InitializerFailed,
    )
    from .pool.executor import (
        PoolExecutor as PoolExecutor,
    )
    from .pool.executor import (
        WorkerCrashed as WorkerCrashed,
    )
    from .pool.session_handle import (
        AsyncSession as AsyncSession,
    )
    from .pool.session_handle import (
        SessionHandle as SessionHandle,
    )
    from .pool.stats import (
        PoolStats as PoolStats,
    )
    from .pool.stats import (
        WorkerStats as WorkerStats,
    )
    from .pool.stream_run import (
        StreamSummary as StreamSummary,
    )
    from .pool.sync_pool import (
        Pool as Pool,
    )
    from .pool.sync_pool import (
        Pools as Pools,
    )
    from .protocol.codec import (
        Pickled as Pickled,
    )
    from .protocol.graceful import (
        is_unserializable as is_unserializable,
    )
    from .telemetry.control import (
        TelemetryControl as TelemetryControl,
    )
    from .worker.adapter import (
        Adapter as Adapter,
    )
    from .worker.adapter import (
        tool as tool,
    )
    from .worker.context import (
        SessionContext as SessionContext,
    )
    from .worker.context import (
        current_context as current_context,
    )

_EXPORTS = {
    "Pool": "runtime.pool.api",  # starts the fork server first
    "Pools": "runtime.pool.api",  # starts the fork server first
    "PoolExecutor": "runtime.pool.executor",
    "WorkerCrashed": "runtime.pool.executor",
    "InitializerFailed": "runtime.pool.executor",
    "AsyncPool": "runtime.pool.api",  # starts the fork server first
    "AsyncSession": "runtime.pool.session_handle",
    "SessionHandle": "runtime.pool.session_handle",
    "PoolStats": "runtime.pool.stats",
    "WorkerStats": "runtime.pool.stats",
    "StreamSummary": "runtime.pool.stream_run",
    "TelemetryControl": "runtime.telemetry.control",
    "current_pools": "runtime.pool.api",  # starts the fork server first
    "execute": "runtime.pool.api",  # starts the fork server first
    "stream": "runtime.pool.api",  # starts the fork server first
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

__all__ = ["__version__", *sorted(_EXPORTS)]


__getattr__, __dir__ = lazy.exports(__name__, _EXPORTS, globals())
