"""The worker's gRPC servicer: thin decode -> ToolRunner -> encode.

``CallLane`` (pit extension) carries batches of calls over one bidirectional stream; the
handler's thread runs them one at a time and yields their results. ``CancelCalls`` arrives on
another server thread and interrupts the running call. Plain ``ExecuteTool`` serves Snakepit
hosts and lane-less callers.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ..protocol import pb, pb_grpc
from . import telemetry
from .runner import CallCancelled, StreamError, ToolRunner

FLUSH_S = 0.001  # longest a finished call's result waits for the rest of its batch
_EOF = object()


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def _payload(resp: Any) -> int:
    return len(resp.binary_result) + len(resp.result.value)


def _remaining_ms(context: Any) -> float:
    left = context.time_remaining()
    return 0.0 if left is None or left > 1e8 else max(left * 1000, 0.001)


def _lane_budget_ms(call: Any) -> float:
    """What is left of a lane call's budget now: counted from the host's deadline, so time
    spent waiting here behind other calls is not handed back (0: no deadline)."""
    if call.deadline_unix_ns:
        return max((call.deadline_unix_ns - time.time_ns()) / 1e6, 0.001)
    return call.timeout_ms


class WorkerServicer(pb_grpc.BridgeServiceServicer):
    def __init__(self, runner: ToolRunner, tool_specs: dict[str, Any],
                 max_message_bytes: int = 512 * 1024 * 1024) -> None:
        self.runner = runner
        self.max_result_bytes = max_message_bytes - 64 * 1024
        self.executor = ThreadPoolExecutor(max(1, runner.threads), thread_name_prefix="pit-tool")
        self.tool_specs = tool_specs  # name -> pb.ToolSpec
        self.last_host_contact = time.monotonic()
        self._telemetry_closed = threading.Event()

    def close_telemetry(self) -> None:
        """End the telemetry stream once it has sent what is buffered (worker shutdown)."""
        self._telemetry_closed.set()
        telemetry.buffer.wake.set()

    def Ping(self, request: Any, context: Any) -> Any:
        self.last_host_contact = time.monotonic()
        return pb.PingResponse(message=f"pong: {request.message}", server_time=_now())

    def Heartbeat(self, request: Any, context: Any) -> Any:
        self.last_host_contact = time.monotonic()
        valid = not request.session_id or request.session_id in self.runner.session_meta
        return pb.HeartbeatResponse(server_time=_now(), session_valid=valid)

    def InitializeSession(self, request: Any, context: Any) -> Any:
        self.runner.session_meta.setdefault(
            request.session_id, (time.time(), dict(request.metadata)))
        self.runner.sessions.setdefault(request.session_id, {})
        return pb.InitializeSessionResponse(success=True, available_tools=self.tool_specs)

    def CleanupSession(self, request: Any, context: Any) -> Any:
        state = self.runner.sessions.pop(request.session_id, None)
        known = self.runner.session_meta.pop(request.session_id, None)
        cleaned = len(state) if state else 0
        if state is not None or known is not None:
            try:
                self.runner.adapter.on_session_end(request.session_id, state or {})
            except Exception:  # noqa: BLE001 - the hook's failure must not fail the cleanup
                import traceback

                traceback.print_exc()
        return pb.CleanupSessionResponse(success=state is not None or known is not None,
                                         resources_cleaned=cleaned)

    def GetSession(self, request: Any, context: Any) -> Any:
        created, metadata = self.runner.session_meta.get(request.session_id, (0.0, {}))
        ts = Timestamp()
        ts.FromNanoseconds(int(created * 1e9))
        return pb.GetSessionResponse(session_id=request.session_id, metadata=metadata,
                                     created_at=ts, tool_count=len(self.tool_specs))

    def ExecuteTool(self, request: Any, context: Any) -> Any:
        return self._bounded(self.runner.run(request, timeout_ms=_remaining_ms(context)),
                             request)

    def ExecuteStreamingTool(self, request: Any, context: Any) -> Iterator[Any]:
        started: list[Any] = []
        # When the RPC ends early (the host cancelled, the deadline passed), tell the tool.
        context.add_callback(lambda: started and started[0].cancelled.set())
        try:
            for chunk in self.runner.stream(request, _remaining_ms(context), context.is_active,
                                            started.append):
                if len(chunk.data) > self.max_result_bytes:
                    err = self.runner.too_large_response(request, len(chunk.data),
                                                         self.max_result_bytes, "a stream chunk")
                    raise StreamError(err.error_message)
                yield chunk
        except StreamError as exc:
            context.abort(grpc.StatusCode.INTERNAL, str(exc))

    def CallLane(self, request_iterator: Any, context: Any) -> Iterator[Any]:
        if self.runner.threads > 1:
            yield from self._threaded_lane(request_iterator)
            return
        # Calls run right here, in order, on the handler's thread: no thread hand-off per call.
        # Results are sent once a batch is done, or sooner when it runs past FLUSH_S.
        runner = self.runner
        for msg in request_iterator:
            results: list[Any] = []
            size = 0
            flush_at = time.monotonic() + FLUSH_S
            for call in msg.calls:
                if results and runner.expected_ms(call.request.tool_name) > FLUSH_S * 1000:
                    # A call that may take a while (or that we have never seen) goes out
                    # after the results we hold: if it kills us, they are not lost.
                    yield pb.LaneResponse(results=results)
                    results = []
                    size = 0
                    flush_at = time.monotonic() + FLUSH_S
                result = self._run_one(call)
                results.append(result)
                size += _payload(result.response)
                if time.monotonic() >= flush_at or size > self.max_result_bytes // 2:
                    yield pb.LaneResponse(results=results)
                    results = []
                    size = 0
                    flush_at = time.monotonic() + FLUSH_S
            if results:
                yield pb.LaneResponse(results=results)

    def _run_one(self, call: Any) -> Any:
        """One lane call -> its LaneResult (never raises for the call's own failure)."""
        runner = self.runner
        try:
            resp = runner.run(call.request, call_id=call.call_id, timeout_ms=_lane_budget_ms(call))
            runner.forget(call.call_id)
        except CallCancelled:  # a cancel that landed just after the tool returned
            resp = runner.cancelled_response(call.request)
        return pb.LaneResult(call_id=call.call_id, response=self._bounded(resp, call.request))

    def _bounded(self, resp: Any, req: Any) -> Any:
        """A result over the message limit becomes an error: it must not break the RPC."""
        n = _payload(resp)
        if n > self.max_result_bytes:
            return self.runner.too_large_response(req, n, self.max_result_bytes)
        return resp

    def _threaded_lane(self, request_iterator: Any) -> Iterator[Any]:
        """Thread profile: a reader takes calls off the stream into a pool of `threads`
        threads; this handler sends results as they finish (whatever is ready, batched)."""
        done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        counts = {"submitted": 0}

        def finish(call: Any) -> None:
            try:
                done.put(self._run_one(call))
            except CallCancelled:  # landed after the tool returned: report it cancelled
                done.put(pb.LaneResult(call_id=call.call_id,
                                       response=self.runner.cancelled_response(call.request)))

        def read() -> None:
            try:
                for msg in request_iterator:
                    for call in msg.calls:
                        counts["submitted"] += 1
                        self.executor.submit(finish, call)
            except grpc.RpcError:
                pass
            finally:
                done.put(_EOF)

        threading.Thread(target=read, name="pit-lane-reader", daemon=True).start()
        sent = 0
        eof = False
        while not eof or sent < counts["submitted"]:
            batch = [done.get()]
            while True:
                try:
                    batch.append(done.get_nowait())
                except queue.Empty:
                    break
            eof = eof or any(item is _EOF for item in batch)
            results = [item for item in batch if item is not _EOF]
            if results:
                sent += len(results)
                yield pb.LaneResponse(results=results)

    def StreamTelemetry(self, request_iterator: Any, context: Any) -> Iterator[Any]:
        """Adapter telemetry (`runtime.worker.telemetry`) to the host, as it is emitted.
        The host may send a toggle to pause buffering (events emitted meanwhile are lost)."""
        buf = telemetry.buffer

        def read_controls() -> None:
            with contextlib.suppress(grpc.RpcError, ValueError):
                for control in request_iterator:
                    if control.WhichOneof("control") == "toggle":
                        buf.enabled = control.toggle.enabled

        threading.Thread(target=read_controls, name="pit-telemetry-ctl", daemon=True).start()
        while context.is_active():
            last = self._telemetry_closed.is_set()
            if not last:
                buf.wake.wait(0.5)
            items, dropped = buf.take()
            for name, measurements, metadata, ts, correlation_id in items:
                ev = pb.TelemetryEvent(event_parts=name.split("."), metadata=metadata,
                                       timestamp_ns=ts, correlation_id=correlation_id)
                for key, value in measurements.items():
                    field = ("string_value" if isinstance(value, str) else
                             "int_value" if isinstance(value, int) else "float_value")
                    setattr(ev.measurements[key], field, value)
                yield ev
            if dropped:
                ev = pb.TelemetryEvent(event_parts=["telemetry", "dropped"],
                                       timestamp_ns=time.time_ns())
                ev.measurements["dropped"].int_value = dropped
                yield ev
            if last:
                return

    def CancelCalls(self, request: Any, context: Any) -> Any:
        for cid in request.call_ids:
            self.runner.cancel(cid)
        return pb.CancelCallsResponse(cancelled=len(request.call_ids))
