"""The worker's side of Snakepit's launch contract (runtime/worker/snakepit_launch.py) and its
heartbeats to the host (runtime/worker/snakepit_servicer.HostHeartbeat), without processes."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from runtime.worker import snakepit_launch as sl
from runtime.worker.main import parse_args
from runtime.worker.snakepit_servicer import HostHeartbeat
from tests.conftest import wait_until

ADAPTER = ["--adapter", "runtime.adapters.showcase.ShowcaseAdapter"]


def snakepit_argv(*extra: str) -> list[str]:
    return [*ADAPTER, "--port", "0", "--elixir-address", "127.0.0.1:50051",
            "--snakepit-run-id", "r1", "--snakepit-instance-name", "app",
            "--snakepit-instance-token", "t1", *extra]


def test_pit_s_own_launch_is_not_a_snakepit_one() -> None:
    ns = parse_args([*ADAPTER, "--listen", "unix:/tmp/w.sock"])
    assert sl.launch(ns, {"SNAKEPIT_GRPC_ADDRESS": "127.0.0.1:1"}) is None
    assert ns.listen == "unix:/tmp/w.sock" and ns.host_address is None


def test_the_snakepit_flags_map_onto_the_worker_s_own() -> None:
    ns = parse_args(snakepit_argv())
    launch = sl.launch(ns, {"SNAKEPIT_READY_FILE": "/tmp/ready", "SNAKEPIT_PROCESS_GROUP": "1"})
    assert launch is not None
    assert ns.listen == "127.0.0.1:0"  # loopback unless told otherwise
    assert ns.host_address == launch.host_address == "127.0.0.1:50051"
    assert (ns.run_id, ns.instance_token) == ("r1", "t1")
    assert launch.ready_file == "/tmp/ready" and launch.process_group
    assert launch.instance_name == "app" and launch.heartbeat == sl.HeartbeatConfig()
    assert launch.listen_address(4567) == "127.0.0.1:4567"


def test_the_listen_host_and_the_host_address_from_the_environment() -> None:
    ns = parse_args([*ADAPTER, "--port", "7000", "--listen-host", "::1"])
    launch = sl.launch(ns, {"SNAKEPIT_ELIXIR_ADDRESS": "10.0.0.2:2",
                            "SNAKEPIT_GRPC_ADDRESS": "127.0.0.1:50051"})
    assert launch is not None and ns.listen == "[::1]:7000"
    assert launch.host_address == "127.0.0.1:50051"  # SNAKEPIT_GRPC_ADDRESS first
    assert not launch.process_group and launch.ready_file == ""
    ns = parse_args([*ADAPTER, "--port", "0"])
    assert sl.launch(ns, {"SNAKEPIT_ELIXIR_ADDRESS": "10.0.0.2:2"}).host_address == "10.0.0.2:2"  # type: ignore[union-attr]


@pytest.mark.parametrize(("argv", "says"), [
    ([*ADAPTER, "--port", "0"], "--elixir-address"),
    ([*ADAPTER, "--port", "0", "--elixir-address", "h:1", "--listen", "unix:/x"], "--listen"),
    ([*ADAPTER, "--port", "70000", "--elixir-address", "h:1"], "not a TCP port"),
])
def test_flags_that_cannot_work_are_refused(argv: list[str], says: str) -> None:
    with pytest.raises(sl.LaunchError, match=says):
        sl.launch(parse_args(argv), {})


def test_heartbeat_flags_with_the_host_s_json_over_them(capsys: pytest.CaptureFixture) -> None:
    ns = parse_args(snakepit_argv("--heartbeat-enabled", "--heartbeat-interval-ms", "500",
                                  "--heartbeat-max-missed", "7", "--heartbeat-independent"))
    assert sl.heartbeat_config(ns, {}) == sl.HeartbeatConfig(
        interval_ms=500, max_missed_heartbeats=7, dependent=False)
    env = {"SNAKEPIT_HEARTBEAT_CONFIG": json.dumps({
        "interval_ms": "250", "timeoutMs": 900, "dependent": "yes", "jitter_ms": 5,
        "max_missed_heartbeats": -1, "initial_delay_ms": "soon", "unknown": 1})}
    assert sl.heartbeat_config(ns, env) == sl.HeartbeatConfig(
        interval_ms=250, timeout_ms=900, max_missed_heartbeats=7, jitter_ms=5, dependent=True)
    off = {"SNAKEPIT_HEARTBEAT_CONFIG": '{"enabled": false}'}
    assert not sl.heartbeat_config(parse_args(snakepit_argv()), off).enabled
    for bad in ("{not json", "[1, 2]"):
        config = sl.heartbeat_config(ns, {"SNAKEPIT_HEARTBEAT_CONFIG": bad})
        assert config.interval_ms == 500  # the flags still count
        assert "SNAKEPIT_HEARTBEAT_CONFIG is not a JSON object" in capsys.readouterr().err


def test_the_host_is_pinged_until_it_answers_with_doubling_pauses() -> None:
    pauses: list[float] = []
    tries: list[str] = []

    def ping(address: str, timeout: float) -> None:
        tries.append(address)
        if len(tries) < 4:
            raise ConnectionRefusedError("not yet")

    assert sl.wait_for_host("h:1", lambda s: pauses.append(s) or False, ping) is None
    assert len(tries) == 4 and pauses == [0.05, 0.1, 0.2]
    pauses.clear()

    def never(address: str, timeout: float) -> None:
        raise ConnectionRefusedError("refused")

    last = sl.wait_for_host("h:1", lambda s: pauses.append(s) or False, never, tries=10)
    assert last == "ConnectionRefusedError: refused"
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]  # capped, none after last
    assert sl.wait_for_host("h:1", lambda s: True, never) == "ConnectionRefusedError: refused"


def test_the_port_file_is_the_decimal_port_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "ready"
    sl.write_port(str(path), 40123)
    assert path.read_bytes() == b"40123"
    assert [p.name for p in tmp_path.iterdir()] == ["ready"]


def test_a_process_group_leader_keeps_its_group(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    def eperm() -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setsid", eperm)
    sl.enter_process_group()  # tolerated: it is one already
    assert capsys.readouterr().err == ""

    def other() -> None:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "setsid", other)
    sl.enter_process_group()
    assert "process group" in capsys.readouterr().err


class _Answer:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def result(self) -> None:
        if not self.ok:
            raise grpc.RpcError()


class _Stub:
    """The host's Heartbeat as a stub's multi-callable: answers while ``up``."""

    def __init__(self) -> None:
        self.up = True
        self.sent: list[str] = []
        self.Heartbeat = self

    def future(self, request: Any, timeout: float) -> _Answer:
        self.sent.append(request.session_id)
        return _Answer(self.up)


def heartbeat(stub: _Stub, **options: Any) -> tuple[HostHeartbeat, threading.Event]:
    lost = threading.Event()
    config = sl.HeartbeatConfig(interval_ms=10, timeout_ms=10, max_missed_heartbeats=3,
                                **options)
    return HostHeartbeat(stub, "127.0.0.1:1", config, lost.set), lost


def test_sessions_are_beaten_and_a_lost_host_stops_a_dependent_worker(
        capsys: pytest.CaptureFixture) -> None:
    stub = _Stub()
    beats, lost = heartbeat(stub)
    beats.watch("a")
    beats.watch("b")
    assert wait_until(lambda: {"a", "b"} <= set(stub.sent), timeout=5)
    beats.forget("b")
    stub.up = False
    assert lost.wait(5)
    assert "did not answer 3 heartbeats in a row" in capsys.readouterr().err
    sent = len(stub.sent)
    beats.watch("c")  # closed: nothing more is sent
    assert not wait_until(lambda: len(stub.sent) > sent, timeout=0.1)


def test_an_independent_worker_serves_on_and_a_disabled_one_never_beats(
        capsys: pytest.CaptureFixture) -> None:
    stub = _Stub()
    stub.up = False
    beats, lost = heartbeat(stub, dependent=False)
    beats.watch("a")
    assert wait_until(lambda: len(stub.sent) >= 6, timeout=5)
    assert not lost.is_set()
    assert capsys.readouterr().err.count("serving on (heartbeat independent)") == 1
    beats.close()
    idle = _Stub()
    off, _ = heartbeat(idle, enabled=False)
    off.watch("a")
    assert not wait_until(lambda: idle.sent, timeout=0.1)
