"""`pit doctor` driven through the real Typer app, in an isolated state dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from snakecli.app import app

ENV = {"NO_COLOR": "1", "COLUMNS": "160"}


def test_a_python_that_is_not_installed_is_a_failed_check_with_its_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pit.toml").write_text('[pools.a]\npython = "3.99"\nsize = 1\n')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["doctor", "--json"], env=ENV)
    assert result.exit_code == 1, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    python = checks["pool a: python"]
    assert python["status"] == "fail"
    assert python["message"].startswith("python = '3.99': no installed interpreter matches")
    assert "install that version" in python["remediation"]
    assert not [c for c in checks.values() if "pit bug" in c["remediation"]]
    assert "pool a: env" not in checks  # reported once: the interpreter is what is missing
