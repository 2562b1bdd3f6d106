"""pit's pytest plugin (runtime.testing, loaded through the pytest11 entry point) as a user's
project meets it: pytest runs in a subprocess in a project of its own, with real pools."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from runtime.scaffold import generate_adapter

PYTEST_TIMEOUT_S = 120


def pytest_in(folder: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIT_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
         str(tmp_path / f"base{len(list(tmp_path.glob('base*')))}"), *args],
        cwd=folder, env=env, capture_output=True, text=True, timeout=PYTEST_TIMEOUT_S)


def test_the_generated_test_passes_from_the_root_and_from_tests(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    generate_adapter("weather", project)
    for folder in (project, project / "tests"):
        run = pytest_in(folder, tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "1 passed" in run.stdout
    assert not (project / ".pit").exists()  # the session's state dir is pytest's own


def test_a_test_that_leaves_workers_fails_and_only_that_test(tmp_path: Path) -> None:
    (tmp_path / "test_leaks.py").write_text(textwrap.dedent("""
        import pytest
        from runtime import Pool

        @pytest.fixture(scope="module")
        def shared():
            with Pool(size=1) as pool:
                yield pool

        def test_uses_the_shared_pool(shared):
            assert shared.execute("add", {"a": 1, "b": 2}) == 3

        def test_leaks(shared):
            pool = Pool(size=1).start()
            print("LEAKED", *pool.pids())

        def test_after_the_leak(shared):
            shared.recycle(shared.stats().workers[0].id)  # a new worker, not this test's pool
            assert shared.execute("add", {"a": 2, "b": 2}) == 4
    """))
    run = pytest_in(tmp_path, tmp_path, "-s", "-rE")
    leaked = re.search(r"LEAKED (\d+)", run.stdout)
    assert leaked, run.stdout + run.stderr
    assert "3 passed, 1 error" in run.stdout, run.stdout
    assert "ERROR at teardown of test_leaks" in run.stdout
    pids = re.search(r"the test left \d+ pit process\(es\) alive \(workers and fork servers, "
                     r"pids ([\d, ]+)\)", run.stdout)
    assert pids and leaked[1] in pids[1].split(", "), run.stdout


def test_a_leak_is_caught_in_a_state_dir_the_test_chose_with_monkeypatch(tmp_path: Path) -> None:
    (tmp_path / "test_own_dir.py").write_text(textwrap.dedent("""
        from runtime import Pool

        def test_leaks_in_its_own_state_dir(monkeypatch, tmp_path):
            monkeypatch.setenv("PIT_STATE_DIR", str(tmp_path / "mine"))
            pool = Pool(size=1).start()
            print("LEAKED", *pool.pids())
    """))
    run = pytest_in(tmp_path, tmp_path, "-s", "-rE")
    assert "1 passed, 1 error" in run.stdout, run.stdout + run.stderr
    assert "ERROR at teardown of test_leaks_in_its_own_state_dir" in run.stdout


def test_pools_by_marker_parameter_default_and_factory(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "who.py").write_text(textwrap.dedent("""
        import os
        from runtime import Adapter, tool

        class Who(Adapter):
            @tool
            def who(self) -> str:
                return os.environ["WHO"]
    """))
    (project / "pit.toml").write_text(textwrap.dedent("""
        default_pool = "b"
        [pools.a]
        adapter = "who:Who"
        size = 1
        env = {WHO = "a"}
        [pools.b]
        adapter = "who:Who"
        size = 1
        env = {WHO = "b"}
    """))
    (project / "tests" / "test_who.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.pit_pool("a")
        def test_marker(pit_pool):
            assert pit_pool.execute("who") == "a"

        @pytest.mark.parametrize("pit_pool", ["a", "b"], indirect=True)
        def test_indirect(pit_pool):
            assert pit_pool.execute("who") == pit_pool.name

        def test_default_pool(pit_pool):
            assert pit_pool.pool.execute("who") == "b"

        def test_factory(pit_pool):
            pool = pit_pool.factory(adapter="who:Who", size=1, env={"WHO": "f"})
            assert pool.execute("who") == "f"
    """))
    run = pytest_in(project / "tests", tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout
