"""CLI conventions: --version, completion, an Examples epilog and real metavars on every
command's --help, one-line summaries, global -v / -q."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from snakecli.app import app
from snakecli.examples import EXAMPLES
from tests.conftest import ROOT

runner = CliRunner()
ENV = {"NO_COLOR": "1", "COLUMNS": "100", "TERM": "dumb"}


def commands() -> list[tuple[str, ...]]:
    """Every visible command path below `pit`, groups included: ("run",), ("gen", "adapter")."""
    found: list[tuple[str, ...]] = []

    def walk(group: object, path: tuple[str, ...]) -> None:
        for name, cmd in getattr(group, "commands", {}).items():
            if cmd.hidden:
                continue
            found.append((*path, name))
            walk(cmd, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def help_of(path: tuple[str, ...]) -> str:
    out = runner.invoke(app, [*path, "--help"], env=ENV)
    assert out.exit_code == 0, out.output
    return out.output


@pytest.mark.parametrize("path", [(), *commands()], ids=lambda p: " ".join(p) or "pit")
def test_every_help_has_examples_and_named_metavars(path: tuple[str, ...]) -> None:
    text = help_of(path)
    key = " ".join(path) or "pit"
    assert "Examples:" in text, f"`pit {key} --help` has no examples"
    for line in EXAMPLES[key]:  # each on a line of its own, not rewrapped
        assert f"\n    {line}\n" in text, (line, text)
    # options name their value: --pool POOL, not <str>
    options = [ln for ln in text.splitlines() if ln.lstrip().startswith("-")]
    assert options and not [ln for ln in options if "<" in ln.split("  ")[1]], text


def test_command_summaries_fit_one_line() -> None:
    listing = help_of(())
    rows = listing.split("Commands:")[1].split("Examples:")[0].strip().splitlines()
    summaries = {row.split()[0]: row for row in rows if row.strip()}
    assert {"run", "call", "stop", "setup", "doctor"} <= set(summaries)
    for name, row in summaries.items():
        assert not row.endswith("..."), f"{name}'s summary is cut: {row!r}"


def test_version_names_pit_python_grpcio_and_uv() -> None:
    import grpc

    from runtime import __version__

    for flag in ("--version", "-V"):
        out = runner.invoke(app, [flag], env=ENV)
        assert out.exit_code == 0, out.output
        lines = out.output.splitlines()
        assert lines[0] == f"pit {__version__}"
        assert lines[1].startswith(f"Python {sys.version.split()[0]}")
        assert lines[2] == f"grpcio {grpc.__version__}"
        assert lines[3].startswith("uv ")
    assert runner.invoke(app, ["version"], env=ENV).output == out.output


def test_shell_completion_is_on() -> None:
    assert "--install-completion" in help_of(())
    out = subprocess.run([sys.executable, "-m", "snakecli", "--show-completion", "bash"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "_PIT_COMPLETE" in out.stdout and "complete " in out.stdout


def test_verbose_and_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clash = runner.invoke(app, ["-v", "-q", "doctor"], env=ENV)
    assert clash.exit_code == 2 and "contradict" in clash.output
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    quiet = runner.invoke(app, ["-q", "gen", "adapter", "shop"], env=ENV)
    assert quiet.exit_code == 0 and quiet.output == "", quiet.output
    assert (tmp_path / "project" / "shop.py").exists()
    (tmp_path / "bare").mkdir()  # no config: the built-in "default" pool
    loud = subprocess.run([sys.executable, "-m", "snakecli", "-vv", "call", "default", "ping"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path / "bare",
                          env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"},
                          stdin=subprocess.DEVNULL)
    assert loud.returncode == 0, loud.stderr
    assert "pit DEBUG pit.pool" in loud.stderr  # -vv: pit's logs at debug
