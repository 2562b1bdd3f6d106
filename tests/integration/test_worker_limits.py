"""A worker bounds what a client can make it hold: sessions, frame buffers, bad frames."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from runtime.protocol import codec, frames, pb, pb_grpc
from tests.conftest import ROOT, wait_until

SHOWCASE = "runtime.adapters.showcase:ShowcaseAdapter"


class Worker:
    def __init__(self, tmp: Path) -> None:
        self.sock, self.lane, ready = tmp / "w.sock", tmp / "w.lane", tmp / "w.ready.json"
        self.log = tmp / "w.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runtime.worker", "--adapter", SHOWCASE,
                 "--listen", f"unix:{self.sock}", "--ready-file", str(ready),
                 "--lane-socket", str(self.lane), "--run-id", "r1", "--instance-token", "t1",
                 "--max-sessions", "50", "--session-ttl", "1"],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, "no start"
            time.sleep(0.01)
        self.info = json.loads(ready.read_text())
        self.channel = grpc.insecure_channel(f"unix:{self.sock}")
        self.stub = pb_grpc.BridgeServiceStub(self.channel)

    def lane_call(self) -> int:
        """One `add` call over a fresh lane socket connection; returns its result."""
        req = pb.ExecuteToolRequest(tool_name="add")
        codec.encode_params(req, {"a": 2, "b": 3})
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(self.lane))
            conn.sendall(frames.encode(pb.LaneRequest(calls=[pb.LaneCall(call_id=1,
                                                                        request=req)])))
            conn.shutdown(socket.SHUT_WR)
            (resp,) = frames.read_messages(conn, pb.LaneResponse.FromString, 1 << 20)
        return codec.decode_result(resp.results[0].response)

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    w = Worker(tmp_path)
    yield w
    w.channel.close()
    w.proc.kill()
    w.proc.wait()


def _open(w: Worker, sid: str) -> grpc.StatusCode | None:
    try:
        w.stub.InitializeSession(pb.InitializeSessionRequest(session_id=sid), timeout=5)
        return None
    except grpc.RpcError as exc:
        return exc.code()


def test_sessions_are_capped_and_expire(worker: Worker) -> None:
    assert all(_open(worker, f"s{i}") is None for i in range(50))
    assert _open(worker, "one-too-many") == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _open(worker, "s7") is None  # a known one is only touched
    time.sleep(1.2)  # session_ttl: all of them unused for longer
    assert _open(worker, "fresh") is None
    got = worker.stub.GetSession(pb.GetSessionRequest(session_id="s7"), timeout=5)
    assert got.created_at.seconds == 0  # forgotten
    got = worker.stub.GetSession(pb.GetSessionRequest(session_id="fresh"), timeout=5)
    assert got.created_at.seconds > 0


def test_a_huge_frame_header_allocates_nothing_before_its_body(worker: Worker) -> None:
    proc = psutil.Process(worker.proc.pid)
    before = proc.memory_info().vms
    conns = []
    for _ in range(2):  # two connections, each announcing 400 MiB and sending 1 KiB
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(str(worker.lane))
        conn.sendall(struct.pack("<I", 400 << 20) + b"x" * 1024)
        conns.append(conn)
    time.sleep(0.5)
    grown = proc.memory_info().vms - before
    for conn in conns:
        conn.close()
    # Each connection thread reserves a stack and a malloc arena (~72 MiB virtual); reading
    # the announced length up front reserved 400 MiB more per connection.
    assert grown < 300 << 20, f"{grown >> 20} MiB more virtual memory"
    assert worker.lane_call() == 5


def test_a_garbage_frame_closes_its_connection_with_one_line(worker: Worker) -> None:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(worker.lane))
        conn.sendall(struct.pack("<I", 8) + b"\xff" * 8)
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(100) == b""  # the worker closed it
    assert wait_until(lambda: "call lane closed" in worker.output())
    assert "not a valid message" in worker.output()
    assert "Traceback" not in worker.output()
    assert worker.lane_call() == 5
    assert worker.stub.Ping(pb.PingRequest(message="x"), timeout=5).message == "pong: x"
