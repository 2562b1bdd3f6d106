"""One exception hierarchy for everything pit raises.

Every error is a `PitError` with a `.category` (a stable string scripts can match on), a
`.details` dict, and a `.hint` (what to do about it). A tool's exception inside a worker arrives
as `RemoteError` with `.remote_type` and `.remote_traceback` holding the worker's text.
"""

from __future__ import annotations

from typing import Any


class PitError(Exception):
    category = "error"

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        hint: str | None = None,
        remote_type: str | None = None,
        remote_traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})
        self.hint = hint
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "message": self.message,
            "details": self.details,
            "hint": self.hint,
            "remote_type": self.remote_type,
            "remote_traceback": self.remote_traceback,
        }


class ConfigError(PitError, ValueError):
    category = "config"


class CallTimeout(PitError, TimeoutError):
    category = "timeout"


class QueueTimeout(PitError, TimeoutError):
    category = "queue_timeout"


class PoolSaturated(PitError):
    category = "pool_saturated"


class WorkerBusy(PitError):
    category = "worker_busy"


class WorkerExit(PitError):
    category = "worker_exit"


class WorkerHung(WorkerExit):
    category = "worker_hung"


class PoisonCall(PitError):
    category = "poison_call"


class WorkerStartError(PitError):
    category = "worker_start"


class SessionUnavailable(PitError):
    category = "session_unavailable"


class SessionWorkerUnavailable(SessionUnavailable):
    """The worker holding a session's state crashed or was recycled (strict affinity)."""

    category = "session_worker_unavailable"


class SessionQuota(PitError):
    category = "session_quota"


class PoolNotFound(PitError, KeyError):
    category = "pool_not_found"


class PoolNotReady(PitError):
    category = "pool_not_ready"


class ToolNotFound(PitError):
    category = "tool_not_found"


class InvalidArgument(PitError, ValueError):
    category = "invalid_argument"


class RemoteError(PitError):
    category = "remote_error"


class ResultError(RemoteError):
    """The tool ran and returned, but its result cannot reach the caller: it is not JSON,
    bytes, a NumPy array or an allowed ``Pickled`` (the message names the tool and the type),
    or the host cannot read it."""

    category = "result_error"


class ResultTooLarge(ResultError):
    """A tool's result or stream chunk is over the pool's ``max_message_mb`` (the message
    names its size and the limit)."""

    category = "result_too_large"


class CircuitOpen(PitError):
    category = "circuit_open"


class ShutdownError(PitError):
    category = "shutdown"


class EnvironmentProblem(PitError):
    category = "environment"


_BY_CATEGORY: dict[str, type[PitError]] = {
    cls.category: cls
    for cls in (
        ConfigError, CallTimeout, QueueTimeout, PoolSaturated, WorkerBusy, WorkerExit, WorkerHung,
        PoisonCall,
        WorkerStartError, SessionUnavailable, SessionWorkerUnavailable, SessionQuota,
        PoolNotFound, PoolNotReady, ToolNotFound,
        InvalidArgument, RemoteError, ResultError, ResultTooLarge, CircuitOpen, ShutdownError,
        EnvironmentProblem,
    )
}


def error_class(category: str) -> type[PitError]:
    """The PitError subclass for a category name (RemoteError for unknown ones)."""
    return _BY_CATEGORY.get(category, RemoteError)


def from_payload(payload: dict[str, Any], tool: str, details: dict[str, Any]) -> PitError:
    """The PitError a worker's error payload (`codec.error_payload`) stands for."""
    cls = error_class(payload.get("category", "remote_error"))
    rtype = payload.get("type", "Error")
    message = payload.get("message", "")
    if cls.category == "remote_error":
        message = f"tool {tool!r} raised {rtype}: {message}"
    return cls(message, remote_type=rtype, remote_traceback=payload.get("traceback"),
               details=details)
