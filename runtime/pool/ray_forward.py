"""Actor side of the Ray actor-call route: a Ray worker's actor forwards the host's calls to its
worker over gRPC on the worker's own node (for a worker the host cannot reach directly).

    host (ray_stub.RayActorStub) --Ray: unary(method, token, request bytes, timeout, headers)-->
        WorkerActor.unary --> Forwarder.unary --gRPC, the pool's secret added--> the worker
        <-- ("ok", answer bytes) or ("error", status code name, details)
    host --Ray streaming generator: stream(token, ...)--> one ("ok", chunk bytes) per chunk,
        then ("error", code, details) if the RPC failed
    host --Ray: cancel(token)--> the RPC of that call ends (CANCELLED): the worker cancels the
        tool as it does for a unary call whose RPC ended (its deadline, the host giving up)

Requests and answers stay serialized protobuf end to end (the actor never parses them). The
secret is the actor's own (given at its creation), never sent with a call. Each call holds one
of the actor's threads while it runs (a threaded actor: `ray_process` sizes its concurrency).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from ..protocol import channel_options
from ..protocol import secret as secret_mod
from ..protocol.tls import HostTls

SERVICE = "/snakepit.bridge.BridgeService/"
UNARY_METHODS = frozenset({"ExecuteTool", "Ping", "CleanupSession"})
STREAM_METHOD = "ExecuteStreamingTool"
EARLY_CANCELS = 1024  # cancels remembered for calls not started yet (Ray may run them later)
Answer = tuple[str, Any, str]  # ("ok", bytes, "") or ("error", status code name, details)


class Forwarder:
    """A gRPC channel from the actor to its worker at ``address`` (on the actor's node), with
    the calls in flight by token so that `cancel` can end one."""

    def __init__(self, address: str, secret: str, max_message_bytes: int,
                 tls_check: tuple[bytes, str] | None = None) -> None:
        options = channel_options(max_message_bytes)  # as the host's (worker_channel)
        if tls_check is None:
            self._channel = grpc.insecure_channel(address, options=options)
        else:  # a worker on TLS: checked as the host checks it (the pool's CA and name)
            check = HostTls(*tls_check)
            self._channel = grpc.secure_channel(address, check.channel_credentials(),
                                                options=[*options, *check.channel_options()])
        # no (de)serializers: the bytes the host sent go out as they are
        self._unary = {m: self._channel.unary_unary(SERVICE + m) for m in UNARY_METHODS}
        self._stream = self._channel.unary_stream(SERVICE + STREAM_METHOD)
        self._secret = (secret_mod.HEADER, secret)
        self._open: dict[str, Any] = {}  # token -> the grpc future or response iterator
        # a cancel can overtake its call (each runs on a thread of its own)
        self._early: collections.deque[str] = collections.deque(maxlen=EARLY_CANCELS)
        self._lock = threading.Lock()

    def _headers(self, headers: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        return (*[(k, v) for k, v in headers], self._secret)

    def unary(self, method: str, token: str, request: bytes, timeout: float | None,
              headers: list[tuple[str, str]]) -> Answer:
        if method not in UNARY_METHODS:
            return ("error", "UNIMPLEMENTED", f"{method} is not forwarded through the actor")
        future = self._unary[method].future(request, timeout=timeout,
                                            metadata=self._headers(headers))
        self._register(token, future)
        try:
            return ("ok", future.result(), "")
        except grpc.FutureCancelledError:
            return ("error", "CANCELLED", "cancelled by the host")
        except grpc.RpcError as exc:
            return ("error", exc.code().name, exc.details() or "")
        finally:
            with self._lock:
                self._open.pop(token, None)

    def stream(self, token: str, request: bytes, timeout: float | None,
               headers: list[tuple[str, str]]) -> Iterator[Answer]:
        call = self._stream(request, timeout=timeout, metadata=self._headers(headers))
        self._register(token, call)
        try:
            for chunk in call:
                yield ("ok", chunk, "")
        except grpc.RpcError as exc:
            yield ("error", exc.code().name, exc.details() or "")
        finally:
            with self._lock:
                self._open.pop(token, None)
            call.cancel()

    def _register(self, token: str, call: Any) -> None:
        with self._lock:
            self._open[token] = call
            early = token in self._early
        if early:
            call.cancel()

    def cancel(self, token: str) -> None:
        """End the RPC of call ``token`` (at once if it starts later)."""
        with self._lock:
            call = self._open.get(token)
            if call is None:
                self._early.append(token)
        if call is not None:
            call.cancel()

