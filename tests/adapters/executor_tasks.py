"""Functions and objects `tests/integration/test_executor.py` sends to PoolExecutor workers
(importable there by name, as users' own modules are)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

INIT_STATUS = "uninitialized"


def init(status: str) -> None:
    global INIT_STATUS
    INIT_STATUS = status


def init_fails(message: str) -> None:
    raise ValueError(message)


def get_init_status() -> str:
    return INIT_STATUS


def pid_and_status() -> tuple[int, str]:
    return os.getpid(), INIT_STATUS


def mul(x: int, y: int) -> int:
    return x * y


def python_version() -> str:
    import sys

    return ".".join(map(str, sys.version_info[:2]))


def module_version(name: str) -> str:
    import importlib

    return str(importlib.import_module(name).__version__)


def pid() -> int:
    return os.getpid()


def wait_for(path: str, value: Any = None, limit_s: float = 60.0) -> Any:
    """Block until ``path`` exists (the test's gate), then return ``value``."""
    end = time.monotonic() + limit_s
    while not Path(path).exists():
        if time.monotonic() > end:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return value


def touch(path: str) -> str:
    Path(path).touch()
    return path


def exit_now(code: int) -> None:
    os._exit(code)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def sys_exit(code: int) -> None:
    raise SystemExit(code)


def return_lock() -> Any:
    return threading.Lock()  # neither pickle nor cloudpickle can send it


class CustomError(Exception):
    pass


def raise_custom(message: str) -> None:
    raise CustomError(message)


class UnpicklableError(Exception):
    def __init__(self, lock: Any) -> None:  # pickling keeps args: a lock cannot be pickled
        super().__init__(lock)


def raise_unpicklable() -> None:
    raise UnpicklableError(threading.Lock())



class NotAnErrorWhenUnpickled(Exception):
    """Pickles as something that is not an exception."""

    def __reduce__(self) -> Any:
        return str, ("a plain string",)


def raise_not_an_error_when_unpickled() -> None:
    raise NotAnErrorWhenUnpickled("x")

def _fail_loading(message: str) -> Any:
    raise RuntimeError(message)


class ErrorAtUnpickle:
    """Pickles fine, raises where it is unpickled."""

    def __reduce__(self) -> Any:
        return _fail_loading, ("error at unpickle",)


def return_error_at_unpickle() -> ErrorAtUnpickle:
    return ErrorAtUnpickle()


def arg_len(value: Any) -> int:
    return len(value)


def echo(value: Any) -> Any:
    return value


class Dummy:
    """Weak-referenceable, so a test can see when nothing holds it any more."""

    def __init__(self, n: int = 0) -> None:
        self.n = n


def make_dummy(n: int) -> Dummy:
    return Dummy(n)


class Owner:
    def method(self) -> int:
        return 1
