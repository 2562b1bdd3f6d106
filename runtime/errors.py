"""One exception hierarchy for everything pit raises.

Every error is a `PitError` with a `.category` (a stable string scripts can match on), a
`.details` dict, and a `.hint` (what to do about it; a traceback shows it as a note). A tool's
exception inside a worker arrives as a `RemoteError` with `.remote_type` and
`.remote_traceback` holding the worker's text, of a class named after the remote one
(`remote_class`): a builtin type's class is also that builtin, so ``except KeyError:`` catches
a tool's KeyError. The worker's traceback is the error's ``__cause__`` (a `RemoteTraceback`),
as concurrent.futures shows a process's, and `.ml` holds what `ml_errors.parse` read from the
message (shape, dtype, device, out of memory) or None.
"""

from __future__ import annotations

import builtins
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ml_errors import MLError


class PitError(Exception):
    """Base of every error pit raises: ``.category``, ``.details``, ``.hint`` (what to do;
    shown under a traceback as an exception note, or in ``str()`` on Python 3.10)."""

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
        # A traceback then says what to do, not only what failed.
        if hint and sys.version_info >= (3, 11):
            self.add_note(f"hint: {hint}")

    def __str__(self) -> str:
        if self.hint and sys.version_info < (3, 11):  # no notes: the hint joins the text
            return f"{self.message}\nhint: {self.hint}"
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
    """A tool raised. ``.remote_type`` names its class, ``.remote_traceback`` is the worker's
    text, ``.ml`` what the message says of an ML failure (`ml_errors`), or None."""

    category = "remote_error"
    ml: MLError | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "ml": self.ml.to_dict() if self.ml else None}

    def __reduce__(self) -> tuple[Any, ...]:
        # A class made by `remote_class` lives in no module pickle can import: it is made
        # again by name on the other side (concurrent.futures and asyncio copy errors).
        name = type(self).__dict__.get("_remote_name")
        if name is None:
            return (type(self), (self.message,), dict(self.__dict__))
        return (_remade, (name, self.message), dict(self.__dict__))

    def __setstate__(self, state: dict[str, Any] | None) -> None:
        self.__dict__.update(state or {})
        if self.remote_traceback and self.__cause__ is None:  # a cause is not pickled
            self.__cause__ = RemoteTraceback(self.remote_traceback)


class RemoteTraceback(Exception):
    """The worker's traceback text, shown as a `RemoteError`'s cause when the host prints the
    error (``The above exception was the direct cause of ...``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


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


# A remote class is never a BaseException-only builtin (KeyboardInterrupt, SystemExit,
# GeneratorExit: a tool's SystemExit must not escape the host's ``except Exception``), nor a
# StopIteration: raised inside a generator (pool.stream) it turns into RuntimeError, and a
# future refuses it. Those get a plain named RemoteError subclass.
_NEVER_MIXED = frozenset({"StopIteration", "StopAsyncIteration"})
_MAX_CLASSES = 1024  # names come from workers and bridges: past this, classes are not kept
_classes: dict[str, type[RemoteError]] = {}  # per-process cache: remote type name -> class


def _named(name: str, bases: tuple[type, ...]) -> type[RemoteError]:
    cls: type[RemoteError] = type(name, bases, {
        "__module__": __name__, "__qualname__": name, "_remote_name": name,
        "__doc__": f"A tool's {name}, raised in a worker (see RemoteError)."})
    return cls


def _mixed(name: str, builtin: type[Exception]) -> type[RemoteError] | None:
    """RemoteError and ``builtin`` in one class, or None where they do not combine (a layout
    conflict, a constructor that wants other arguments, a str that fails)."""
    try:
        cls = _named(name, (RemoteError, builtin))
        probe = cls("probe", remote_type=name, details={})
        if str(probe) != "probe" or probe.args != ("probe",):
            return None
    except Exception:  # noqa: BLE001 - any failure means: not this base
        return None
    return cls


def _make(remote_type: str) -> type[RemoteError]:
    module, _, name = remote_type.rpartition(".")
    if not name.isidentifier() or len(name) > 200:
        return RemoteError
    found = getattr(builtins, name, None) if module in ("", "builtins") else None
    if (isinstance(found, type) and issubclass(found, Exception)
            and name not in _NEVER_MIXED):
        # The builtin itself, else its nearest base that combines (UnicodeDecodeError's
        # constructor wants five arguments: its class is a UnicodeError, so a ValueError).
        for base in found.__mro__:
            if base is Exception or not issubclass(base, Exception):
                break
            cls = _mixed(name, base)
            if cls is not None:
                return cls
    return _named(name, (RemoteError,))


def remote_class(remote_type: str) -> type[RemoteError]:
    """The class of a tool's exception named ``remote_type``, made once per name: for a builtin
    Exception type both a RemoteError and that builtin (or its nearest base that combines),
    for any other name a RemoteError subclass of that name. Never a BaseException-only class."""
    cls = _classes.get(remote_type)
    if cls is None:
        cls = _make(remote_type)
        if len(_classes) < _MAX_CLASSES:
            cls = _classes.setdefault(remote_type, cls)  # two threads: both get the first
    return cls


def _remade(remote_type: str, message: str) -> RemoteError:
    return remote_class(remote_type)(message)


def from_payload(payload: dict[str, Any], tool: str, details: dict[str, Any]) -> PitError:
    """The PitError a worker's error payload (`codec.error_payload`) stands for: a pit
    category's class, or for a tool's exception the class `remote_class` names, with the
    worker's traceback as its cause and `.ml` parsed from its message."""
    cls = error_class(payload.get("category", "remote_error"))
    rtype = str(payload.get("type") or "Error")
    message = str(payload.get("message", ""))
    tb = payload.get("traceback")
    hint = str(payload["hint"]) if payload.get("hint") else None  # a host's errors carry one
    if cls.category != "remote_error":
        return cls(message, remote_type=rtype, remote_traceback=tb, details=details, hint=hint)
    err = remote_class(rtype)(f"tool {tool!r} raised {rtype}: {message}", remote_type=rtype,
                              remote_traceback=tb, details=details, hint=hint)
    from .ml_errors import parse  # its 29 patterns compile on the first tool error, not at import

    err.ml = parse(rtype, message)
    if tb:
        err.__cause__ = RemoteTraceback(tb)
    return err
