"""A worker listening on TCP with a secret (as a Ray-placed worker does) serves only RPCs
that carry it: a missing or wrong secret is refused with UNAUTHENTICATED before the servicer
runs, and such a worker refuses to start without one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from runtime.protocol import pb, pb_grpc, secret, shm
from tests.conftest import wait_until

SAMPLE = "tests.adapters.sample:SampleAdapter"


def _worker(tmp_path: Path, env_secret: str | None,
            lane: tuple[str, ...] = ("--no-call-lane",),
            **extra_env: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **extra_env}
    env.pop(secret.ENV, None)
    if env_secret is not None:
        env[secret.ENV] = env_secret
    return subprocess.Popen(
        [sys.executable, "-m", "runtime.worker", "--adapter", SAMPLE,
         "--listen", "127.0.0.1:0", "--ready-file", str(tmp_path / "ready.json"),
         "--host-pid", str(os.getpid()), "--require-secret", *lane],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture
def guarded_worker(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The ready JSON of a worker guarded by the secret "s3cret" (its lane on TCP too)."""
    proc = _worker(tmp_path, "s3cret", ("--lane-socket", "tcp:127.0.0.1:0"))
    try:
        ready = tmp_path / "ready.json"
        assert wait_until(lambda: ready.exists() or proc.poll() is not None, timeout=60)
        info = json.loads(ready.read_text())
        assert info["address"].startswith("127.0.0.1:") and not info["address"].endswith(":0")
        yield info
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def guarded(guarded_worker: dict[str, Any]) -> str:
    return str(guarded_worker["address"])


def _ping(address: str, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.BridgeServiceStub(channel)
        try:
            stub.Ping(pb.PingRequest(message="x"), timeout=10, metadata=metadata)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            assert exc.code() != grpc.StatusCode.UNAUTHENTICATED or \
                "x-pit-secret" in (exc.details() or "")
            return exc.code()


def test_only_rpcs_with_the_secret_are_served(guarded: str) -> None:
    assert _ping(guarded, ()) == grpc.StatusCode.UNAUTHENTICATED
    assert _ping(guarded, ((secret.HEADER, "wrong"),)) == grpc.StatusCode.UNAUTHENTICATED
    assert _ping(guarded, ((secret.HEADER, "s3cret"),)) == grpc.StatusCode.OK


def test_a_streaming_rpc_without_the_secret_is_refused_too(guarded: str) -> None:
    with grpc.insecure_channel(guarded) as channel:
        stub = pb_grpc.BridgeServiceStub(channel)
        req = pb.ExecuteToolRequest(tool_name="async_stream")
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ExecuteStreamingTool(req, timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_worker_told_to_require_a_secret_does_not_start_without_one(
        tmp_path: Path) -> None:
    proc = _worker(tmp_path, None)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert secret.ENV.encode() in out
    assert not (tmp_path / "ready.json").exists()


def _lane_call(address: str, hello: bytes) -> bytes:
    """Open the worker's TCP lane, send ``hello`` and one ping call; what comes back."""
    from runtime.pool.lane import lane_call
    from runtime.protocol import frames

    host, _, port = address[4:].rpartition(":")
    req = pb.ExecuteToolRequest(tool_name="record")
    req.parameters["tag"].value = b'"x"'
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(hello + frames.encode(pb.LaneRequest(calls=[lane_call(1, req, 10.0)])))
        try:
            return conn.recv(65536)
        except OSError:
            return b""


def test_the_lane_on_tcp_serves_only_connections_that_open_with_the_secret(
        guarded_worker: dict[str, Any]) -> None:
    lane = guarded_worker["lane_socket"]
    assert lane.startswith("tcp:127.0.0.1:") and not lane.endswith(":0")
    assert _lane_call(lane, b"") == b""  # closed unanswered
    assert _lane_call(lane, secret.lane_hello("wrong")) == b""
    assert _lane_call(lane, secret.lane_hello("s3cret")) != b""  # the call's answer


def _features(tmp_path: Path, **extra_env: str) -> list[str]:
    proc = _worker(tmp_path, "s3cret", **extra_env)
    try:
        ready = tmp_path / "ready.json"
        assert wait_until(lambda: ready.exists() or proc.poll() is not None, timeout=60)
        return list(json.loads(ready.read_text())["features"])
    finally:
        proc.kill()
        proc.wait()
        (tmp_path / "ready.json").unlink(missing_ok=True)


@pytest.mark.skipif(not shm.available(), reason="no writable /dev/shm")
def test_a_worker_on_tcp_takes_shared_memory_only_when_it_sees_the_hosts_probe(
        tmp_path: Path) -> None:
    path = f"{shm.PREFIX}test-{os.getpid()}-w1{shm.PROBE_SUFFIX}"
    probe = shm.write_probe(path)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert "shm" not in _features(tmp_path)  # on TCP, no probe: inline only
        assert "shm" in _features(tmp_path, **{shm.PROBE_ENV: probe})
        # another /dev/shm (another machine, a container) has no such file, or another token
        wrong = probe[:-4] + ("0000" if not probe.endswith("0000") else "1111")
        assert "shm" not in _features(tmp_path, **{shm.PROBE_ENV: wrong})
        assert "shm" not in _features(tmp_path, **{shm.PROBE_ENV: "/tmp/elsewhere:" + probe[-32:]})
    finally:
        os.unlink(path)
