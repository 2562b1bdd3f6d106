"""`pit run`, driven as a user would: a real `pit` process running a real script."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtime.control.client import find_instance, get_status
from snakecli.app import app
from snakecli.exit_codes import EXIT_CODES
from snakecli.run_cmd import EXIT_INTERRUPTED, EXIT_TERMINATED
from tests.conftest import ROOT, pid_alive, wait_until

PIT = [sys.executable, "-m", "snakecli"]


def pit(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run([*PIT, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_quickstart_runs_and_leaves_no_worker(tmp_path: Path) -> None:
    out = pit("run", str(ROOT / "examples" / "quickstart.py"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "add: 42" in out.stdout and "host tool: hello worker" in out.stdout
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("workers answering"))
    pids = [int(p) for p in line.split("(")[1].rstrip(")").split(", ")]
    assert pids and not any(pid_alive(p) for p in pids)
    assert out.stderr == ""  # quiet by default


def test_user_adapter_from_pit_toml_and_script_args(tmp_path: Path) -> None:
    write(tmp_path / "myadapters.py", """
        from runtime import Adapter, tool

        class Greeter(Adapter):
            def initialize(self):
                self.greeting = "hello"

            @tool
            def greet(self, name: str) -> str:
                return f"{self.greeting} {name}"
    """)
    write(tmp_path / "pit.toml", """
        [pools.greeters]
        adapter = "myadapters:Greeter"
        size = 2
    """)
    write(tmp_path / "main.py", """
        import sys, runtime
        pool = runtime.current_pools()["greeters"]
        print(runtime.execute("greet", {"name": sys.argv[1]}))
        print(*pool.pids())
    """)
    out = pit("run", "main.py", "world", "--flag", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    greeting, pids = out.stdout.splitlines()
    assert greeting == "hello world"
    assert not any(pid_alive(int(p)) for p in pids.split())


def test_exit_codes_follow_the_script(tmp_path: Path) -> None:
    write(tmp_path / "ok.py", "print('fine')\n")
    write(tmp_path / "exits.py", "import sys\nsys.exit(3)\n")
    write(tmp_path / "raises.py", "def f():\n    raise RuntimeError('kaput')\nf()\n")
    assert pit("run", "ok.py", cwd=tmp_path).returncode == 0
    assert pit("run", "exits.py", cwd=tmp_path).returncode == 3
    out = pit("run", "raises.py", cwd=tmp_path)
    assert out.returncode == 1
    assert "RuntimeError: kaput" in out.stderr and "raises.py" in out.stderr
    assert "run_cmd.py" not in out.stderr  # the traceback starts in the user's script


def test_pool_selection_and_bad_config(tmp_path: Path) -> None:
    write(tmp_path / "pit.toml", "[pools.a]\nsize = 1\n[pools.b]\nsize = 1\n")
    write(tmp_path / "which.py", "import runtime\nprint(sorted(runtime.current_pools()))\n")
    out = pit("run", "--pool", "b", "which.py", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "['b']"
    out = pit("run", "--pool", "zzz", "which.py", cwd=tmp_path)
    assert out.returncode == 2 and "no pool named 'zzz'" in out.stderr
    write(tmp_path / "pit.toml", "[pools.a]\nsize = -1\n")
    out = pit("run", "which.py", cwd=tmp_path)
    assert out.returncode == 2 and "size = -1 is invalid" in out.stderr
    assert "Traceback" not in out.stderr


def test_worker_start_failure_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "pit.toml", '[pools.a]\nadapter = "nowhere:Nothing"\nsize = 1\n')
    write(tmp_path / "s.py", "print('never')\n")
    out = pit("run", "s.py", cwd=tmp_path)
    assert out.returncode == 5
    assert "No module named 'nowhere'" in out.stderr and "never" not in out.stdout


def test_missing_script(tmp_path: Path) -> None:
    out = pit("run", "nope.py", cwd=tmp_path)
    assert out.returncode == 2 and "does not exist" in out.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_shut_down_gracefully(tmp_path: Path, sig: int, code: int) -> None:
    write(tmp_path / "wait.py", """
        import time, runtime
        print(*runtime.current_pools().default().pids(), flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*PIT, "run", "wait.py"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]  # type: ignore[union-attr]
        assert pids
        started = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == code
        assert time.monotonic() - started < 10
        assert wait_until(lambda: not any(pid_alive(p) for p in pids))
    finally:
        proc.kill()



