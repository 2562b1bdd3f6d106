"""`pit logs` against live hosts, and `pit run` copying worker output to its stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtime import Pool
from snakecli.app import app
from tests.conftest import ROOT, wait_until

PIT = [sys.executable, "-m", "snakecli"]
ENV = {"NO_COLOR": "1", "COLUMNS": "160"}
PRINTER = "tests.adapters.printer:Printer"


def pit_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}


def collect(stream: object) -> list[str]:
    """The lines of ``stream`` as they come, on a thread (read without blocking the test)."""
    lines: list[str] = []

    def read() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_logs_prints_each_workers_output_with_its_prefix() -> None:
    with Pool(adapter=PRINTER, size=2) as pool:
        pool.execute("say", {"text": "to stdout"})
        pool.execute("say", {"text": "to stderr", "err": True})
        got = CliRunner().invoke(app, ["logs"], env=ENV)
        assert got.exit_code == 0, got.output
        lines = got.output.splitlines()
        assert any(ln.startswith("[default/worker-") and ln.endswith("] to stdout")
                   for ln in lines), lines
        assert any(ln.endswith("] to stderr") for ln in lines), lines
        if sys.platform == "linux":  # where pools fork workers from a fork server: its output
            assert "[default/fork-server] preloaded in the fork server" in lines, lines
        worker = next(ln for ln in lines if ln.endswith("to stdout")).split("/")[1].split("]")[0]
        only = CliRunner().invoke(app, ["logs", "--worker", worker, "--json"], env=ENV)
        rows = [json.loads(ln) for ln in only.output.splitlines()]
        assert rows and {r["worker"] for r in rows} == {worker}
        assert {"instance", "pool", "worker", "at", "text"} <= set(rows[0])
        unknown = CliRunner().invoke(app, ["logs", "--pool", "nope"], env=ENV)
        assert unknown.exit_code == 2, unknown.output
        assert "no running host has a pool named 'nope'" in unknown.output
        assert "pools of the running hosts: default" in unknown.output
        assert "to stdout" in CliRunner().invoke(app, ["logs", "--since", "1h"],
                                                 env=ENV).output


def test_logs_refuses_a_bad_since_and_exits_3_without_a_host() -> None:
    bad = CliRunner().invoke(app, ["logs", "--since", "5x"], env=ENV)
    assert bad.exit_code == 2 and "--since '5x' is not a duration" in bad.output
    assert "30s, 5m" in bad.output
    none = CliRunner().invoke(app, ["logs"], env=ENV)
    assert none.exit_code == 3 and "no running pit host" in none.output


def test_logs_follow_shows_a_print_while_it_runs_and_stops_on_ctrl_c(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the pool must set it for workers
    with Pool(adapter=PRINTER, size=1) as pool:
        pool.execute("say", {"text": "before following"})
        proc = subprocess.Popen([*PIT, "logs", "-f"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=pit_env(),
                                stdin=subprocess.DEVNULL)
        lines = collect(proc.stdout)
        try:
            assert wait_until(lambda: "[default/worker-1] before following" in lines,
                              timeout=20), lines
            pool.execute("say", {"text": "while following"})  # printed, never flushed
            assert wait_until(lambda: "[default/worker-1] while following" in lines,
                              timeout=10), lines
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def test_a_line_longer_than_the_pipe_readers_limit_does_not_stop_the_output() -> None:
    with Pool(adapter=PRINTER, size=1) as pool:
        assert pool.execute("say_long", {"size": 200_000}) == 200_000
        got = CliRunner().invoke(app, ["logs"], env=ENV)
        assert "[default/worker-1] after the long line" in got.output.splitlines()
        assert sum(ln.count("x") for ln in got.output.splitlines()) == 200_000


SCRIPT = """
import runtime
runtime.execute("say", {"text": "hello from a tool"})
runtime.execute("say", {"text": "a warning from a tool", "err": True})
runtime.execute("log", {"text": "disk almost full"})
print("the script's own output")
"""


def test_pit_run_forwards_worker_output_to_stderr_unless_quiet(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(textwrap.dedent(SCRIPT))
    (tmp_path / "pit.toml").write_text(f'[pools.p]\nadapter = "{PRINTER}"\nsize = 1\n')

    def run(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PIT, "run", *flags, "script.py"], cwd=tmp_path, text=True,
                              capture_output=True, env=pit_env(), timeout=60,
                              stdin=subprocess.DEVNULL)

    loud = run()
    assert loud.returncode == 0, loud.stderr
    assert "[p/worker-1] hello from a tool" in loud.stderr.splitlines()
    assert "[p/worker-1] a warning from a tool" in loud.stderr.splitlines()
    # a log record keeps its level and logger (the worker's fallback handler names them)
    assert "[p/worker-1] WARNING printer.tool: disk almost full" in loud.stderr.splitlines()
    assert loud.stdout == "the script's own output\n"
    quiet = run("--quiet-workers")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert quiet.stdout == "the script's own output\n"


def test_logs_follow_ends_when_its_host_exits_and_says_so() -> None:
    pool = Pool(adapter=PRINTER, size=1)
    proc = None
    try:
        pool.start()
        pool.execute("say", {"text": "last words"})
        proc = subprocess.Popen([*PIT, "logs", "-f"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=pit_env(),
                                stdin=subprocess.DEVNULL)
        lines = collect(proc.stdout)
        assert wait_until(lambda: "[default/worker-1] last words" in lines, timeout=20), lines
        instance = pool.instance.id
        pool.close()
        proc.wait(timeout=20)  # on its own: no Ctrl-C
    finally:
        pool.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    err = proc.stderr.read() if proc.stderr else ""
    assert f"host {instance} (pid {os.getpid()}) exited or stopped answering" in err
    assert "UNAVAILABLE" not in err
