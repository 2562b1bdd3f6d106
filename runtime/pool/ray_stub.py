"""Host side of the Ray actor-call route: a stand-in for the gRPC stub of a Ray worker the host
cannot reach directly, whose calls go through the worker's actor (`ray_forward` on its side).

    WorkerChannel (unary calls, streams, pings, session cleanup: unchanged)
      |  stub.ExecuteTool(req, timeout=, metadata=) -> an awaitable call with cancel()
      |  stub.ExecuteStreamingTool(...)            -> a call with read() (grpc.aio.EOF at the end)
      v
    RayActorStub --Ray actor method calls, serialized protobuf--> WorkerActor --gRPC--> worker

Failures come back as `grpc.aio.AioRpcError` with the worker's own status code and details, so
the channel's error handling (timeouts, tool errors, a dead worker) is the one it has for gRPC.
A dead actor reads as UNAVAILABLE (the pool learns why from the actor's exit watch). A call
past its deadline: the worker's gRPC deadline ends it there (the actor forwards the timeout);
should Ray itself not answer ACTOR_GRACE_S after it, the host gives up with
DEADLINE_EXCEEDED and asks the actor to cancel the RPC. Cancelling a call (abandon, a stream
closed early) cancels its RPC through the actor, as on the unary path. Not carried this way:
the call lane, the telemetry relay (workers' own events are not relayed) and shared memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import grpc

from ..protocol import pb

ROUTE = "ray-actor"  # what `pit status` shows as such a worker's lane
ACTOR_GRACE_S = 2.0  # past a call's own deadline, how long Ray may take to bring its answer
RESPONSES = {"ExecuteTool": pb.ExecuteToolResponse, "Ping": pb.PingResponse,
             "CleanupSession": pb.CleanupSessionResponse}


def rpc_error(code: str, details: str) -> grpc.aio.AioRpcError:
    """The error a gRPC call would have raised (``code``: a StatusCode name)."""
    status = grpc.StatusCode[code] if code in grpc.StatusCode.__members__ else \
        grpc.StatusCode.UNKNOWN
    return grpc.aio.AioRpcError(status, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def _ray_failure(exc: BaseException) -> grpc.aio.AioRpcError:
    """A Ray error (the actor died, its node is lost...) as a broken connection."""
    said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return rpc_error("UNAVAILABLE", f"Ray: {type(exc).__name__}: {said}")


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else timeout + ACTOR_GRACE_S


class RayActorStub:
    """The BridgeService methods `WorkerChannel` uses, through a Ray actor (module docstring)."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor
        self._tokens = itertools.count(1)

    def _token(self) -> str:
        return str(next(self._tokens))

    def cancel(self, token: str) -> None:
        with contextlib.suppress(Exception):  # the actor is gone: so is the call
            self._actor.cancel.remote(token)

    def __getattr__(self, name: str) -> Any:
        if name in RESPONSES:
            def call(req: Any, timeout: float | None = None, metadata: Any = ()) -> ActorCall:
                return ActorCall(self, name, req, timeout, metadata)
            return call
        raise AttributeError(f"{name} does not go through a Ray actor (only "
                             f"{', '.join(sorted(RESPONSES))} and ExecuteStreamingTool)")

    def ExecuteStreamingTool(self, req: Any, timeout: float | None = None,  # noqa: N802
                             metadata: Any = ()) -> ActorStream:
        return ActorStream(self, req, timeout, metadata)

    def remote(self, method: str, *args: Any) -> Any:
        return getattr(self._actor, method).remote(*args)


class ActorCall:
    """One unary call through the actor: await it for the answer; `cancel` ends it."""

    def __init__(self, stub: RayActorStub, method: str, req: Any, timeout: float | None,
                 metadata: Any) -> None:
        self._stub, self._token = stub, stub._token()
        ref = stub.remote("unary", method, self._token, req.SerializeToString(), timeout,
                          [tuple(h) for h in metadata or ()])
        self._task = asyncio.get_running_loop().create_task(
            self._answer(ref, RESPONSES[method], timeout))

    async def _answer(self, ref: Any, response: Any, timeout: float | None) -> Any:
        try:
            answer = await asyncio.wait_for(asyncio.wrap_future(ref.future()),
                                            _deadline(timeout))
        except asyncio.TimeoutError:
            self._stub.cancel(self._token)
            raise rpc_error("DEADLINE_EXCEEDED", "no answer through the Ray actor") from None
        except asyncio.CancelledError:
            self._stub.cancel(self._token)
            raise
        except Exception as exc:  # noqa: BLE001 - Ray's errors: the actor is gone
            raise _ray_failure(exc) from None
        status, value, details = answer
        if status != "ok":
            raise rpc_error(value, details)
        return response.FromString(value)

    def __await__(self) -> Any:
        return self._task.__await__()

    def cancel(self) -> bool:
        if not self._task.done():
            # here, not only in _answer: a task cancelled before its first step never runs
            # its body, and the call sent in __init__ would run on in the worker
            self._stub.cancel(self._token)
        return self._task.cancel()


class ActorStream:
    """One streaming call through the actor (a Ray streaming generator): `read` gives its
    ToolChunks, then grpc.aio.EOF; `cancel` ends it in the worker."""

    def __init__(self, stub: RayActorStub, req: Any, timeout: float | None,
                 metadata: Any) -> None:
        self._stub, self._token = stub, stub._token()
        self._gen = stub.remote("stream", self._token, req.SerializeToString(), timeout,
                                [tuple(h) for h in metadata or ()])
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._until = None if timeout is None else loop.time() + timeout + ACTOR_GRACE_S
        self._ended = False

    async def read(self) -> Any:
        left = None if self._until is None else max(self._until - self._loop.time(), 0.0)
        try:
            ref = await asyncio.wait_for(self._gen.__anext__(), left)
            status, value, details = await asyncio.wrap_future(ref.future())
        except StopAsyncIteration:
            self._ended = True
            return grpc.aio.EOF
        except asyncio.TimeoutError:
            raise rpc_error("DEADLINE_EXCEEDED", "no chunk through the Ray actor") from None
        except Exception as exc:  # noqa: BLE001 - Ray's errors: the actor is gone
            self._ended = True
            raise _ray_failure(exc) from None
        if status != "ok":
            self._ended = True
            raise rpc_error(value, details)
        return pb.ToolChunk.FromString(value)

    def cancel(self) -> None:
        if not self._ended:
            self._ended = True
            self._stub.cancel(self._token)
