"""Acceptance for observability: `pit status --watch` in a real terminal (tmux) follows a
`pit run` script under load, `pit status --json` totals match the script's own count, and
`pit profile-inspector --recommendations` gives the advice the numbers call for.

PIT_LIVE_SECONDS (default 4) sets how long the load runs; the issue's full run is 30."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtime import Pool
from snakecli.app import app
from tests.conftest import ROOT, wait_until

PIT = [sys.executable, "-m", "snakecli"]
ENV = {"NO_COLOR": "1", "COLUMNS": "160"}
SECONDS = float(os.environ.get("PIT_LIVE_SECONDS", "4"))

LOAD = """
import sys, threading, time
from pathlib import Path
import runtime

seconds, out, stop = float(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
counts = [0] * 4
end = time.monotonic() + seconds

def drive(i):
    while time.monotonic() < end:
        runtime.execute("add", {"a": i, "b": 1})
        counts[i] += 1
        time.sleep(0.001)

threads = [threading.Thread(target=drive, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
out.write_text(str(sum(counts)))
while not stop.exists() and time.monotonic() < end + 60:   # stay up for the last look
    time.sleep(0.05)
"""


def status_json(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PIT, "status", "--json"], cwd=cwd, capture_output=True, text=True,
                          timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})


def calls_shown(pane: str) -> int:
    found = re.findall(r"calls (\d+)", " ".join(pane.split()))
    return int(found[0]) if found else -1


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_watch_follows_a_pit_run_under_load_and_json_totals_match(tmp_path: Path) -> None:
    (tmp_path / "load.py").write_text(textwrap.dedent(LOAD))
    (tmp_path / "pit.toml").write_text("[pools.default]\nsize = 2\n")
    out, stop = tmp_path / "count", tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    host = subprocess.Popen([*PIT, "run", "load.py", str(SECONDS), str(out), str(stop)],
                            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL)
    tmux = ["tmux", "-L", f"pit-test-{os.getpid()}"]
    try:
        assert wait_until(lambda: status_json(tmp_path).returncode == 0, timeout=30)
        watch = " ".join([f"{k}={v}" for k, v in (
            ("PIT_INDEX_DIR", os.environ["PIT_INDEX_DIR"]), ("PYTHONPATH", str(ROOT)),
            ("NO_COLOR", "1"), ("COLUMNS", "160"), ("LINES", "50"))]
            + [*PIT, "status", "--watch", "--interval", "0.25"])
        subprocess.run([*tmux, "new-session", "-d", "-s", "watch", "-x", "160", "-y", "50",
                        "-c", str(tmp_path), watch], check=True, timeout=10)
        subprocess.run([*tmux, "resize-window", "-t", "watch", "-x", "160", "-y", "50"],
                       timeout=10)

        def pane() -> str:
            return subprocess.run([*tmux, "capture-pane", "-p", "-t", "watch"],
                                  capture_output=True, text=True, timeout=10).stdout

        assert wait_until(lambda: calls_shown(pane()) > 0, timeout=15), pane()
        first = calls_shown(pane())
        assert wait_until(lambda: calls_shown(pane()) > first, timeout=10), pane()
        screen = pane()
        assert "pool default" in screen and "worker-1" in screen and "worker-2" in screen
        assert wait_until(out.exists, timeout=SECONDS + 30)
        counted = int(out.read_text())
        [snap] = json.loads(status_json(tmp_path).stdout)
        [pool] = snap["pools"]
        assert pool["calls"] == counted and pool["failed"] == 0
        assert sum(w["requests"] for w in pool["workers"]) == counted
        assert wait_until(lambda: calls_shown(pane()) == counted, timeout=5), pane()
    finally:
        stop.touch()
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10)
        try:
            host.wait(timeout=30)
        finally:
            host.kill()
    assert host.returncode == 0


def _load(pool: Pool, tool: str, args: dict, threads: int, seconds: float) -> None:
    end = time.monotonic() + seconds

    def drive() -> None:
        while time.monotonic() < end:
            pool.execute(tool, args)

    workers = [threading.Thread(target=drive) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


def _advice(*extra: str) -> list[dict]:
    result = CliRunner().invoke(app, ["profile-inspector", "--recommendations", "--json",
                                      *extra], env=ENV)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_undersized_pool_is_told_to_grow() -> None:
    with Pool(size=1) as pool:
        _load(pool, "sleep", {"ms": 30}, threads=6, seconds=max(SECONDS, 3.5))
        [report] = _advice()
        human = CliRunner().invoke(app, ["profile-inspector", "--recommendations"], env=ENV)
    assert report["queue_saturated_share"] > 0.2 and report["utilization_when_queued"] > 0.8
    assert any("raise size to 2" in r for r in report["recommendations"]), report
    assert "raise size to 2" in " ".join(human.output.split())


def test_leaking_adapter_is_told_to_recycle_on_memory() -> None:
    with Pool(adapter="tests.adapters.sample:LeakyAdapter", size=1) as pool:
        # a baseline memory sample first (the lifecycle samples every half second)
        assert wait_until(lambda: pool.stats().workers[0].rss_mb > 0, timeout=5)
        time.sleep(1.1)
        for _ in range(80):
            pool.execute("leak")
        assert wait_until(lambda: pool.stats().workers[0].rss_mb > 80, timeout=5)
        assert wait_until(lambda: pool.stats().workers[0].uss_mb > 80, timeout=5)
        [report] = _advice()
    assert report["memory_growth_mb_per_100_requests"] > 50
    assert any("set max_memory_mb or max_requests" in r for r in report["recommendations"])


def test_a_healthy_pool_gets_no_grow_or_memory_advice() -> None:
    with Pool(size=2) as pool:
        for i in range(60):
            pool.execute("add", {"a": i, "b": 1})
        time.sleep(1.1)
        [report] = _advice()
    assert not any("raise size" in r or "max_memory_mb" in r
                   for r in report["recommendations"]), report
