"""`pit run -m MODULE`: a module run as __main__ with the pools up, as python -m runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT

PIT = [sys.executable, "-m", "snakecli"]


def pit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run([*PIT, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=env, stdin=subprocess.DEVNULL)


def test_run_m_runs_a_package_module_with_its_arguments(tmp_path: Path) -> None:
    pkg = tmp_path / "app"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("def label():\n    return 'sum'\n")
    (pkg / "main.py").write_text(textwrap.dedent("""
        import sys
        import runtime
        from .helpers import label  # a relative import: it runs as app.main, in its package
        print(__name__, sys.argv[1:], label(), runtime.execute("add", {"a": 1, "b": 2}))
        def fail():
            raise RuntimeError("kaput")
        if "--fail" in sys.argv:
            fail()
    """))
    out = pit("run", "-m", "app.main", "x", "--flag", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "__main__ ['x', '--flag'] sum 3\n"
    failed = pit("run", "-m", "app.main", "--fail", cwd=tmp_path)
    assert failed.returncode == 1
    # The traceback starts in the user's module, not in pit's or runpy's frames.
    first_frame = failed.stderr.split("Traceback (most recent call last):\n")[1].splitlines()[0]
    assert str(pkg / "main.py") in first_frame, failed.stderr
    assert "RuntimeError: kaput" in failed.stderr


def test_run_m_names_a_missing_module(tmp_path: Path) -> None:
    out = pit("run", "-m", "no_such_module", cwd=tmp_path)
    assert out.returncode == 2
    assert "no module named 'no_such_module'" in out.stderr
    nothing = pit("run", cwd=tmp_path)
    assert nothing.returncode == 2 and "give a SCRIPT to run, or -m MODULE" in nothing.stderr


def test_run_m_names_a_package_without_main(tmp_path: Path) -> None:
    """As python -m says it, not as a traceback of runpy's ImportError."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    out = pit("run", "-m", "app", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "'app' is a package with no __main__ module" in out.stderr
    assert "Traceback" not in out.stderr
    (tmp_path / "app" / "__main__.py").write_text("print('main of app')\n")
    ran = pit("run", "-m", "app", cwd=tmp_path)
    assert ran.returncode == 0 and ran.stdout == "main of app\n", ran.stderr
