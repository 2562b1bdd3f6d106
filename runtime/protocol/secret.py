"""The per-pool secret a worker on a TCP port demands of every RPC (Ray-placed workers).

    host: SecretStub(stub, secret) --every RPC--> metadata x-pit-secret: <secret>
    worker: PIT_WORKER_SECRET (taken out of its environment at start) --> SecretCheck, the
            gRPC server's first interceptor: a missing or wrong secret is refused with
            UNAUTHENTICATED before any servicer code runs

The call lane over TCP (frames on a plain socket, beside gRPC) opens with `lane_hello`; the
worker reads it (`check_lane_hello`) before it reads a frame. A unix socket in a 0700 run dir
needs none of this; a TCP port on a cluster node can be
reached by anyone who can reach the node, so the host generates a secret per pool and hands it
to each worker when it creates it (through Ray, never on a command line). Compared in constant
time.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import Any

import grpc

HEADER = "x-pit-secret"
ENV = "PIT_WORKER_SECRET"  # how a worker is given its secret (removed from its environment)
REFUSED = ("wrong or missing pool secret (x-pit-secret): this worker serves only the pit "
           "host that created it")


def take_from_env(environ: dict[str, str] | None = None) -> str:
    """The worker's secret, removed from its environment so its tools' subprocesses do not
    inherit it ("" when it was given none)."""
    env = os.environ if environ is None else environ
    return env.pop(ENV, "")


HELLO = b"PITSECRET1"  # a lane connection over TCP starts with HELLO, 2-byte length, secret
HELLO_TIMEOUT_S = 5.0


def lane_hello(secret: str) -> bytes:
    """What the host writes first on a lane connection over TCP."""
    data = secret.encode()
    return HELLO + len(data).to_bytes(2, "big") + data


def check_lane_hello(conn: Any, secret: str) -> bool:
    """Read a lane connection's hello (blocking socket ``conn``, up to HELLO_TIMEOUT_S) and
    say whether it carries ``secret``."""
    want = lane_hello(secret)
    got = b""
    conn.settimeout(HELLO_TIMEOUT_S)
    try:
        while len(got) < len(HELLO) + 2:
            chunk = conn.recv(len(HELLO) + 2 - len(got))
            if not chunk:
                return False
            got += chunk
        if not got.startswith(HELLO):
            return False
        size = int.from_bytes(got[len(HELLO):], "big")
        while len(got) < len(HELLO) + 2 + size:
            chunk = conn.recv(len(HELLO) + 2 + size - len(got))
            if not chunk:
                return False
            got += chunk
    except OSError:
        return False
    finally:
        conn.settimeout(None)
    return hmac.compare_digest(got, want)


class SecretCheck(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuse every RPC whose metadata lacks the pool's secret."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("a SecretCheck needs a non-empty secret")
        self._secret = secret.encode()

        def refuse(_request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)

        self._refuse_unary = grpc.unary_unary_rpc_method_handler(refuse)
        self._refuse_stream = grpc.stream_stream_rpc_method_handler(refuse)
        self._refuse_unary_stream = grpc.unary_stream_rpc_method_handler(refuse)
        self._refuse_stream_unary = grpc.stream_unary_rpc_method_handler(refuse)

    def intercept_service(self, continuation: Callable[[Any], Any],
                          handler_call_details: Any) -> Any:
        given = dict(handler_call_details.invocation_metadata or ()).get(HEADER, "")
        if isinstance(given, str) and hmac.compare_digest(given.encode(), self._secret):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler.request_streaming and handler.response_streaming:
            return self._refuse_stream
        if handler.request_streaming:
            return self._refuse_stream_unary
        if handler.response_streaming:
            return self._refuse_unary_stream
        return self._refuse_unary


class SecretStub:
    """A BridgeService stub whose every call carries the secret in its metadata (the
    caller's own metadata kept)."""

    def __init__(self, stub: Any, secret: str) -> None:
        self._stub = stub
        self._pair = (HEADER, secret)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)
        pair = self._pair

        def call(*args: Any, metadata: Any = (), **kwargs: Any) -> Any:
            return method(*args, metadata=(*(metadata or ()), pair), **kwargs)

        return call
