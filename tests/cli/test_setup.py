"""`pit setup`, driven as a user would: a real `pit` process on a real config."""

from __future__ import annotations

import json
import os
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
    progress = {line.split(":")[0].strip(): line for line in out.stderr.splitlines()}
    assert progress["broken"].startswith("  broken: failed")  # was "broken: ok host"
    assert "No module named 'nowhere'" in progress["broken"]
    assert progress["fine"].startswith("  fine: ok")
    table = out.stdout
    assert "broken" in table and "No module named 'nowhere'" in table
    as_json = pit("setup", "--json", cwd=tmp_path)
    assert as_json.returncode == 1
    rows = {r["pool"]: r for r in json.loads(as_json.stdout)}
    assert rows["broken"]["ok"] is False and rows["broken"]["healthy"] is False
    assert rows["fine"]["ok"] is True
