"""pit's worker servicer as Snakepit's bridge behaves towards its host (issue 15 B). Used only
when a Snakepit host launched the worker (`snakepit_launch`); pit's own hosts never see it, and
the calls themselves run as in any pit worker (`WorkerServicer` -> `ToolRunner` -> adapter).

    host --ExecuteTool / ExecuteStreamingTool (session s)--> SnakepitServicer
         <--InitializeSession(s) every call, RegisterTools(s, catalogue) once per session--
         <--Heartbeat(s) every interval_ms (HostHeartbeat; dependent: lost host = stop)--
    host --InitializeSession / CleanupSession / GetSession / Heartbeat--> SnakepitServicer
         <--the same request, forwarded (the bridge keeps no sessions; pit also keeps its
            own, for ctx.session and on_session_end)--
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc

from ..protocol import codec, pb
from . import telemetry
from .runner import ToolRunner
from .servicer import WorkerServicer
from .snakepit_launch import HeartbeatConfig

HOST_RPC_TIMEOUT_S = 10.0  # most a host RPC made for a call (or forwarded) may take
MAX_SESSIONS_BEATEN = 64  # the most recently used; Snakepit's hosts send one per worker
MAX_SESSIONS_REGISTERED = 10_000  # sessions remembered as told our tools (then told again)


def _budget(context: Any) -> float:
    left = context.time_remaining()
    return HOST_RPC_TIMEOUT_S if left is None else max(0.001, min(left, HOST_RPC_TIMEOUT_S))


def catalogue(tool_specs: Mapping[str, Any], adapter_cls: type) -> list[Any]:
    """The worker's tools as RegisterTools carries them (with the adapter's class and module
    in each tool's metadata, as the bridge sends them)."""
    meta = {"adapter_class": adapter_cls.__name__, "module": adapter_cls.__module__}
    return [pb.ToolRegistration(name=s.name, description=s.description,
                                parameters=s.parameters, metadata=meta,
                                supports_streaming=s.supports_streaming)
            for s in tool_specs.values()]


class SnakepitServicer(WorkerServicer):
    def __init__(self, runner: ToolRunner, tool_specs: dict[str, Any], max_message_bytes: int,
                 server_threads: int, *, host: Any, host_address: str,
                 heartbeat: HeartbeatConfig, on_host_lost: Callable[[], None],
                 adapter_cls: type, worker_id: str) -> None:
        super().__init__(runner, tool_specs, max_message_bytes, server_threads)
        telemetry.buffer.snakepit_host = True  # its TelemetryControl globs, no acknowledgements
        self.host = host  # BridgeServiceStub on the host's channel
        self.heartbeat = HostHeartbeat(host, host_address, heartbeat, on_host_lost)
        self.catalogue = catalogue(tool_specs, adapter_cls)
        self.worker_id = worker_id
        self._registered: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        super().close()
        self.heartbeat.close()

    # --- calls ----------------------------------------------------------------------------------
    def ExecuteTool(self, request: Any, context: Any) -> Any:
        self._enter_session(request.session_id, context)
        return super().ExecuteTool(request, context)

    def ExecuteStreamingTool(self, request: Any, context: Any) -> Iterator[Any]:
        self._enter_session(request.session_id, context)
        sent = 0
        for chunk in super().ExecuteStreamingTool(request, context):
            sent += 1
            if chunk.is_final and chunk.data:
                # A plain tool's result, called as a stream: as the bridge sends it, a chunk
                # with the data and an empty final one (Snakepit's hosts may skip the data
                # of a final chunk).
                chunk.is_final = False
                yield chunk
                yield codec.final_chunk(request.tool_name, sent + 1)
                return
            yield chunk

    def _enter_session(self, session_id: str, context: Any) -> None:
        """Before a call, as the bridge: make sure the host knows the session, beat it, and
        tell the host our tools the first time the session is seen."""
        self.heartbeat.watch(session_id)
        if not session_id:
            return
        timeout = _budget(context)
        try:
            self.host.InitializeSession(pb.InitializeSessionRequest(session_id=session_id),
                                        timeout=timeout)
        except grpc.RpcError:
            pass  # it may exist already; the call runs either way, as with the bridge
        with self._lock:
            if session_id in self._registered:
                self._registered.move_to_end(session_id)
                return
            self._registered[session_id] = None
            while len(self._registered) > MAX_SESSIONS_REGISTERED:
                self._registered.popitem(last=False)
        req = pb.RegisterToolsRequest(session_id=session_id, tools=self.catalogue,
                                      worker_id=self.worker_id)
        try:
            resp = self.host.RegisterTools(req, timeout=timeout)
            problem = "" if resp.success or "duplicate_tool" in resp.error_message \
                else resp.error_message
        except grpc.RpcError as exc:
            problem = f"{exc.code().name}: {exc.details()}"
        if problem:
            sys.stderr.write(f"pit worker: the host refused our tools for session "
                             f"{session_id!r} (RegisterTools): {problem}\n")

    # --- the host's session RPCs, forwarded as the bridge does ------------------------------------
    def _forward(self, method: str, request: Any, context: Any) -> Any:
        try:
            return getattr(self.host, method)(request, timeout=_budget(context))
        except grpc.RpcError as exc:
            return context.abort(exc.code(), f"the host's {method}: {exc.details()}")

    def InitializeSession(self, request: Any, context: Any) -> Any:
        resp = self._forward("InitializeSession", request, context)
        super().InitializeSession(request, context)  # ours too: ctx.session, on_session_end
        self.heartbeat.watch(request.session_id)
        return resp

    def CleanupSession(self, request: Any, context: Any) -> Any:
        try:
            return self._forward("CleanupSession", request, context)
        finally:
            super().CleanupSession(request, context)
            self.heartbeat.forget(request.session_id)
            with self._lock:
                self._registered.pop(request.session_id, None)

    def GetSession(self, request: Any, context: Any) -> Any:
        resp = self._forward("GetSession", request, context)
        self.heartbeat.watch(request.session_id)
        return resp

    def Heartbeat(self, request: Any, context: Any) -> Any:
        super().Heartbeat(request, context)  # the session stays fresh here too
        return self._forward("Heartbeat", request, context)


