"""`pit setup`, driven as a user would: a real `pit` process on a real config."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def pit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "snakecli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL)


def test_a_broken_adapter_is_never_reported_ok_and_setup_exits_1(tmp_path: Path) -> None:
    # Pools on the host's interpreter: nothing to build, only the adapter health check.
    (tmp_path / "pit.toml").write_text('[pools.broken]\nadapter = "nowhere:Nothing"\n'
                                       'size = 1\n[pools.fine]\nsize = 1\n')
    out = pit("setup", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    progress = {line.split(":")[0].strip(): line for line in out.stderr.splitlines()
                if "health check" not in line}
    assert progress["broken"].startswith("  broken: failed")  # was "broken: ok host"
    assert progress["fine"].startswith("  fine: ok")
    table = out.stdout
    assert "broken" in table and "No module named 'nowhere'" in table
    # Each error is printed once: in the table, not in the progress line as well.
    assert (out.stdout + out.stderr).count("No module named 'nowhere'") == 1
    as_json = pit("setup", "--json", cwd=tmp_path)
    assert as_json.returncode == 1
    rows = {r["pool"]: r for r in json.loads(as_json.stdout)}
    assert rows["broken"]["ok"] is False and rows["broken"]["healthy"] is False
    assert rows["fine"]["ok"] is True


def test_progress_shows_each_pools_steps_with_elapsed_time(tmp_path: Path) -> None:
    # An env to build (no package to download: only the bridge's pins, from uv's cache) and a
    # pool on the host's interpreter (health check only).
    (tmp_path / "pit.toml").write_text(
        f'[pools.built]\nsize = 1\npython = "{sys.executable}"\n[pools.host]\nsize = 1\n')
    out = pit("-v", "setup", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    built = [ln.strip() for ln in out.stderr.splitlines() if ln.startswith("  built: ")]
    steps = [ln.split(" (at ")[0] for ln in built]
    version = sys.version.split()[0]
    assert steps[:5] == [f"built: finding Python {sys.executable}",
                         f"built: creating venv with Python {version}",
                         "built: installing 3 packages",
                         "built: recording the installed versions (lock.txt)",
                         "built: health check"], built
    assert re.fullmatch(r"built: ok in \d+\.\d s \(env ready, adapter ok\)", built[-1])
    assert "    built: " in out.stderr  # -v: uv's own lines, e.g. "Creating virtual environment"
    host = [ln.strip() for ln in out.stderr.splitlines() if ln.startswith("  host: ")]
    assert host[0].startswith("host: health check (at ") and host[-1].startswith("host: ok in")
    quiet = pit("-q", "setup", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "" and "up to date" in quiet.stdout
