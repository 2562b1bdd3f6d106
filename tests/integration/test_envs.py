"""Per-pool environments on different Python versions, built by uv (pit setup)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime import Pools, load_config
from tests.conftest import ROOT, pid_alive

PROBE_ADAPTER = '''
import importlib.util, sys
from runtime import Adapter, tool

class Probe(Adapter):
    @tool
    def info(self) -> dict:
        return {"version": list(sys.version_info[:2]),
                "has_six": importlib.util.find_spec("six") is not None,
                "has_extra": importlib.util.find_spec("extra_mod") is not None,
                "host_site": any("/work/main/.venv" in p for p in sys.path)}
'''


def pit(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "200",
            **(env or {})}
    return subprocess.run([sys.executable, "-m", "snakecli", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("PIT_STATE_DIR")  # the project's own .pit/
    (tmp_path / "probe.py").write_text(PROBE_ADAPTER)
    (tmp_path / "extra").mkdir()  # a directory only pool b's env names (PYTHONPATH)
    (tmp_path / "extra" / "extra_mod.py").write_text("")
    (tmp_path / "pit.toml").write_text(textwrap.dedent(f"""
        [pools.a]
        adapter = "probe:Probe"
        python = "3.11"
        requirements = ["six==1.16.0"]
        size = 1

        [pools.b]
        adapter = "probe:Probe"
        python = "3.12"
        size = 1
        env = {{ PYTHONPATH = "{tmp_path / 'extra'}" }}
    """))
    return tmp_path


def test_two_pools_on_two_pythons_with_their_own_packages(project: Path) -> None:
    out = pit("setup", "--json", cwd=project)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {r["pool"]: r for r in json.loads(out.stdout)}
    assert rows["a"]["python"].startswith("3.11") and rows["b"]["python"].startswith("3.12")
    assert all(r["env"] == "ready" and r["healthy"] for r in rows.values())
    for pool in ("a", "b"):
        env = project / ".pit" / "envs" / pool
        assert (env / "fingerprint").exists() and (env / "lock.txt").exists()
        identity = json.loads((env / "identity.json").read_text())
        assert len(identity["sha256"]) == 64
    assert "six==1.16.0" in (project / ".pit/envs/a/lock.txt").read_text()
    cfg = load_config(project / "pit.toml")
    with Pools(cfg) as pools:
        a, b = pools["a"].execute("info"), pools["b"].execute("info")
    assert a == {"version": [3, 11], "has_six": True, "has_extra": False, "host_site": False}
    assert b == {"version": [3, 12], "has_six": False, "has_extra": True, "host_site": False}
    import importlib.util
    assert importlib.util.find_spec("six") is None  # nor in the host
    again = pit("setup", "--check", cwd=project)
    assert again.returncode == 0, again.stdout


def test_setup_check_reports_missing_and_stale_envs(project: Path) -> None:
    missing = pit("setup", "--check", "--json", cwd=project)
    assert missing.returncode == 1
    assert {r["env"] for r in json.loads(missing.stdout)} == {"missing"}
    assert pit("setup", "--pool", "a", cwd=project).returncode == 0
    toml = project / "pit.toml"
    toml.write_text(toml.read_text().replace("six==1.16.0", "six==1.17.0"))
    stale = pit("setup", "--check", "--pool", "a", "--json", cwd=project)
    assert stale.returncode == 1 and json.loads(stale.stdout)[0]["env"] == "stale"


def test_an_interpreter_that_is_not_installed_is_named(project: Path) -> None:
    toml = project / "pit.toml"
    toml.write_text(toml.read_text().replace('python = "3.12"', 'python = "3.99"'))
    out = pit("setup", "--pool", "b", "--json", cwd=project)
    row = json.loads(out.stdout)[0]
    assert out.returncode == 1 and row["env"] == "error"
    assert "'3.99': no installed interpreter matches; found:" in row["detail"]
    assert not (project / ".pit/envs/b/fingerprint").exists()  # nothing half-built is ready


def test_doctor_reports_exactly_what_is_broken(project: Path) -> None:
    assert pit("setup", cwd=project).returncode == 0
    healthy = pit("doctor", "--json", cwd=project)
    assert healthy.returncode == 0, healthy.stdout
    by_name = {c["name"]: c for c in json.loads(healthy.stdout)}
    assert by_name["pool a: packages"]["message"] == "six 1.16.0"
    assert "sha256" in by_name["pool a: env"]["message"]
    assert "3.12" in by_name["interpreters"]["message"]
    # Break three things: an adapter import, an env (stale), and leave an orphan.
    toml = project / "pit.toml"
    toml.write_text(toml.read_text().replace("six==1.16.0", "six==1.17.0")
                    + '\n[pools.c]\nadapter = "nowhere:Nothing"\nsize = 1\n')
    host = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom runtime import Pool\n"
         "p = Pool(size=1, dependent=False).start()\nprint(*p.pids(), flush=True)\n"
         "time.sleep(60)"],
        cwd=project, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        text=True)
    orphan = int(host.stdout.readline())  # type: ignore[union-attr]
    host.kill()
    host.wait()
    try:
        out = pit("doctor", "--json", cwd=project)
        checks = json.loads(out.stdout)
        failed = {c["name"] for c in checks if c["status"] == "fail"}
        assert out.returncode == 1
        assert failed == {"pool a: env", "pool c: adapter", "orphans"}, checks
        assert all(c["remediation"] for c in checks if c["status"] == "fail")
        text = pit("doctor", cwd=project)
        assert text.returncode == 1 and "run `pit cleanup`" in text.stdout
    finally:
        if pid_alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_gen_adapter_then_setup_run_and_its_test(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIT_STATE_DIR")
    (tmp_path / "pit.toml").write_text("# my project\n[pools.other]\nsize = 1\n")
    out = pit("gen", "adapter", "weather", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "pit.toml").read_text()
    assert text.startswith("# my project\n[pools.other]\nsize = 1\n")  # preserved
    assert '[pools.weather]\nadapter = "weather:WeatherAdapter"' in text
    again = pit("gen", "adapter", "weather", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    assert pit("gen", "adapter", "not-valid", cwd=tmp_path).returncode == 2
    assert pit("setup", cwd=tmp_path).returncode == 0
    (tmp_path / "use.py").write_text(
        "import runtime\nprint(runtime.current_pools()['weather'].execute('greet', "
        "{'name': 'x'}))\n")
    run = pit("run", "use.py", cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == "hello x", run.stderr
    test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_weather.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert test.returncode == 0, test.stdout + test.stderr
