"""A Snakepit host drives pit's worker (issue 15 B): ``python -m runtime.worker`` launched with
exactly the flags and environment Snakepit 0.13's Elixir host gives its ``grpc_server.py``.

The host's part is played by `FakeSnakepitHost`, a BridgeService written from the protocol
(/work/shared/PROTOCOL.md and Snakepit's BridgeServer), not from pit's own host: it answers
what the Elixir host answers and records what it receives. The test then calls the worker as
the Elixir host does: unary ExecuteTool / ExecuteStreamingTool, parameters as JSON in Any with
the StringValue type URL, results decoded as JSON.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from runtime import Pool, RemoteError
from runtime.pool.transport import free_port
from runtime.protocol import pb, pb_grpc
from tests.conftest import ROOT, wait_until

STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
SHOWCASE = "runtime.adapters.showcase.ShowcaseAdapter"  # a pit adapter, in Snakepit's form
BRIDGE = ROOT.parent / "shared" / "snakepit-bridge" / "python"
MODERN = "tests.adapters.snakepit_style.ModernAdapter"  # written for Snakepit's bridge
HEARTBEAT = {"enabled": True, "interval_ms": 200, "timeout_ms": 500,
             "max_missed_heartbeats": 2, "initial_delay_ms": 0, "dependent": True}
EXIT_WAIT_S = 10.0


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


class FakeSnakepitHost(pb_grpc.BridgeServiceServicer):
    """The Elixir host's side of BridgeService: a session store, a tool registry, one host
    tool (``double``), and a log of every request with the time it came."""

    def __init__(self, ready_file: Path) -> None:
        self.ready_file = ready_file
        self.log: list[tuple[str, Any, float]] = []
        self.sessions: set[str] = set()
        self.ready_at_first_ping: bool | None = None
        self._lock = threading.Lock()

    def _record(self, rpc: str, request: Any) -> None:
        with self._lock:
            self.log.append((rpc, request, time.monotonic()))

    def received(self, rpc: str) -> list[Any]:
        with self._lock:
            return [req for name, req, _ in self.log if name == rpc]

    def Ping(self, request: Any, context: Any) -> Any:
        self._record("Ping", request)
        with self._lock:
            if self.ready_at_first_ping is None:
                self.ready_at_first_ping = self.ready_file.exists()
        return pb.PingResponse(message=f"pong: {request.message}", server_time=_now())

    def InitializeSession(self, request: Any, context: Any) -> Any:
        self._record("InitializeSession", request)
        with self._lock:
            self.sessions.add(request.session_id)  # created, or already there: both fine
        return pb.InitializeSessionResponse(success=True)

    def CleanupSession(self, request: Any, context: Any) -> Any:
        self._record("CleanupSession", request)
        with self._lock:
            self.sessions.discard(request.session_id)
        return pb.CleanupSessionResponse(success=True, resources_cleaned=1)

    def GetSession(self, request: Any, context: Any) -> Any:
        self._record("GetSession", request)
        if request.session_id not in self.sessions:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Session not found: {request.session_id}")
        return pb.GetSessionResponse(session_id=request.session_id, created_at=_now())

    def Heartbeat(self, request: Any, context: Any) -> Any:
        self._record("Heartbeat", request)
        return pb.HeartbeatResponse(server_time=_now(),
                                    session_valid=request.session_id in self.sessions)

    def RegisterTools(self, request: Any, context: Any) -> Any:
        self._record("RegisterTools", request)
        if request.session_id not in self.sessions:
            return pb.RegisterToolsResponse(success=False, error_message="not_found")
        return pb.RegisterToolsResponse(success=True, tool_ids={
            t.name: f"{request.session_id}:{t.name}" for t in request.tools})

    def GetExposedElixirTools(self, request: Any, context: Any) -> Any:
        self._record("GetExposedElixirTools", request)
        spec = pb.ToolSpec(name="double", description="Double a number")
        spec.parameters.add(name="x", type="integer", required=True)
        return pb.GetExposedElixirToolsResponse(tools=[spec])

    def ExecuteElixirTool(self, request: Any, context: Any) -> Any:
        self._record("ExecuteElixirTool", request)
        if request.tool_name != "double":  # the Elixir host's errors are plain text
            return pb.ExecuteElixirToolResponse(success=False, error_message="not_found")
        x = json.loads(request.parameters["x"].value)
        resp = pb.ExecuteElixirToolResponse(success=True)
        resp.result.type_url = STRING_VALUE
        resp.result.value = json.dumps(x * 2).encode()
        return resp


def start_host(host: FakeSnakepitHost, port: int) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_BridgeServiceServicer_to_server(host, server)
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    server.start()
    return server


def launch(adapter: str, host_port: int, ready: Path, *, heartbeat: dict[str, Any] | None = None,
           extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The worker, started as Snakepit's Elixir host starts grpc_server.py."""
    env = {**os.environ, "SNAKEPIT_READY_FILE": str(ready), "SNAKEPIT_PROCESS_GROUP": "1",
           "SNAKEPIT_HEARTBEAT_CONFIG": json.dumps(heartbeat or HEARTBEAT),
           "SNAKEPIT_OTEL_CONSOLE": "false", "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    argv = [sys.executable, "-m", "runtime.worker", "--adapter", adapter, "--port", "0",
            "--elixir-address", f"127.0.0.1:{host_port}", "--snakepit-run-id", "r7f3a9c",
            "--snakepit-instance-name", "conformance", "--snakepit-instance-token", "tok-42"]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def ended(proc: subprocess.Popen[bytes], timeout: float = EXIT_WAIT_S) -> tuple[int, str]:
    """(exit code, output) once ``proc`` exits; kills it (and fails) when it hangs."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the worker did not exit within {timeout} s:\n{out.decode()[-3000:]}")
    return proc.returncode, out.decode()


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Workers a test started: killed (with their process group) if still alive at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # it has a group of its own
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.communicate()
        assert not psutil.pid_exists(proc.pid) or \
            psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE


def loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # grpc's v6 socket reports ::ffff:127.0.0.1
    return (mapped or addr).is_loopback


def read_port(ready: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    if not wait_until(lambda: ready.exists() or proc.poll() is not None, timeout=timeout):
        pytest.fail(f"no ready file after {timeout} s")
    if not ready.exists():
        pytest.fail(f"the worker exited {proc.returncode}:\n{ended(proc)[1]}")
    text = ready.read_text()
    assert text.isdigit() and not text.endswith("\n"), repr(text)  # decimal, no newline
    return int(text)


def params(**kwargs: Any) -> dict[str, Any]:
    """Arguments as the Elixir host encodes them: JSON in Any, StringValue type URL."""
    return {k: {"type_url": STRING_VALUE, "value": json.dumps(v).encode()}
            for k, v in kwargs.items()}


def execute(stub: Any, tool: str, session: str = "", **kwargs: Any) -> Any:
    return stub.ExecuteTool(pb.ExecuteToolRequest(session_id=session, tool_name=tool,
                                                  parameters=params(**kwargs)), timeout=30)


def test_a_snakepit_host_launches_and_drives_the_worker(tmp_path: Path, reap: list) -> None:
    ready = tmp_path / "worker.port"
    host = FakeSnakepitHost(ready)
    host_port = free_port()
    proc = launch(SHOWCASE, host_port, ready)
    reap.append(proc)
    time.sleep(0.5)  # the host is not up yet: the worker keeps pinging, and does not bind
    assert proc.poll() is None and not ready.exists()
    server = start_host(host, host_port)
    try:
        port = read_port(ready, proc)
        # it pinged the host before it bound (and so before the ready file appeared)
        assert host.received("Ping") and host.ready_at_first_ping is False
        assert not list(tmp_path.glob("worker.port.tmp*"))  # written whole, then renamed
        # its own process group (SNAKEPIT_PROCESS_GROUP=1), listening on loopback only
        assert os.getsid(proc.pid) == proc.pid
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(loopback(a.ip) for a in listening), listening
        assert {a.port for a in listening} == {port}

        with grpc.insecure_channel(f"localhost:{port}") as channel:
            stub = pb_grpc.BridgeServiceStub(channel)
            assert stub.Ping(pb.PingRequest(message="connection_test"), timeout=10).message
            # unary calls: results are JSON whatever the type URL says
            resp = execute(stub, "add", a=1, b=2)
            assert resp.success and json.loads(resp.result.value) == 3
            resp = execute(stub, "echo", x=[1, "two"], y={"z": None})
            assert json.loads(resp.result.value) == {"x": [1, "two"], "y": {"z": None}}
            # a streaming tool: JSON chunks numbered from 1, the last one final
            chunks = list(stub.ExecuteStreamingTool(pb.ExecuteToolRequest(
                tool_name="stream_count", parameters=params(n=3), stream=True), timeout=30))
            assert [json.loads(c.data) for c in chunks if c.data] == [{"i": i}
                                                                       for i in (1, 2, 3)]
            assert chunks[0].chunk_id == "stream_count-1" and chunks[-1].is_final
            # a plain tool called as a stream: its result, then an empty final chunk
            chunks = list(stub.ExecuteStreamingTool(pb.ExecuteToolRequest(
                tool_name="add", parameters=params(a=1, b=1), stream=True), timeout=30))
            assert [(json.loads(c.data), c.is_final) for c in chunks[:1]] == [(2, False)]
            assert len(chunks) == 2 and chunks[1].is_final and not chunks[1].data
            # a tool's error: success=false and the bridge's JSON payload
            resp = execute(stub, "fail", message="boom")
            err = json.loads(resp.error_message)
            assert not resp.success and err["type"] == "ValueError" and err["message"] == "boom"
            assert "Traceback" in err["traceback"] and "raise ValueError" in err["traceback"]
            # a stream that fails ends with INTERNAL and the same payload as its details
            with pytest.raises(grpc.RpcError) as info:
                list(stub.ExecuteStreamingTool(pb.ExecuteToolRequest(
                    tool_name="stream_count", parameters=params(n="three")), timeout=30))
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert json.loads(info.value.details())["type"] == "ArgumentError"
            assert not host.received("InitializeSession")  # no session: nothing to tell it

            # a session: the host hears InitializeSession on every call, RegisterTools once
            counts = [json.loads(execute(stub, "session_counter", "sess-1").result.value)
                      ["count"] for _ in range(3)]
            assert counts == [1, 2, 3]
            assert [r.session_id for r in host.received("InitializeSession")] == ["sess-1"] * 3
            (reg,) = host.received("RegisterTools")
            assert reg.session_id == "sess-1" and reg.worker_id
            tools = {t.name: t for t in reg.tools}
            assert {"add", "echo", "fail", "stream_count", "session_counter"} <= set(tools)
            assert tools["stream_count"].supports_streaming
            assert not tools["add"].supports_streaming
            assert [(p.name, p.type, p.required) for p in tools["add"].parameters] == [
                ("a", "float", True), ("b", "float", True)]
            assert tools["add"].metadata["adapter_class"] == "ShowcaseAdapter"
            # heartbeats for the session, as configured (every 200 ms)
            assert wait_until(lambda: len([h for h in host.received("Heartbeat")
                                           if h.session_id == "sess-1"]) >= 2, timeout=5)
            # a host tool, called back from inside the tool through ExecuteElixirTool
            resp = execute(stub, "call_host", "sess-1", name="double", x=21)
            assert resp.success and json.loads(resp.result.value) == 42
            (call,) = host.received("ExecuteElixirTool")
            assert call.tool_name == "double" and call.session_id == "sess-1"
            assert json.loads(call.parameters["x"].value) == 21
            resp = execute(stub, "call_host", "sess-1", name="nope")
            assert not resp.success and "not_found" in json.loads(resp.error_message)["message"]

            # the host's own session RPCs on the worker reach the host, as through the bridge
            stub.InitializeSession(pb.InitializeSessionRequest(session_id="sess-2"), timeout=10)
            assert "sess-2" in host.sessions
            beat = stub.Heartbeat(pb.HeartbeatRequest(session_id="sess-2"), timeout=10)
            assert beat.session_valid
            assert stub.GetSession(pb.GetSessionRequest(session_id="sess-2"),
                                   timeout=10).session_id == "sess-2"
            stub.CleanupSession(pb.CleanupSessionRequest(session_id="sess-2"), timeout=10)
            assert "sess-2" not in host.sessions
            with pytest.raises(grpc.RpcError) as info:
                stub.GetSession(pb.GetSessionRequest(session_id="sess-2"), timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND

        # SIGTERM: a clean stop
        proc.send_signal(signal.SIGTERM)
        code, out = ended(proc)
        assert code == 0, out
    finally:
        server.stop(None)


def test_a_dependent_worker_exits_once_its_host_stops_answering(tmp_path: Path,
                                                                  reap: list) -> None:
    ready = tmp_path / "worker.port"
    host = FakeSnakepitHost(ready)
    host_port = free_port()
    server = start_host(host, host_port)
    proc = launch(SHOWCASE, host_port, ready)
    reap.append(proc)
    try:
        port = read_port(ready, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.BridgeServiceStub(channel)
            assert execute(stub, "ping", "worker-session").success
        assert wait_until(lambda: host.received("Heartbeat"), timeout=5)
    finally:
        server.stop(None)  # the host is gone: 2 missed beats of 200 ms + 500 ms later, so is it
    started = time.monotonic()
    code, out = ended(proc)
    assert code == 0, out
    assert time.monotonic() - started < 5
    assert "did not answer 2 heartbeats" in out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_told_to_stop_while_it_waits_for_its_host_exits_cleanly(
        tmp_path: Path, reap: list, signum: int) -> None:
    ready = tmp_path / "worker.port"
    proc = launch(SHOWCASE, free_port(), ready)  # nobody listens there
    reap.append(proc)
    time.sleep(1.0)
    assert proc.poll() is None
    proc.send_signal(signum)  # SIGINT too, as Snakepit's bridge
    code, out = ended(proc, timeout=5)
    assert code == 0, out
    assert not ready.exists()


def test_snakepit_flags_that_cannot_work_exit_2(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "runtime.worker", "--adapter", SHOWCASE]
    env = {k: v for k, v in os.environ.items()
           if k not in ("SNAKEPIT_GRPC_ADDRESS", "SNAKEPIT_ELIXIR_ADDRESS")}
    no_host = subprocess.run([*base, "--port", "0"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
    assert no_host.returncode == 2 and "--elixir-address" in no_host.stderr
    unknown = subprocess.run([*base, "--port", "0", "--elixir-address", "127.0.0.1:1",
                              "--no-such-flag", "x"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
    assert unknown.returncode == 2 and "--no-such-flag" in unknown.stderr


@pytest.mark.skipif(not (BRIDGE / "snakepit_bridge" / "base_adapter.py").is_file(),
                    reason=f"Snakepit's Python bridge is not at {BRIDGE}: no Snakepit adapter")
def test_a_snakepit_adapter_in_pit_s_worker_serves_a_snakepit_host(tmp_path: Path,
                                                                   reap: list) -> None:
    ready = tmp_path / "worker.port"
    host = FakeSnakepitHost(ready)
    host_port = free_port()
    server = start_host(host, host_port)
    proc = launch(MODERN, host_port, ready, extra_env={"PYTHONPATH": str(BRIDGE)})
    reap.append(proc)
    try:
        port = read_port(ready, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.BridgeServiceStub(channel)
            resp = execute(stub, "scale", "s", x=2.5, factor=4)
            assert resp.success and json.loads(resp.result.value) == 10.0
            # its context lists the host's tools and calls one, as in Snakepit
            resp = execute(stub, "via_host", "s", name="double", payload={"x": 5})
            assert json.loads(resp.result.value) == {"listed": ["double"], "result": 10}
            assert host.received("GetExposedElixirTools")
            resp = execute(stub, "over_quota", "s", used=11)
            assert json.loads(resp.error_message)["type"] == "QuotaExceeded"
            (reg,) = host.received("RegisterTools")
            assert {"scale", "via_host", "countdown"} <= {t.name for t in reg.tools}
            assert reg.tools[0].metadata["adapter_class"] == "ModernAdapter"
        proc.send_signal(signal.SIGTERM)
        assert ended(proc)[0] == 0
    finally:
        server.stop(None)


def test_pit_s_own_host_runs_pit_s_worker_the_snakepit_way() -> None:
    """A pit pool of Snakepit bridge workers (worker = "snakepit", issue 15 A) whose command
    is pit's worker: each side speaks only Snakepit's launch contract to the other."""
    with Pool(worker="snakepit", command=[sys.executable, "-m", "runtime.worker"],
              adapter=SHOWCASE, size=1) as pool:
        (pid,) = pool.pids()
        cmd = psutil.Process(pid).cmdline()
        assert "--port" in cmd and "--listen" not in cmd and "--host-pid" not in cmd
        assert pool.execute("add", {"a": 2, "b": 3}) == 5
        assert [c["i"] for c in pool.stream("stream_count", {"n": 3})] == [1, 2, 3]
        with pool.session() as s:
            assert [s.execute("session_counter")["count"] for _ in range(2)] == [1, 2]
        with pytest.raises(RemoteError) as info:
            pool.execute("fail", {"message": "kept"})
        assert info.value.remote_type == "ValueError" and "kept" in str(info.value)
