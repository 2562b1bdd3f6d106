"""Acceptance: pit as a new user installs it. The wheel is built, installed into a fresh venv
outside the repo (uv, PyPI for the dependencies, uv's cache), `pit gen adapter weather` makes
a project, its test passes through the pytest plugin from the project's root and from tests/,
and `mypy --strict` passes on a user script there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from runtime.envs.uv import find_uv
from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "fixtures" / "typed_user_script.py"
STEP_TIMEOUT_S = 300

pytestmark = pytest.mark.slow


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIT_", "VIRTUAL_ENV", "PYTHONPATH"))}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=STEP_TIMEOUT_S)
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done


def test_a_fresh_venv_installs_the_wheel_and_the_generated_test_passes(
        tmp_path: Path) -> None:
    uv = find_uv()
    run([uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(ROOT)], ROOT)
    wheel = next((tmp_path / "dist").glob("pit_pools-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if "/" in n} == {
        "runtime", "snakecli", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "snakecli/templates/test_adapter.py.tmpl" in names and "runtime/py.typed" in names

    venv = tmp_path / "venv"
    run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], tmp_path)
    python = venv / "bin" / "python"
    run([uv, "pip", "install", "--quiet", "--python", str(python), str(wheel), "pytest",
         "mypy"], tmp_path)

    project = tmp_path / "project"
    project.mkdir()
    run([str(venv / "bin" / "pit"), "gen", "adapter", "weather"], project)
    for folder in (project, project / "tests"):
        done = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], folder)
        assert "1 passed" in done.stdout
    assert not (project / ".pit").exists()

    shutil.copy(SCRIPT, project / "user.py")
    run([str(python), "-m", "mypy", "--strict", "user.py", "weather.py",
         "tests/test_weather.py"], project)  # the generated files type-check too
