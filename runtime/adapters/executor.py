"""The adapter behind `runtime.PoolExecutor`: it runs pickled callables.

This is the one place a pit worker unpickles what its host sends without the pool's
``allow_pickle``: a pool runs this adapter only when its owner built a `PoolExecutor`, whose
whole point is to ship callables, which can only travel pickled. Tasks and answers travel as
raw bytes (shared memory past the pool's ``shm_threshold_kb``), never through JSON.

    task    pickle((fn, args, kwargs))       -> answer  pickle(("ok", value))
    chunk   pickle((fn, [args, ...]))        -> answer  pickle(("chunk", [value, ...], error))
    an exception anywhere                    -> answer  pickle(("raise", exc, traceback text))

A chunk runs its items in order and stops at the first that raises: the values before it
come back with that error, so `PoolExecutor.map` raises at the item that failed. An
exception, or a value, that cannot be pickled comes back as the pickling error, so the host's
future always completes. Values pickle with `pickle` first and `cloudpickle` (when installed)
for what `pickle` refuses: instances of classes defined in a function or in ``__main__``.
"""

from __future__ import annotations

import pickle
import traceback
from pathlib import Path
from typing import Any

from runtime.worker import Adapter, tool

OK, CHUNK, RAISE = "ok", "chunk", "raise"


def dumps(value: Any) -> bytes:
    """``value`` pickled: by `pickle`, else by `cloudpickle` (for what pickle refuses)."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as refused:
        try:
            import cloudpickle
        except ImportError:  # the pickling error says what could not travel, not this one
            raise refused from None
        return bytes(cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def _raised(exc: BaseException) -> bytes:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        return dumps((RAISE, exc, text))
    except BaseException as failed:  # noqa: BLE001 - the exception itself cannot travel
        note = (f"{type(failed).__name__} while pickling the {type(exc).__name__} the "
                f"function raised: {failed}")
        return pickle.dumps((RAISE, RuntimeError(note), text))


class ExecutorAdapter(Adapter):
    """Runs ``fn(*args, **kwargs)`` for `runtime.PoolExecutor`."""

    def initialize(self, initializer: str | None = None) -> None:
        """``initializer``: a file holding pickle((fn, args)), run once in this worker before
        it reports ready; if it raises, the worker fails to start."""
        if initializer:
            fn, args = pickle.loads(Path(initializer).read_bytes())
            fn(*args)

    @tool
    def call(self, task: bytes) -> bytes:
        """Run one pickled ``(fn, args, kwargs)``; answer its pickled outcome."""
        try:
            fn, args, kwargs = pickle.loads(task)
            value = fn(*args, **kwargs)
            del fn, args, kwargs
            return dumps((OK, value))
        except BaseException as exc:  # noqa: BLE001 - the caller's future gets it
            return _raised(exc)

    @tool
    def call_chunk(self, task: bytes) -> bytes:
        """Run a pickled ``(fn, [args, ...])`` in order, stopping at the first error."""
        values: list[Any] = []
        try:
            fn, chunk = pickle.loads(task)
            for args in chunk:
                values.append(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed back after the values before it
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            try:
                return dumps((CHUNK, values, (exc, text)))
            except BaseException:  # noqa: BLE001 - a value or the error cannot travel
                return _raised(exc)
        try:
            return dumps((CHUNK, values, None))
        except BaseException as exc:  # noqa: BLE001 - a value cannot be pickled
            return _raised(exc)
