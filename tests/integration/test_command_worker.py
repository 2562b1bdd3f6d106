"""A second kind of worker through the same pool: started by a command line, spoken to with
unary gRPC over loopback TCP, no ready file (`runtime/pool/transport.py`). The command here is
pit's own worker with the call lane off: what a Snakepit-style worker offers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import runtime
from runtime import Pool
from runtime.config import make_pool_config
from runtime.errors import ConfigError
from tests.conftest import pid_alive, wait_until

SAMPLE = "tests.adapters.sample:SampleAdapter"
COMMAND = [sys.executable, "-m", "runtime.worker", "--adapter", "{adapter}",
           "--listen", "127.0.0.1:{port}", "--no-call-lane", "--host-pid", "{host_pid}",
           "--run-id", "{run_id}", "--instance-token", "{token}"]


def test_command_workers_serve_calls_streams_sessions_timeouts_and_crashes(
        tmp_path: Path) -> None:
    with Pool(adapter=SAMPLE, size=2, worker="command", command=COMMAND) as pool:
        stats = pool.stats()
        assert [w.lane for w in stats.workers] == ["unary", "unary"]
        assert not any(w.lent for w in stats.workers)
        assert pool.execute("record", {"tag": "a"}) >= 1
        assert list(pool.stream("async_stream", {"n": 4})) == [0, 1, 2, 3]
        with pool.session() as s:  # the session's state lives in one worker
            s.execute("remember", {"item": "x"})
            got = s.execute("remember", {"item": "y"})
            assert got["items"] == ["x", "y"]
        with pytest.raises(runtime.CallTimeout):
            pool.execute("spin", {"seconds": 30}, timeout=0.5)
        assert pool.execute("record", {"tag": "after"}, timeout=10) >= 1
        with pytest.raises(runtime.InvalidArgument):
            pool.execute("record", {"nope": 1})
        pids = set(pool.pids())
        with pytest.raises(runtime.WorkerExit) as info:
            pool.execute("crash_once", {"marker": str(tmp_path / "m")})
        assert info.value.details["cause"] == "exit" and info.value.details["culprit"]
        assert wait_until(lambda: pool.stats().ready == 2, timeout=15)
        assert len(set(pool.pids()) - pids) == 1  # the dead one was replaced
        assert pool.execute("crash_once", {"marker": str(tmp_path / "m")}) == "survived"
        left = pool.pids()
    assert not any(pid_alive(p) for p in left)


def test_a_command_that_never_answers_is_a_start_error() -> None:
    command = [sys.executable, "-c", "import time, sys; print('listening on', sys.argv[1]); "
               "time.sleep(60)", "{port}"]
    with pytest.raises(runtime.WorkerStartError, match="not ready within 1 s") as info:
        Pool(size=1, worker="command", command=command, startup_timeout_ms=1000).start()
    assert "listening on" in str(info.value)


def test_the_command_and_the_kind_of_worker_are_checked_together() -> None:
    with pytest.raises(ConfigError, match=r"no \{port\} placeholder"):
        Pool(worker="command", command=[sys.executable, "-m", "runtime.worker"])
    with pytest.raises(ConfigError, match=r"worker = 'snakepit' needs a command"):
        Pool(worker="snakepit")
    with pytest.raises(ConfigError, match="needs worker = \"command\" or \"snakepit\""):
        Pool(command=COMMAND)
    with pytest.raises(ConfigError, match="older spelling"):
        Pool(worker_command=COMMAND, command=COMMAND)
    # the older spelling still works, as worker = "command"
    config = make_pool_config(worker_command=COMMAND)
    assert (config.worker, config.command) == ("command", tuple(COMMAND))


def test_only_a_listener_in_the_started_process_tree_counts() -> None:
    import socket
    import subprocess

    from runtime.pool.transport import free_port, listens_in_tree

    port = free_port()
    script = (f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); "
              "s.listen(); print('up', flush=True); time.sleep(30)")
    # the listener is a grandchild (a wrapper shell starts it), as with `sh -c` or `uv run`
    proc = subprocess.Popen(["/bin/sh", "-c", f'"{sys.executable}" -c "{script}"; exit 0'],
                            stdout=subprocess.PIPE, text=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        assert listens_in_tree(proc.pid, port)
        assert not listens_in_tree(bystander.pid, port)  # the port is someone else's
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            assert not listens_in_tree(proc.pid, other.getsockname()[1])
    finally:
        bystander.kill()
        bystander.wait()
        subprocess.run(["pkill", "-f", f"'127.0.0.1', {port}"], check=False)
        proc.kill()
        proc.wait()


def test_pickle_is_refused_with_a_command_started_worker() -> None:
    with pytest.raises(ConfigError, match="allow_pickle cannot be used with worker = 'command'"):
        Pool(worker="command", command=COMMAND, allow_pickle=True)


def test_a_worker_on_tcp_never_opens_shared_memory_a_caller_names(tmp_path: Path) -> None:
    # Any local user can reach a TCP port: a call naming another process's arena must not
    # make the worker read (or write) it with its owner's rights.
    import os
    import uuid

    import grpc
    import psutil

    from runtime.protocol import codec, pb, pb_grpc, shm

    victim = f"{shm.PREFIX}test-victim-{uuid.uuid4().hex[:8]}"
    Path(victim).write_bytes(b"TOP-SECRET-ARENA")
    try:
        with Pool(adapter=SAMPLE, size=1, worker="command", command=COMMAND) as pool:
            [pid] = pool.pids()
            [port] = [c.laddr.port for c in psutil.Process(pid).net_connections("tcp")
                      if c.status == psutil.CONN_LISTEN]
            req = pb.ExecuteToolRequest(tool_name="slow_echo")
            codec.encode_params(req, {"seconds": 0})
            req.metadata[shm.ARG + "data"] = f"{victim}:0:16"
            req.metadata[shm.OUT] = f"{victim}:16"
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                resp = pb_grpc.BridgeServiceStub(channel).ExecuteTool(req, timeout=10)
            assert not resp.success  # the argument is missing: the path was not followed
            assert "data" in codec.decode_error(resp.error_message)["message"]
            assert pool.execute("slow_echo", {"data": b"ok", "seconds": 0}) == b"ok"
        assert Path(victim).read_bytes() == b"TOP-SECRET-ARENA"
    finally:
        os.unlink(victim)


def test_cancelling_a_call_ends_its_rpc() -> None:
    # a unary call had no way to be abandoned: Pool.cancel left it holding its slot (and its
    # RPC open) until the tool returned
    with Pool(adapter=SAMPLE, size=1, worker="command", command=COMMAND) as pool:
        fut = pool.submit("block", {"seconds": 5}, timeout=float("inf"))
        assert wait_until(lambda: pool.stats().workers[0].in_flight == 1, timeout=5)
        pool.cancel(fut)
        assert wait_until(lambda: pool.stats().workers[0].in_flight == 0, timeout=2)


def test_an_unknown_placeholder_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"\{nope\} is not a placeholder"):
        make_pool_config(worker="command", command=["w", "--port", "{port}", "{nope}"])
    with pytest.raises(ConfigError, match="command part"):
        make_pool_config(worker="snakepit", command=["python", "{unclosed"])