def test_a_second_sigterm_while_closing_does_not_break_the_close(tmp_path: Path) -> None:
    """`pit stop` twice, or a kill during the drain: the second SIGTERM raised in pit's own
    close, which ended with a traceback and exit 1 instead of 143, its workers not stopped."""
    write(tmp_path / "busy.py", """
        import time, runtime
        pool = runtime.current_pools().default()
        pool.submit("sleep", {"ms": 30_000})  # the close drains it (shutdown grace)
        while not any(w.in_flight for w in pool.stats().workers):
            time.sleep(0.01)
        try:
            print(*pool.pids(), flush=True)
            time.sleep(60)
        finally:
            print("closing", flush=True)
    """)
    # the drain outlasts a status poll (the call in flight outlives it), and no more
    (tmp_path / "pit.toml").write_text("[pools.default]\nshutdown_grace_ms = 3000\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*PIT, "run", "busy.py"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids
        host = find_instance(None)
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline() == "closing\n"
        assert wait_until(lambda: any(  # pit's close has begun: it drains the call
            w["state"] == "draining" for p in get_status(host)["pools"] for w in p["workers"]))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == EXIT_TERMINATED, err
        assert "Traceback" not in err, err
        assert wait_until(lambda: not any(pid_alive(p) for p in pids))
    finally:
        proc.kill()


def test_help_explains_run() -> None:
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    assert "--pool" in result.output and "Exit codes" in result.output


def documented_exit_codes(text: str) -> set[int]:
    """The codes of an "Exit codes: the script's own; 1 ...; 2 ..." paragraph."""
    para = " ".join(text.split("Exit codes:", 1)[1].split())
    return {int(n) for n in re.findall(r"(?:^|[;,]) (\d+) ", para.split(". ")[0])}


def test_every_exit_code_of_run_is_documented_in_help_and_readme() -> None:
    # Besides the script's own: an uncaught exception, usage errors, the categories the CLI
    # maps a start-up failure to, and the two signals.
    produced = {1, 2, *EXIT_CODES.values(), EXIT_INTERRUPTED, EXIT_TERMINATED}
    assert 4 in produced  # EnvironmentProblem (test_environment_failure_exits_4)
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "100"})
    assert documented_exit_codes(result.output) == produced
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## `pit run`", 1)[1].split("\n## ", 1)[0]
    assert documented_exit_codes(section) == produced


def test_environment_failure_exits_4(tmp_path: Path) -> None:
    write(tmp_path / "pit.toml", '[pools.a]\npython = "3.99"\n')  # no such interpreter
    write(tmp_path / "s.py", "print('never')\n")
    out = pit("run", "s.py", cwd=tmp_path)
    assert out.returncode == 4, out.stderr
    assert "error (environment)" in out.stderr and "'3.99'" in out.stderr
    assert "never" not in out.stdout


def test_custom_example_with_a_user_adapter() -> None:
    out = pit("run", "main.py", cwd=ROOT / "examples" / "custom")
    assert out.returncode == 0, out.stderr
    assert "counts: [['quick', 2], ['brown', 1]]" in out.stdout
    assert "pools: ['text']" in out.stdout


def test_no_wait_still_serves_calls(tmp_path: Path) -> None:
    write(tmp_path / "s.py", "import runtime\nprint(runtime.execute('add', {'a': 1, 'b': 1}))\n")
    out = pit("run", "--no-wait", "s.py", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "2", out.stderr


def test_one_pool_failing_does_not_stop_the_others(tmp_path: Path) -> None:
    write(tmp_path / "pit.toml", """
        [pools.good]
        size = 1
        [pools.broken]
        adapter = "nowhere:Nothing"
        size = 1
    """)
    write(tmp_path / "s.py", """
        import runtime
        pools = runtime.current_pools()
        print(pools["good"].execute("add", {"a": 1, "b": 2}))
        try:
            pools["broken"].execute("ping")
        except runtime.PoolNotReady as exc:
            print("not ready:", exc.category, "No module named 'nowhere'" in str(exc))
    """)
    out = pit("run", "s.py", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["3", "not ready: pool_not_ready True"]
    assert "pool 'broken' did not start" in out.stderr


def test_log_levels_show_worker_output_and_redact_arguments(tmp_path: Path) -> None:
    write(tmp_path / "chatty.py", """
        from runtime import Adapter, tool

        class Chatty(Adapter):
            @tool
            def login(self, user: str, password: str) -> str:
                print(f"logging in {user}", flush=True)
                return "ok"
    """)
    write(tmp_path / "pit.toml", """
        [pools.default]
        adapter = "chatty:Chatty"
        size = 1
    """)
    write(tmp_path / "main.py", """
        import runtime
        print(runtime.execute("login", {"user": "bob", "password": "hunter2"}))
    """)
    default = pit("run", "main.py", cwd=tmp_path)  # worker output copied, nothing else
    assert default.returncode == 0 and default.stdout == "ok\n"
    assert default.stderr == "[default/worker-1] logging in bob\n"
    quiet = pit("run", "--quiet-workers", "main.py", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout == "ok\n" and quiet.stderr == ""
    loud = pit("--log-level", "error,worker=debug,pool=debug", "run", "main.py", cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert "pit DEBUG pit.worker: [default/worker-1] logging in bob" in loud.stderr
    assert loud.stderr.count("logging in bob") == 1  # the debug log shows it: not copied too
    assert "call login({'user': 'bob', 'password': ***})" in loud.stderr
    assert "hunter2" not in loud.stderr
    bad = pit("--log-level", "pool=loud", "run", "main.py", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown log level 'loud'" in bad.stderr
