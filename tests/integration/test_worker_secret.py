"""A worker listening on TCP with a secret (as a Ray-placed worker does) serves only RPCs
that carry it: a missing or wrong secret is refused with UNAUTHENTICATED before the servicer
runs, and such a worker refuses to start without one. With --tls, gRPC and the lane are served
over TLS only, to clients that trust the CA that issued its certificate (for a name, which
the client must be told)."""

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

from runtime.protocol import pb, pb_grpc, secret, shm, tls
from tests.conftest import wait_until
from tests.tls_support import SERVER_NAME, Certs, make_certs

SAMPLE = "tests.adapters.sample:SampleAdapter"


def _worker(tmp_path: Path, env_secret: str | None,
            lane: tuple[str, ...] = ("--no-call-lane",),
            tls_env: dict[str, str] | None = None, adapter: str = SAMPLE,
            args: tuple[str, ...] = (), **extra_env: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **extra_env}
    for name in (secret.ENV, tls.ENV_CERT, tls.ENV_KEY):
        env.pop(name, None)
    if env_secret is not None:
        env[secret.ENV] = env_secret
    env.update(tls_env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "runtime.worker", "--adapter", adapter, *args,
         "--listen", "127.0.0.1:0", "--ready-file", str(tmp_path / "ready.json"),
         "--host-pid", str(os.getpid()), "--require-secret", *lane,
         *(["--tls"] if tls_env is not None else [])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _ready(proc: subprocess.Popen[bytes], tmp_path: Path) -> dict[str, Any]:
    ready = tmp_path / "ready.json"
    assert wait_until(lambda: ready.exists() or proc.poll() is not None, timeout=60)
    assert proc.poll() is None, proc.communicate()[0].decode()
    return dict(json.loads(ready.read_text()))


@pytest.fixture
def guarded_worker(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The ready JSON of a worker guarded by the secret "s3cret" (its lane on TCP too)."""
    proc = _worker(tmp_path, "s3cret", ("--lane-socket", "tcp:127.0.0.1:0"))
    try:
        info = _ready(proc, tmp_path)
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
    from runtime.pool.lane_wire import lane_call, request_frame

    host, _, port = address[4:].rpartition(":")
    req = pb.ExecuteToolRequest(tool_name="record")
    req.parameters["tag"].value = b'"x"'
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(hello + request_frame([lane_call(1, req, 10.0)]))
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
        return list(_ready(proc, tmp_path)["features"])
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


# --- TLS (--tls) -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_worker(tmp_path: Path, certs: Certs) -> Iterator[dict[str, Any]]:
    """The ready JSON of a worker guarded by the secret "s3cret", on TLS (gRPC and lane)."""
    worker_tls, _ = tls.read_pool_tls(certs.table(), "test")
    proc = _worker(tmp_path, "s3cret", ("--lane-socket", "tcp:127.0.0.1:0"), worker_tls.env())
    try:
        yield _ready(proc, tmp_path)
    finally:
        proc.kill()
        proc.wait()


def _tls_ping(address: str, host: tls.HostTls) -> grpc.StatusCode:
    """Ping over TLS trusting ``host``'s CA, with the secret."""
    with grpc.secure_channel(address, host.channel_credentials(),
                             options=host.channel_options()) as channel:
        stub = secret.SecretStub(pb_grpc.BridgeServiceStub(channel), "s3cret")
        try:
            stub.Ping(pb.PingRequest(message="x"), timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()


class _LaneOwner:
    """What the host's Lane needs of its worker (`lane.LaneWorker`), without a pool."""

    id, pid, exit_reason, served, errors, avg_ms = "tls-1", None, "", 0, 0, 0.0

    def slot_freed(self) -> None:
        pass

    def lane_unavailable(self) -> None:
        pass

    def kill_stuck(self, req: Any) -> None:
        pass

    async def wait_exit(self) -> None:
        pass


async def _host_lane_calls(lane_address: str, host: tls.HostTls, n: int) -> tuple[list, bool]:
    """``n`` calls through the host's own lane (`pool.lane.Lane`) over TLS; their answers, and
    whether the worker ended the connection after the lane was closed (frames.END)."""
    import asyncio

    from runtime.pool.lane import Lane

    lane = await Lane.open(_LaneOwner(), None, 1 << 24, lane_address,  # type: ignore[arg-type]
                           "s3cret", host)
    assert lane.kind == "socket"
    loop = asyncio.get_running_loop()
    answers = []
    for i in range(n):
        done: asyncio.Future[Any] = loop.create_future()
        req = pb.ExecuteToolRequest(tool_name="record")
        req.parameters["tag"].value = json.dumps(f"t{i}").encode()
        lane.send(req, 30.0, lambda v, e, f=done: f.set_result((v, e)))
        resp, err = await asyncio.wait_for(done, 60)
        assert err is None and resp.success, (err, resp)
        answers.append(json.loads(resp.result.value))
    await lane.close()
    return answers, await lane.wait_reader(60)


def test_a_tls_worker_serves_a_client_that_trusts_its_ca_on_grpc_and_on_the_lane(
        tls_worker: dict[str, Any], certs: Certs) -> None:
    import asyncio

    host = tls.HostTls(certs.ca.read_bytes(), SERVER_NAME)
    assert _tls_ping(tls_worker["address"], host) == grpc.StatusCode.OK
    lane = tls_worker["lane_socket"]
    assert lane.startswith("tcp:127.0.0.1:") and not lane.endswith(":0")
    answers, ended = asyncio.run(_host_lane_calls(lane, host, 3))
    assert answers == [1, 2, 3]  # record counts the calls it saw
    assert ended  # END (TLS cannot half-close) ended the worker's side of the connection


def test_a_tls_worker_of_the_thread_profile_answers_many_calls_in_flight(
        tmp_path: Path, certs: Certs) -> None:
    """The thread profile reads a lane connection's calls on one thread and writes results
    on another: over TLS that goes through `SerialTls` (one SSL call at a time)."""
    import asyncio

    from runtime.pool.lane import Lane

    async def calls(address: str, host: tls.HostTls, n: int) -> list[Any]:
        lane = await Lane.open(_LaneOwner(), None, 1 << 24, address,  # type: ignore[arg-type]
                               "s3cret", host)
        loop = asyncio.get_running_loop()
        futures = []
        for _ in range(n):
            done: asyncio.Future[Any] = loop.create_future()
            req = pb.ExecuteToolRequest(tool_name="nap")
            req.parameters["ms"].value = b"0.2"
            lane.send(req, 60.0, lambda v, e, f=done: f.set_result((v, e)))
            futures.append(done)
        answers = await asyncio.wait_for(asyncio.gather(*futures), 120)
        await lane.close()
        assert await lane.wait_reader(60)
        return answers

    worker_tls, host = tls.read_pool_tls(certs.table(), "test")
    proc = _worker(tmp_path, "s3cret", ("--lane-socket", "tcp:127.0.0.1:0"), worker_tls.env(),
                   adapter="tests.adapters.sample:ThreadedAdapter", args=("--threads", "4"))
    try:
        ready = _ready(proc, tmp_path)
        answers = asyncio.run(calls(ready["lane_socket"], host, 500))
    finally:
        proc.kill()
        proc.wait()
    assert all(err is None and resp.success for resp, err in answers), answers[:3]
    assert max(json.loads(resp.result.value)["peak"] for resp, _ in answers) > 1  # in parallel


def test_a_tls_worker_refuses_plaintext_clients(tls_worker: dict[str, Any]) -> None:
    assert _ping(tls_worker["address"], ((secret.HEADER, "s3cret"),)) == \
        grpc.StatusCode.UNAVAILABLE
    assert _lane_call(tls_worker["lane_socket"], secret.lane_hello("s3cret")) == b""


def test_a_tls_worker_is_refused_by_a_client_that_trusts_another_ca_or_another_name(
        tls_worker: dict[str, Any], certs: Certs) -> None:
    import asyncio

    from runtime.errors import WorkerStartError

    address, lane = tls_worker["address"], tls_worker["lane_socket"]
    for host in (tls.HostTls(certs.other_ca.read_bytes(), SERVER_NAME),
                 tls.HostTls(certs.ca.read_bytes(), "")):  # 127.0.0.1 is not in its certificate
        assert _tls_ping(address, host) == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(WorkerStartError, match="TLS on its call lane") as info:
            asyncio.run(_host_lane_calls(lane, host, 1))
        assert "tls.server_name" in (info.value.hint or "")
    # the worker still serves one that trusts its CA and knows its name
    assert _tls_ping(address, tls.HostTls(certs.ca.read_bytes(), SERVER_NAME)) == \
        grpc.StatusCode.OK


def test_a_worker_told_to_use_tls_does_not_start_without_its_certificate(
        tmp_path: Path) -> None:
    proc = _worker(tmp_path, "s3cret", tls_env={})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert tls.ENV_CERT.encode() in out
    assert not (tmp_path / "ready.json").exists()
