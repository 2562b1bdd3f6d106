"""The worker process on its own: command line, ready file, plain Snakepit RPCs, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import runtime
from runtime import Pool
from runtime.protocol import codec, pb, pb_grpc
from tests.conftest import ROOT

SHOWCASE = "runtime.adapters.showcase:ShowcaseAdapter"


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, dict]]:
    sock, ready = tmp_path / "w.sock", tmp_path / "w.ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "runtime.worker", "--adapter", SHOWCASE,
                             "--listen", f"unix:{sock}", "--ready-file", str(ready),
                             "--run-id", "r1", "--instance-token", "t1"], cwd=ROOT)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "worker did not start"
        time.sleep(0.01)
    yield proc, f"unix:{sock}", json.loads(ready.read_text())
    proc.kill()
    proc.wait()


def test_ready_file_describes_the_worker(worker) -> None:  # noqa: ANN001
    proc, address, info = worker
    assert info["pid"] == proc.pid and info["address"] == address
    assert info["protocol"].startswith("snakepit.bridge/") and "call_lane" in info["features"]
    assert "ping" in {t["name"] for t in info["tools"]}


def test_plain_snakepit_rpcs(worker) -> None:  # noqa: ANN001
    _, address, _ = worker
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.BridgeServiceStub(channel)
        assert stub.Ping(pb.PingRequest(message="hi"), timeout=5).message == "pong: hi"
        init = stub.InitializeSession(pb.InitializeSessionRequest(session_id="s"), timeout=5)
        assert init.success and "add" in init.available_tools
        req = pb.ExecuteToolRequest(tool_name="add", session_id="s")
        codec.encode_params(req, {"a": 2, "b": 3})
        resp = stub.ExecuteTool(req, timeout=5)
        assert resp.success and resp.result.type_url.endswith("snakepit.integer")
        assert codec.decode_result(resp) == 5
        bad = stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="nope"), timeout=5)
        assert not bad.success and "unknown tool 'nope'" in bad.error_message
        req = pb.ExecuteToolRequest(tool_name="stream_count", stream=True)
        codec.encode_params(req, {"n": 2})
        chunks = list(stub.ExecuteStreamingTool(req, timeout=5))
        assert [c.chunk_id for c in chunks] == ["stream_count-1", "stream_count-2",
                                                "stream_count-3"]
        assert [c.is_final for c in chunks] == [False, False, True]
        req = pb.ExecuteToolRequest(tool_name="fail", stream=True)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ExecuteStreamingTool(req, timeout=5))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert json.loads(info.value.details())["type"] == "ValueError"
        cleaned = stub.CleanupSession(pb.CleanupSessionRequest(session_id="s"), timeout=5)
        assert cleaned.success


def test_a_burst_of_sigterm_stops_the_worker_cleanly(worker) -> None:  # noqa: ANN001
    proc, _, _ = worker
    for _ in range(50):
        os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_health_check() -> None:
    ok = subprocess.run([sys.executable, "-m", "runtime.worker", "--health-check",
                         "--adapter", SHOWCASE], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    bad = subprocess.run([sys.executable, "-m", "runtime.worker", "--health-check",
                          "--adapter", "nope.mod:X"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and "No module named 'nope'" in json.loads(bad.stdout)["error"]


def test_host_falls_back_to_unary_calls_for_a_worker_without_the_lane(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.pool import worker_process

    argv = worker_process.WorkerProcess.argv
    monkeypatch.setattr(worker_process.WorkerProcess, "argv",
                        lambda self: [*argv(self), "--no-call-lane"])
    with Pool(size=1) as pool:
        assert pool.stats().workers[0].lane == "unary"
        assert pool.execute("add", {"a": 1, "b": 2}) == 3
        with pytest.raises(runtime.RemoteError, match="boom"):
            pool.execute("fail", {"message": "boom"})
        with pytest.raises(runtime.CallTimeout):
            pool.execute("sleep", {"ms": 5_000}, timeout=0.3)
        assert pool.execute("ping", timeout=5)["pong"] is True
