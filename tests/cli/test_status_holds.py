"""`pit status` that holds, against real hosts: piped with every column, --watch without a
terminal printing frames and surviving its host's exit, --wait, orphans mentioned, and an
80-column terminal (tmux)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtime import Pool
from runtime.cleanup import cleanup
from runtime.control.client import get_status
from runtime.control.index import live_instances
from snakecli.app import app
from snakecli.status_view import LOCAL_COLUMNS
from tests.cli.test_logs import collect, pit_env
from tests.conftest import ROOT, pid_alive, wait_until

PIT = [sys.executable, "-m", "snakecli"]
FULL = [sys.executable, "-c", "from snakecli.app import main; main()"]  # Typer, always
ENV = {"NO_COLOR": "1", "COLUMNS": "160"}
RAW_GRPC = ("UNAVAILABLE", "FAILED_PRECONDITION", "StatusCode", "grpc")

HOLD = """
import sys, time
from pathlib import Path
import runtime

runtime.execute("add", {"a": 1, "b": 2})
stop = Path(sys.argv[1])
while not stop.exists():
    time.sleep(0.05)
"""


def start_host(tmp_path: Path, toml: str = "[pools.p]\nsize = 1\n") -> tuple[
        subprocess.Popen[str], Path]:
    """`pit run` of a script that stays up until its stop file exists."""
    (tmp_path / "hold.py").write_text(textwrap.dedent(HOLD))
    (tmp_path / "pit.toml").write_text(toml)
    stop = tmp_path / "stop"
    host = subprocess.Popen([*PIT, "run", "hold.py", str(stop)], cwd=tmp_path, text=True,
                            env=pit_env(), stdin=subprocess.DEVNULL)
    return host, stop


def status_json() -> list[dict]:
    """The snapshots of the running hosts that list their pools (read in this process)."""
    snaps = [get_status(inst) for inst in live_instances()]
    return [s for s in snaps if s.get("pools")]


def test_piped_status_prints_every_column_untruncated() -> None:
    with Pool(size=2) as pool:
        pool.execute("add", {"a": 1, "b": 2})
        result = CliRunner().invoke(app, ["status"], env={**ENV, "COLUMNS": "40"})
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        header = next(ln for ln in lines if ln.startswith("worker "))
        assert header.split() == " ".join(c.title for c in LOCAL_COLUMNS).split()
        rows = [ln for ln in lines if ln.startswith("worker-")]
        assert len(rows) == 2 and all(str(p) in result.output for p in pool.pids())
        assert "…" not in result.output and "calls 1 failed 0" in result.output
        unknown = CliRunner().invoke(app, ["status", "--pool", "nope"], env=ENV)
        assert unknown.exit_code == 2 and "pools of the running hosts: default" in unknown.output


def test_watch_without_a_terminal_prints_frames_and_survives_its_host_exiting(
        tmp_path: Path) -> None:
    host, stop = start_host(tmp_path)
    watch = None
    try:
        assert wait_until(lambda: bool(status_json()), timeout=30)
        watch = subprocess.Popen([*PIT, "status", "--watch", "--interval", "0.25"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=pit_env(), stdin=subprocess.DEVNULL)
        out = collect(watch.stdout)
        assert wait_until(lambda: sum(ln.startswith("pit status ") for ln in out) >= 2,
                          timeout=20), out
        assert any(ln.startswith("worker-1 ") for ln in out)
        stop.touch()
        host.wait(timeout=30)
        assert wait_until(lambda: any(ln.endswith("exited") for ln in out), timeout=10), out
        frames = sum(ln.startswith("pit status ") for ln in out)
        assert wait_until(lambda: sum(ln.startswith("pit status ") for ln in out) >= frames + 2,
                          timeout=10), out  # still watching after the exit
        assert watch.poll() is None
    finally:
        stop.touch()
        if watch is not None:
            watch.send_signal(signal.SIGINT)
            watch.wait(timeout=10)
        host.wait(timeout=30)
    text = "\n".join(out)
    assert sum(ln.endswith(": exited") for ln in out) == 1, text
    assert "no running pit host on this machine; waiting for one" in text
    assert not any(word in text for word in RAW_GRPC), text
    assert watch.returncode == 0 and host.returncode == 0


def test_wait_waits_for_a_host_to_appear(tmp_path: Path) -> None:
    waiting = subprocess.Popen([*PIT, "status", "--wait", "--interval", "0.25"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=pit_env(), stdin=subprocess.DEVNULL)
    out = collect(waiting.stdout)
    host = None
    try:
        err = collect(waiting.stderr)
        assert wait_until(lambda: any("waiting for a pit host" in ln for ln in err),
                          timeout=20), err
        assert waiting.poll() is None
        host, stop = start_host(tmp_path)
        waiting.wait(timeout=40)
        assert wait_until(lambda: any(ln.startswith("pool p ") for ln in out), timeout=5), out
        assert waiting.returncode == 0
    finally:
        if waiting.poll() is None:
            waiting.kill()
        if host is not None:
            stop.touch()
            host.wait(timeout=30)


def test_orphans_of_a_killed_host_are_mentioned(tmp_path: Path, state_dir: Path) -> None:
    host, stop = start_host(tmp_path, "[pools.p]\nsize = 1\ndependent = false\n")
    try:
        assert wait_until(lambda: bool(status_json()), timeout=30)
        [snap] = status_json()
        [worker] = [w["pid"] for p in snap["pools"] for w in p["workers"]]
        host.send_signal(signal.SIGKILL)
        host.wait(timeout=10)
        result = CliRunner().invoke(app, ["status"], env=ENV)
        assert result.exit_code == 3
        assert "1 orphaned worker: run `pit cleanup`" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        quick, full = (subprocess.run([*argv, "status"], capture_output=True, text=True,
                                      timeout=60, env=pit_env(), stdin=subprocess.DEVNULL)
                       for argv in (PIT, FULL))  # `pit` answers this one before Typer loads
        assert (quick.returncode, quick.stdout, quick.stderr) == \
            (full.returncode, full.stdout, full.stderr) == (3, "", result.output)
    finally:
        stop.touch()
        if host.poll() is None:
            host.kill()
        cleanup(state_dir)
    assert wait_until(lambda: not pid_alive(worker), timeout=10)
    assert "orphaned" not in CliRunner().invoke(app, ["status"], env=ENV).output


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_watch_in_an_80_column_terminal_fits_and_survives_its_host(tmp_path: Path) -> None:
    host, stop = start_host(tmp_path)
    tmux = ["tmux", "-L", f"pit-status-{os.getpid()}"]
    try:
        assert wait_until(lambda: bool(status_json()), timeout=30)
        cmd = " ".join([f"PIT_INDEX_DIR={os.environ['PIT_INDEX_DIR']}",
                        f"PIT_STATE_DIR={os.environ['PIT_STATE_DIR']}",
                        f"PYTHONPATH={ROOT}", "NO_COLOR=1", *PIT, "status", "--watch",
                        "--interval", "0.25"])
        subprocess.run([*tmux, "new-session", "-d", "-s", "w", "-x", "80", "-y", "30", cmd],
                       check=True, timeout=10)

        def pane() -> list[str]:
            return subprocess.run([*tmux, "capture-pane", "-p", "-t", "w"],
                                  capture_output=True, text=True, timeout=10).stdout.splitlines()

        assert wait_until(lambda: any(ln.startswith("worker-1 ") for ln in pane()),
                          timeout=20), pane()
        screen = pane()
        header = next(ln for ln in screen if ln.startswith("worker ")).split()
        assert {"worker", "state", "load"} <= set(header) and "memory" not in header
        row = next(ln for ln in screen if ln.startswith("worker-1 "))
        assert "ready" in row and "0/1" in row  # its cells on its own line, not wrapped
        stop.touch()
        host.wait(timeout=30)
        assert wait_until(lambda: any(ln.endswith(": exited") or "waiting for one" in ln
                                      for ln in pane()), timeout=10), pane()
        assert not any(w in "\n".join(pane()) for w in RAW_GRPC)
        assert subprocess.run([*tmux, "has-session", "-t", "w"], timeout=10).returncode == 0
    finally:
        stop.touch()
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10)
        host.wait(timeout=30)
