"""The worker's gRPC servicer: thin decode -> ToolRunner -> encode.

``CallLane`` (pit extension) carries batches of calls over one bidirectional stream; the
handler's thread runs them one at a time and yields their results. ``CancelCalls`` arrives on
another server thread and interrupts the running call. Plain ``ExecuteTool`` serves Snakepit
hosts and lane-less callers.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ..protocol import codec, pb, pb_grpc
from ..protocol.frames import FrameError
from . import telemetry
from .runner import CallCancelled, StreamError, ToolRunner

FLUSH_S = 0.001  # longest a finished call's result waits for the rest of its batch
UNARY_IDS = 1 << 62  # unary calls' ids, far from the lane's (which count from 1)
RESERVED_THREADS = 2  # server threads no long RPC may take: Ping, CancelCalls, sessions
_EOF = object()




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
                 max_message_bytes: int = 512 * 1024 * 1024, server_threads: int = 8) -> None:
        self.runner = runner
        # RPCs that hold a server thread for as long as a tool runs or a stream is open take a
        # permit; at most one CallLane and one StreamTelemetry are open at a time. So idle
        # streams nobody closes can never starve Ping (the worker would exit, thinking its
        # host silent) or CancelCalls.
        self._long_rpcs = threading.BoundedSemaphore(max(1, server_threads - RESERVED_THREADS))
        self._single = {"CallLane": threading.Lock(), "StreamTelemetry": threading.Lock()}
        self._unary_ids = itertools.count(UNARY_IDS)  # ids of ExecuteTool calls, for cancel
        self.max_result_bytes = max_message_bytes - 64 * 1024
        self.executor = ThreadPoolExecutor(max(1, runner.threads), thread_name_prefix="pit-tool")
        self.tool_specs = tool_specs  # name -> pb.ToolSpec
        self.last_host_contact = time.monotonic()
        self._telemetry_closed = threading.Event()

    def close(self) -> None:
        """Worker shutdown: end what runs beside the RPCs, before the server stops."""
        self.close_telemetry()

    def close_telemetry(self) -> None:
        """End the telemetry stream once it has sent what is buffered (worker shutdown)."""
        self._telemetry_closed.set()
        telemetry.buffer.wake.set()

    def Ping(self, request: Any, context: Any) -> Any:
        self.last_host_contact = time.monotonic()
        return pb.PingResponse(message=f"pong: {request.message}",
                               server_time=codec.timestamp_now())

    def Heartbeat(self, request: Any, context: Any) -> Any:
        self.last_host_contact = time.monotonic()
        table = self.runner.session_table
        valid = not request.session_id or request.session_id in table
        if request.session_id:
            table.touch(request.session_id)
        return pb.HeartbeatResponse(server_time=codec.timestamp_now(), session_valid=valid)

    def InitializeSession(self, request: Any, context: Any) -> Any:
        table = self.runner.session_table
        opened, expired = table.open(request.session_id, dict(request.metadata))
        for sid in expired:  # their hooks run off this thread: it may be a reserved one
            self.executor.submit(self._end_session, sid)
        if not opened:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"this worker holds {len(table)} sessions used in the last "
                          f"{table.ttl_s:g} s (max_sessions); session {request.session_id!r} "
                          "was not opened: clean up sessions you no longer need")
        self.runner.sessions.setdefault(request.session_id, {})
        return pb.InitializeSessionResponse(success=True, available_tools=self.tool_specs)

    def CleanupSession(self, request: Any, context: Any) -> Any:
        known = self.runner.session_table.pop(request.session_id) is not None
        state = self._end_session(request.session_id, known)
        return pb.CleanupSessionResponse(success=state is not None or known,
                                         resources_cleaned=len(state) if state else 0)

    def _end_session(self, session_id: str, known: bool = True) -> dict[str, Any] | None:
        """Drop a session's tool state and tell the adapter (its hook's failure is printed,
        never raised). Returns the state it had."""
        state = self.runner.sessions.pop(session_id, None)
        if state is not None or known:
            try:
                self.runner.adapter.on_session_end(session_id, state or {})
            except Exception:  # noqa: BLE001 - the hook's failure must not fail the cleanup
                import traceback

                traceback.print_exc()
        return state

    def GetSession(self, request: Any, context: Any) -> Any:
        info = self.runner.session_table.get(request.session_id)
        ts = Timestamp()
        ts.FromNanoseconds(int((info.created if info else 0.0) * 1e9))
        return pb.GetSessionResponse(session_id=request.session_id,
                                     metadata=info.metadata if info else {},
                                     created_at=ts, tool_count=len(self.tool_specs))

    @contextlib.contextmanager
    def _long_rpc(self, context: Any, single: str = "") -> Iterator[None]:
        """Hold a long-RPC permit (and the one ``single`` slot) for the block, or end the RPC
        with RESOURCE_EXHAUSTED at once."""
        lock = self._single.get(single)
        if lock is not None and not lock.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"this worker serves one {single} stream at a time; one is open")
        try:
            if not self._long_rpcs.acquire(blocking=False):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              "every server thread of this worker is serving a call or stream")
            try:
                yield
            finally:
                self._long_rpcs.release()
        finally:
            if lock is not None:
                lock.release()

    def ExecuteTool(self, request: Any, context: Any) -> Any:
        with self._long_rpc(context):
            cid = next(self._unary_ids)
            # The RPC ending early (its deadline, the host giving up) cancels the call, as
            # CancelCalls does for lane calls: a timed-out call never runs on unseen.
            if not context.add_callback(lambda: self.runner.cancel(cid, only_running=True)):
                return self.runner.cancelled_response(request)  # it ended while it waited
            resp = self.runner.run(request, call_id=cid, timeout_ms=_remaining_ms(context))
            return self._bounded(resp, request)

    def ExecuteStreamingTool(self, request: Any, context: Any) -> Iterator[Any]:
        with self._long_rpc(context):
            yield from self._stream_tool(request, context)

    def _stream_tool(self, request: Any, context: Any) -> Iterator[Any]:
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
        with self._long_rpc(context, "CallLane"):
            yield from self.lane(request_iterator)

    def lane(self, request_iterator: Any) -> Iterator[Any]:
        """Run the calls of a lane (gRPC stream or lane socket connection), yield results."""
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
            except FrameError as exc:  # lane socket: the host sent what is not a frame
                sys.stderr.write(f"pit worker: call lane closed: {exc}\n")
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
        The host may send TelemetryControl messages: a toggle pauses buffering (events emitted
        meanwhile are lost), sampling and filter mute events before they are buffered; each
        applied message is acknowledged (`telemetry.buffer.control`)."""
        with self._long_rpc(context, "StreamTelemetry"):
            yield from self._telemetry(request_iterator, context)

    def _telemetry(self, request_iterator: Any, context: Any) -> Iterator[Any]:
        buf = telemetry.buffer

        def read_controls() -> None:
            with contextlib.suppress(grpc.RpcError, ValueError):
                for control in request_iterator:
                    which = control.WhichOneof("control")
                    if which:
                        buf.control(which, control)

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