class _Beat:
    __slots__ = ("due", "missed", "warned")

    def __init__(self, due: float) -> None:
        self.due = due  # time.monotonic() of the next beat
        self.missed = 0  # failed beats in a row
        self.warned = False


class HostHeartbeat:
    """The worker's heartbeats to its Snakepit host, one per session its calls carried (the
    `MAX_SESSIONS_BEATEN` most recent), sent together from one thread. Dependent: when one
    session's beats failed ``max_missed_heartbeats`` times in a row, the host is lost and
    ``on_lost`` stops the worker."""

    def __init__(self, stub: Any, address: str, config: HeartbeatConfig,
                 on_lost: Callable[[], None]) -> None:
        self.config = config
        self._stub = stub
        self._address = address
        self._on_lost = on_lost
        self._beats: OrderedDict[str, _Beat] = OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def watch(self, session_id: str) -> None:
        """Beat this session from now on (after ``initial_delay_ms``)."""
        if not self.config.enabled:
            return
        with self._lock:
            if self._closed:
                return
            if session_id in self._beats:
                self._beats.move_to_end(session_id)
                return
            self._beats[session_id] = _Beat(time.monotonic()
                                            + self.config.initial_delay_ms / 1000)
            while len(self._beats) > MAX_SESSIONS_BEATEN:
                self._beats.popitem(last=False)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="pit-snakepit-heartbeat")
                self._thread.start()
        self._wake.set()

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._beats.pop(session_id, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._wake.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                due = [(sid, b) for sid, b in self._beats.items() if b.due <= now]
                next_due = min((b.due for b in self._beats.values()), default=now + 60.0)
            if not due:
                self._wake.wait(max(0.0, next_due - now))
                self._wake.clear()
                continue
            if self._beat(due):
                return

    def _beat(self, due: list[tuple[str, _Beat]]) -> bool:
        """Send the due beats at once and wait for them; True when the host is lost."""
        cfg = self.config
        sent = []
        for sid, beat in due:
            sent.append((sid, beat, self._stub.Heartbeat.future(
                pb.HeartbeatRequest(session_id=sid, client_time=codec.timestamp_now()),
                timeout=max(cfg.timeout_ms, 0) / 1000)))
        for sid, beat, answer in sent:
            try:
                answer.result()
                beat.missed = 0
                beat.warned = False
            except (grpc.RpcError, grpc.FutureTimeoutError, grpc.FutureCancelledError):
                beat.missed += 1
            beat.due = time.monotonic() + cfg.interval_ms / 1000 \
                + random.uniform(0, max(cfg.jitter_ms, 0) / 1000)
            if beat.missed and beat.missed >= cfg.max_missed_heartbeats:
                where = f"the Snakepit host at {self._address} did not answer {beat.missed} " \
                        f"heartbeats in a row (session {sid!r})"
                if cfg.dependent:
                    sys.stderr.write(f"pit worker: {where}; exiting (heartbeat dependent)\n")
                    self.close()
                    self._on_lost()
                    return True
                if not beat.warned:
                    beat.warned = True
                    sys.stderr.write(f"pit worker: {where}; serving on (heartbeat "
                                     "independent)\n")
        return False
