"""`pit call` (a fresh pool, or a running host's with --instance) and `pit stop`, driven as a
user would: real `pit` processes, real hosts and workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import runtime
from runtime.control.client import find_instance, stop
from runtime.control.server import handles_sigterm
from snakecli.app import app
from tests.conftest import ROOT, pid_alive

PIT = [sys.executable, "-m", "snakecli"]
runner = CliRunner()


def pit(*args: str, cwd: Path) -> Result:
    """`pit ARGS` run in ``cwd`` (in this process: CliRunner)."""
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return runner.invoke(app, list(args), env={"NO_COLOR": "1", "COLUMNS": "200"})
    finally:
        os.chdir(old)


def test_call_runs_one_call_on_a_fresh_pool_and_prints_json(tmp_path: Path) -> None:
    out = pit("call", "default", "echo", '{"x": [1, "[/y]"], "s": "[pools.a]"}', cwd=tmp_path)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"x": [1, "[/y]"], "s": "[pools.a]"}
    assert pit("call", "default", "ping", cwd=tmp_path).exit_code == 0  # ARGS is optional


def test_call_says_what_was_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> tuple[int, str]:
        out = runner.invoke(app, ["call", *args], env={"NO_COLOR": "1", "COLUMNS": "200"})
        return out.exit_code, out.output

    code, text = call("default", "add", "{a: 1}")
    assert code == 2 and "not valid JSON" in text
    assert "'{\"a\": 1, \"b\": 2}'" in text  # ... and what to give instead
    code, text = call("default", "add", "[1, 2]")
    assert code == 2 and "not an object" in text
    code, text = call("default", "fail", '{"message": "bad [/etc/app.ini]"}')
    assert code == 1 and "ValueError: bad [/etc/app.ini]" in text
    assert "Traceback" not in text  # only with --debug
    code, text = call("nope", "add")
    assert code == 2 and "no pool named 'nope'" in text
    code, text = call("default", "add", '{"a": 1, "c": 2}')  # valid JSON, wrong arguments
    assert code == 2 and "unknown parameter 'c'" in text, text
    code, text = call("--instance", "ffffffff", "default", "ping")
    assert code == 3 and "no running instance 'ffffffff'" in text


def test_the_showcase_runs_in_the_thread_profile(tmp_path: Path) -> None:
    (tmp_path / "pit.toml").write_text(
        '[pools.default]\nsize = 1\nprofile = "thread"\nthreads_per_worker = 4\n')
    out = pit("call", "default", "add", '{"a": 2, "b": 3}', cwd=tmp_path)
    assert out.exit_code == 0, out.output  # it was refused: "not thread_safe"
    assert json.loads(out.stdout) == 5


def test_thread_profile_counts_a_sessions_calls_exactly() -> None:
    with runtime.Pool(size=1, profile="thread", threads_per_worker=8) as pool:
        with pool.session() as session:
            futures = [session.submit("session_counter") for _ in range(64)]
            counts = sorted(f.result()["count"] for f in futures)
        assert counts == list(range(1, 65))  # session_counter is thread-sensitive
        assert pool.tools() and next(t for t in pool.tools()
                                     if t["name"] == "session_counter")["thread_sensitive"]


WAITS = """
    import sys, time
    print("up", flush=True)
    try:
        time.sleep(120)
    finally:
        print("closing", flush=True)
"""


def test_call_into_a_running_host_then_stop_it(tmp_path: Path) -> None:
    (tmp_path / "waits.py").write_text(textwrap.dedent(WAITS))
    host = subprocess.Popen([*PIT, "run", "waits.py"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"})
    try:
        assert host.stdout is not None and host.stdout.readline() == "up\n"
        inst = find_instance(None)
        workers = [w["pid"] for p in pit_status(tmp_path)["pools"] for w in p["workers"]]
        assert workers and all(pid_alive(p) for p in workers)
        out = pit("call", "--instance", inst.instance_id[:4], "default", "add",
                  '{"a": 2, "b": 3}', cwd=tmp_path)
        assert out.exit_code == 0 and json.loads(out.stdout) == 5, out.output
        stopped = pit("stop", cwd=tmp_path)
        assert stopped.exit_code == 0, stopped.output
        assert stopped.stdout.strip() == (f"instance {inst.instance_id} (pid {host.pid}) "
                                          "closed its pools and exited")
        rest, err = host.communicate(timeout=60)
        assert host.returncode == 143, err  # as on SIGTERM: the script's finally ran
        assert rest == "closing\n" and "Traceback" not in err
        assert not any(pid_alive(p) for p in workers)
        assert not (tmp_path / ".pit" / "run" / inst.instance_id).exists()
        assert pit("stop", cwd=tmp_path).exit_code == 3  # no host left to stop
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()


def pit_status(cwd: Path) -> dict:
    out = pit("status", "--json", cwd=cwd)
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)[0]


def test_stop_closes_the_pools_of_a_program_that_does_not_handle_sigterm() -> None:
    if handles_sigterm():
        pytest.skip("this test process handles SIGTERM: Stop would signal it")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with runtime.Pool(size=1) as pool:
        pids = pool.pids()
        result = stop(find_instance(None))
        assert (result.outcome, result.pid, result.exited) == ("pools_closed", os.getpid(),
                                                                False)
        assert not any(pid_alive(p) for p in pids)
        with pytest.raises(runtime.PitError, match="(?i)clos|shut"):
            pool.execute("ping")


def test_stop_needs_an_instance_when_several_run_or_all(tmp_path: Path) -> None:
    if handles_sigterm():
        pytest.skip("this test process handles SIGTERM: Stop would signal it")
    with runtime.Pool(size=1) as first, runtime.Pool(size=1) as second:
        pids = first.pids() + second.pids()
        several = pit("stop", cwd=tmp_path)
        assert several.exit_code == 3 and "several running hosts" in several.output
        assert "--instance ID" in several.output and all(pid_alive(p) for p in pids)
        every = pit("stop", "--all", cwd=tmp_path)
        assert every.exit_code == 0, every.output
        assert every.output.count("closed its pools; its program keeps running") == 2
        assert not any(pid_alive(p) for p in pids)


def test_stop_says_when_a_host_runs_an_older_pit_without_stop(tmp_path: Path) -> None:
    """A host of a pit from before `pit stop` answers UNIMPLEMENTED: say that in words (as
    `pit logs` does), not gRPC's "UNIMPLEMENTED: Method not found!"."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from runtime.control.index import index_dir
    from runtime.registry import process_create_time

    old_host = grpc.server(ThreadPoolExecutor(1))  # serves nothing: no Control.Stop
    address = f"unix:{tmp_path / 'old.sock'}"
    old_host.add_insecure_port(address)
    old_host.start()
    entry = {"instance_id": "0ld0ld00", "pid": os.getpid(),
             "create_time": process_create_time(os.getpid()), "control_address": address,
             "state_dir": str(tmp_path), "config_path": None, "pools": ["default"],
             "started_at": 0.0}
    index_dir().mkdir(parents=True, exist_ok=True)
    listed = index_dir() / "0ld0ld00.json"
    listed.write_text(json.dumps(entry))
    try:
        out = pit("stop", "--instance", "0ld0ld00", cwd=tmp_path)
    finally:
        listed.unlink()
        old_host.stop(None)
    assert out.exit_code == 1, out.output
    assert "runs an older pit" in out.output and "UNIMPLEMENTED" not in out.output
    assert f"kill {os.getpid()}" in out.output
