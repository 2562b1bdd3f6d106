"""Data printed through Rich is data: a path like `[/etc/app.ini]` or a key like `[pools.a]`
in a message must neither crash the command (MarkupError) nor vanish from its output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BAD = {  # a config that makes each command print a message holding markup-like text
    "doctor": '[pools.a]\nsize = "x[/etc/app.ini]"\n',
    "setup": '[pools.a]\nadapter = "nope_mod[/x]:A"\nsize = 1\n',
}


def pit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "300"}
    return subprocess.run([sys.executable, "-m", "snakecli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", sorted(BAD))
def test_messages_with_brackets_are_printed_as_they_are(command: str, tmp_path: Path) -> None:
    (tmp_path / "pit.toml").write_text(BAD[command])
    out = pit(command, cwd=tmp_path)
    text = out.stdout + out.stderr
    assert "MarkupError" not in text and "Traceback" not in text, text
    assert out.returncode == 1, text
    assert ("[/etc/app.ini]" if command == "doctor" else "[/x]") in text


def test_gen_adapter_names_its_config_table(tmp_path: Path) -> None:
    out = pit("gen", "adapter", "shop", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[pools.shop]" in out.stderr  # it vanished: Rich took it for a style tag


def test_the_renderers_escape_every_data_string() -> None:
    from rich.console import Console

    from runtime.doctor import Check
    from snakecli import render

    console = Console(record=True, width=300, highlight=False)
    original = render.Console
    render.Console = lambda **kw: console  # type: ignore[assignment,misc]
    try:
        render.print_checks([Check("pool [pools.a]: env", "fail", "bad [/x] path",
                                   "edit [pools.a] in [b]pit.toml[/b]")])
    finally:
        render.Console = original  # type: ignore[misc]
    text = console.export_text()
    assert "pool [pools.a]: env" in text and "bad [/x] path" in text
    assert "edit [pools.a] in [b]pit.toml[/b]" in text


def test_call_stop_and_setup_progress_print_bracketed_text_as_it_is(tmp_path: Path) -> None:
    raised = pit("call", "default", "fail", '{"message": "[/x] in [pools.a]"}', cwd=tmp_path)
    assert raised.returncode == 1 and "ValueError: [/x] in [pools.a]" in raised.stderr
    no_pool = pit("call", "[pools.a]", "ping", cwd=tmp_path)
    assert no_pool.returncode == 2 and "no pool named '[pools.a]'" in no_pool.stderr
    no_host = pit("stop", "--instance", "[/x]", cwd=tmp_path)
    assert no_host.returncode == 3 and "no running instance '[/x]'" in no_host.stderr
    (tmp_path / "pit.toml").write_text('[pools.a]\nsize = 1\npython = "[/x]"\n')
    setup = pit("setup", cwd=tmp_path)
    assert setup.returncode == 1 and "[/x] (at " in setup.stderr  # a path, resolved
    for out in (raised, no_pool, no_host, setup):
        assert "MarkupError" not in out.stderr and "Traceback" not in out.stderr, out.stderr
