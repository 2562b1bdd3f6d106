"""Snakepit's own, unmodified Python bridge (grpc_server.py + its showcase adapter) as the
workers of a pit pool: worker = "snakepit" (issue 15 A). Skips, saying why, when the bridge
is not beside the project or its env cannot be built."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

import runtime
from runtime import Pool
from runtime.registry import flag
from tests import bridge
from tests.conftest import ROOT, pid_alive, wait_until

PYTHON, WHY = bridge.bridge_python()
pytestmark = pytest.mark.skipif(PYTHON is None, reason=WHY)


def bridge_pool(**options: object) -> Pool:
    assert PYTHON is not None
    return Pool(worker="snakepit", command=bridge.command(PYTHON), adapter=bridge.SHOWCASE,
                **options)  # type: ignore[arg-type]


def test_the_bridge_serves_calls_streams_sessions_errors_and_timeouts(tmp_path: Path) -> None:
    with bridge_pool(size=2) as pool:
        stats = pool.stats()
        assert stats.ready == 2 and [w.lane for w in stats.workers] == ["unary", "unary"]
        for pid in pool.pids():  # launched as Snakepit launches it
            cmd = psutil.Process(pid).cmdline()
            assert cmd[1].endswith("grpc_server.py") and flag(cmd, "--adapter") == \
                bridge.SHOWCASE
            assert flag(cmd, "--snakepit-run-id") == pool.instance.id
            assert flag(cmd, "--elixir-address").startswith("127.0.0.1:")  # type: ignore
        assert pool.execute("ping", {"message": "hi"})["message"] == "hi"
        # its first call made the bridge send RegisterTools, from one of the pool's workers:
        # kept (only the bridge's @tool methods: not a list to check calls against)
        assert wait_until(lambda: pool.instance.registered_tools() != [], timeout=5)
        assert pool.execute("echo", {"x": [1, "two"]}) == {"echoed": {"x": [1, "two"]}}
        assert pool.execute("add", {"a": 1, "b": 2}) == 3
        chunks = list(pool.stream("stream_data", {"count": 3, "delay": 0.01}))
        assert [c["index"] for c in chunks] == [1, 2, 3]
        # the bridge ends a stream with an empty final chunk: the end, not an item
        assert list(pool.stream("add", {"a": 1, "b": 2})) == [3]
        with pool.session() as s:  # the showcase keeps a session's counter in its worker
            assert [s.execute("increment_counter")["value"] for _ in range(3)] == [1, 2, 3]
        with pytest.raises(runtime.RemoteError) as info:
            pool.execute("error_demo", {"error_type": "value"})
        assert info.value.remote_type == "ValueError"
        assert "demonstration ValueError" in str(info.value)
        assert "Traceback" in (info.value.remote_traceback or "")
        with pytest.raises(runtime.CallTimeout):
            pool.execute("telemetry_demo", {"delay_ms": 5000}, timeout=0.5)
        assert pool.execute("add", {"a": 2, "b": 2}, timeout=10) == 4
        # a worker killed from outside is replaced, as pit's own are
        victim = pool.pids()[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: pool.stats().ready == 2 and victim not in pool.pids(),
                          timeout=30)
        assert pool.execute("add", {"a": 1, "b": 1}) == 2
        left = pool.pids()
    assert not any(pid_alive(p) for p in left)


HOST = textwrap.dedent("""
    import sys
    from runtime import Pool
    pool = Pool(worker="snakepit", command=[sys.argv[1], sys.argv[2]], adapter=sys.argv[3],
                size=2, dependent=False).start()
    print(pool.instance.id, " ".join(map(str, pool.pids())), flush=True)
    sys.stdin.read()
""")


def test_pit_cleanup_finds_the_bridge_workers_of_a_killed_host(state_dir: Path,
                                                                tmp_path: Path) -> None:
    assert PYTHON is not None
    env = {**os.environ, "PIT_STATE_DIR": str(state_dir), "NO_COLOR": "1",
           "PYTHONPATH": str(ROOT)}
    host = subprocess.Popen([sys.executable, "-c", HOST, *bridge.command(PYTHON),
                             bridge.SHOWCASE], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    line = host.stdout.readline().split()  # type: ignore[union-attr]
    pids = [int(p) for p in line[1:]]
    try:
        assert len(pids) == 2
        host.kill()
        host.wait()
        assert all(pid_alive(p) for p in pids)  # nothing else stops them
        dry = subprocess.run([sys.executable, "-m", "snakecli", "cleanup", "--dry-run",
                              "--json"], env=env, cwd=tmp_path, capture_output=True, text=True)
        plan = json.loads(dry.stdout)
        assert sorted(int(i["target"]) for i in plan["items"] if i["kind"] == "worker") == \
            sorted(pids)
        out = subprocess.run([sys.executable, "-m", "snakecli", "cleanup"], env=env,
                             cwd=tmp_path, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=10)
    finally:
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_bridge_that_cannot_load_its_adapter_is_a_start_error() -> None:
    assert PYTHON is not None
    with pytest.raises(runtime.WorkerStartError, match="before it was ready"):
        Pool(worker="snakepit", command=bridge.command(PYTHON), adapter="no_such.Adapter",
             size=1, startup_timeout_ms=20_000).start()


def test_doctor_runs_the_bridges_own_health_check(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from snakecli.app import app

    assert PYTHON is not None
    command = json.dumps(bridge.command(PYTHON))
    (tmp_path / "pit.toml").write_text(
        f'[pools.good]\nworker = "snakepit"\ncommand = {command}\n'
        f'adapter = "{bridge.SHOWCASE}"\nsize = 1\n'
        f'[pools.bad]\nworker = "snakepit"\ncommand = {command}\n'
        'adapter = "no_such_module.Adapter"\nsize = 1\n'
        '[pools.gone]\nworker = "snakepit"\ncommand = ["/no/such/python", "grpc_server.py"]\n'
        'adapter = "a.B"\nsize = 1\n')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["doctor", "--json"], env={"NO_COLOR": "1"})
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["pool good: worker"]["status"] == "pass", checks["pool good: worker"]
    assert checks["pool bad: worker"]["status"] == "fail"
    assert "no_such_module" in checks["pool bad: worker"]["message"]
    assert checks["pool gone: worker"]["status"] == "fail"
    assert "/no/such/python" in checks["pool gone: worker"]["message"]
    assert "pool good: adapter" not in checks  # pit's worker health check does not apply
