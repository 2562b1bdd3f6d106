"""`pit cleanup` driven through the real Typer app, in an isolated state dir."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from snakecli.app import app

ENV = {"NO_COLOR": "1", "COLUMNS": "160"}
BROKEN_TOML = "[pools.x\nadapter = \n"  # not even TOML


def stale_run_dir(state: Path) -> Path:
    """A run dir no host owns, old enough for cleanup to remove (what a killed host leaves)."""
    run = state / "run" / "deadbeef"
    run.mkdir(parents=True)
    old = time.time() - 3600
    os.utime(run, (old, old))
    return run


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_a_broken_config_falls_back_to_pit_state_dir(project: Path, state_dir: Path) -> None:
    (project / "pit.toml").write_text(BROKEN_TOML)
    run = stale_run_dir(state_dir)
    result = CliRunner().invoke(app, ["cleanup"], env=ENV)
    assert result.exit_code == 0, result.output
    assert not run.exists()
    assert "the config is broken" in result.stderr and "not valid TOML" in result.stderr
    assert str(state_dir) in result.stderr and "PIT_STATE_DIR" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("toml", "where", "source"), [
    (BROKEN_TOML, ".pit", "the default"),
    ('state_dir = "var/pit"\n[pools.x]\nsize = "two"\n', "var/pit", "the config's state_dir"),
])
def test_without_pit_state_dir_the_config_s_own_or_the_default_is_used(
        project: Path, toml: str, where: str, source: str) -> None:
    (project / "pit.toml").write_text(toml)
    run = stale_run_dir(project / where)
    result = CliRunner().invoke(app, ["cleanup"], env={**ENV, "PIT_STATE_DIR": None})
    assert result.exit_code == 0, result.output
    assert not run.exists()
    assert "the config is broken" in result.stderr
    assert str(project / where) in result.stderr and source in result.stderr


def test_a_broken_config_without_a_state_dir_to_fall_back_to_exits_2(project: Path) -> None:
    (project / "pit.toml").write_text(BROKEN_TOML)
    result = CliRunner().invoke(app, ["cleanup"], env={**ENV, "PIT_STATE_DIR": None})
    assert result.exit_code == 2, result.output
    assert "error (config)" in result.stderr and "not valid TOML" in result.stderr
    assert "--state-dir" in result.stderr  # the hint: how to name it
    assert "Traceback" not in result.output
    assert not (project / ".pit").exists()  # nothing was created where nothing was
