"""The same bad input gives the same exception class whichever way the call travels: a blocking
call on a lent worker, the loop's socket lane, the gRPC lane, one unary RPC per call; and
whichever API sent it: execute, submit, stream, a map item. A tool's exception is the class
`errors.remote_class` makes for its type (a RemoteError and a ValueError), on every path with
the worker's traceback as its printed cause."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import pytest

import runtime
from runtime import Pool
from runtime.errors import remote_class
from tests.conftest import wait_until

TRANSPORTS = {
    "direct": {},
    "socket lane": {"direct_calls": False},
    "grpc lane": {"lane_socket": False},
    "unary": {"call_lane": False},
}
CASES = [  # name, tool, args, timeout, expected
    ("unknown tool", "nope", {}, None, runtime.ToolNotFound),
    ("bad argument", "add", {"a": "x", "b": 2}, None, runtime.InvalidArgument),
    ("tool raises", "fail", {}, None, remote_class("ValueError")),
    ("worker exits", "crash", {"code": 3}, None, runtime.WorkerExit),
    ("timeout", "sleep", {"ms": 5000}, 0.3, runtime.CallTimeout),
    ("oversized", "echo", {"value": "x" * (3 << 20)}, None, runtime.InvalidArgument),
]


def _apis(pool: Pool, tool: str, args: dict[str, Any],
          timeout: float | None) -> dict[str, Callable[[], Any]]:
    return {
        "execute": lambda: pool.execute(tool, args, timeout=timeout),
        "submit": lambda: pool.submit(tool, args, timeout=timeout).result(),
        "stream": lambda: list(pool.stream(tool, args, timeout=timeout)),
        "map": lambda: list(pool.map(tool, [args], timeout=timeout)),
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_path_gives_the_same_error_class(transport: str) -> None:
    got: dict[tuple[str, str], str] = {}
    wrong = []
    with Pool(size=1, max_message_mb=2, poison_after=100, circuit_threshold=100,
              **TRANSPORTS[transport]) as pool:
        for name, tool, args, timeout, expected in CASES:
            for api, call in _apis(pool, tool, args, timeout).items():
                assert wait_until(lambda: pool.stats().ready == 1, timeout=15)
                try:
                    call()
                    got[name, api] = "no error"
                except runtime.PitError as exc:
                    got[name, api] = type(exc).__name__
                    if type(exc) is not expected:
                        wrong.append(exc)
                    if name == "tool raises" and not getattr(exc, "remote_traceback", None):
                        wrong.append(f"{name} via {api}: no remote traceback at all")
                    if isinstance(exc, runtime.RemoteError) and exc.remote_traceback:
                        printed = "".join(traceback.format_exception(exc))
                        if "raise ValueError(message)" not in printed:
                            wrong.append(f"{name} via {api}: no remote traceback")
                if got[name, api] != expected.__name__:
                    wrong.append(f"{name} via {api}: {got[name, api]}")
    assert not wrong, wrong
    assert issubclass(remote_class("ValueError"), runtime.RemoteError)
    assert issubclass(remote_class("ValueError"), ValueError)
