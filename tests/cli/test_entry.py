"""`pit`'s entry point (`snakecli.entry`): the answers it gives before Typer loads are the
Typer app's own, byte for byte and exit code included, and everything it is unsure of goes
to the app."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import Pool
from snakecli import entry, help_pages
from tests.cli.test_logs import pit_env
from tests.conftest import ROOT

QUICK = [sys.executable, "-m", "snakecli"]  # the console script's main: snakecli.entry
FULL = [sys.executable, "-c", "from snakecli.app import main; main()"]  # Typer, always
# what a quick answer must not have imported (that is where the time went: issue 20)
PROBE = ("import sys, snakecli.entry as e; code = e.quick_answer(sys.argv[1:]); "
         "sys.stdout.flush(); print(code, sorted(m for m in ('typer', 'rich', 'grpc', "
         "'pydantic', 'psutil') if m in sys.modules), file=sys.stderr)")


def run(argv: list[str], *args: str, columns: str | None = None) -> tuple[int, str, str]:
    env = pit_env()
    env.pop("COLUMNS", None)  # no terminal: click's own 80 columns
    env.pop("_PIT_COMPLETE", None)
    env.pop("PIT_LOG_LEVEL", None)
    if columns is not None:
        env["COLUMNS"] = columns
    done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout, done.stderr


def probe(*args: str) -> tuple[str, str]:
    """(stdout, the last stderr line: exit code and the heavy modules loaded) of a quick
    answer to ``args``."""
    _, out, err = run([sys.executable, "-c", PROBE], *args)
    return out, err.splitlines()[-1]


# The pages were rendered with the installed Typer (a fresh install may have a newer one:
# then Typer answers --help, and the tests of the quick pages have nothing to test)
SAME_TYPER = pytest.mark.skipif(
    help_pages.SOURCE_DIGEST.partition("+")[2] != entry.source_digest().partition("+")[2],
    reason="the help pages were rendered with another Typer version (make help-pages)")


def test_the_help_pages_are_current() -> None:
    done = subprocess.run([sys.executable, "scripts/gen_help.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert help_pages.SOURCE_DIGEST.partition("+")[0] == entry.source_digest().partition("+")[0]


@SAME_TYPER
def test_the_help_pages_are_what_this_typer_renders() -> None:
    assert help_pages.SOURCE_DIGEST == entry.source_digest()


@pytest.mark.parametrize("args", [["--help"], [], ["gen", "adapter", "--help"]],
                         ids=["pit --help", "pit", "gen adapter --help"])
@SAME_TYPER
def test_help_is_the_apps_and_needs_no_typer(args: list[str]) -> None:
    quick, full = run(QUICK, *args), run(FULL, *args)
    assert quick == full
    assert quick[0] == (2 if not args else 0) and "Usage: pit" in quick[1] + quick[2]
    out, last = probe(*args)
    assert last == f"{2 if not args else 0} []", last  # answered here, nothing heavy loaded
    assert out == quick[1]
    if args == ["--help"]:
        assert run(QUICK, *args, columns="200") == full  # click's help stops at 78 columns


@SAME_TYPER
def test_a_narrow_terminal_and_changed_sources_get_typers_help(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("_PIT_COMPLETE", raising=False)
    monkeypatch.setenv("COLUMNS", "60")
    assert entry.help_width() == 58
    assert entry.quick_answer(["--help"]) is None
    quick, full = run(QUICK, "--help", columns="60"), run(FULL, "--help", columns="60")
    assert quick == full and max(len(ln) for ln in quick[1].splitlines()) <= 58
    monkeypatch.setenv("COLUMNS", "80")
    assert entry.quick_answer(["status", "--help"]) == 0
    assert capsys.readouterr().out == help_pages.PAGES["status"]
    monkeypatch.setattr(help_pages, "SOURCE_DIGEST", "edited since")
    assert entry.quick_answer(["status", "--help"]) is None
    assert capsys.readouterr().out == ""


def test_what_is_not_a_page_goes_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    for args in (["-v", "--help"], ["status", "--json", "--help"], ["run", "app.py", "--help"],
                 ["gen-adapter", "--help"], ["status", "--watch"], ["version"], ["-V", "-q"]):
        assert entry.quick_answer(args) is None, args
    monkeypatch.setenv("_PIT_COMPLETE", "complete_bash")
    assert entry.quick_answer(["--help"]) is None


@pytest.mark.parametrize("args", [["status"], ["status", "--json"]])
def test_status_without_a_host_is_the_apps_and_needs_no_typer(args: list[str]) -> None:
    quick, full = run(QUICK, *args), run(FULL, *args)
    assert quick == full
    assert quick[0] == 3 and quick[1] == "" and "no running pit host" in quick[2]
    out, last = probe(*args)
    assert (out, last) == ("", "3 []")


def test_run_without_options_is_the_apps_and_needs_no_typer(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("import sys, runtime\n"
                      "print(sys.argv[1:], runtime.execute('ping')['pong'])\n"
                      "print('heavy', sorted(m for m in ('typer', 'pydantic') "
                      "if m in sys.modules), file=sys.stderr)\n"
                      "sys.exit(3)\n")
    quick = run(QUICK, "run", str(script), "x", "--y")
    full = run(FULL, "run", str(script), "x", "--y")
    assert quick[:2] == full[:2] == (3, "['x', '--y'] True\n")
    assert "heavy []" in quick[2] and "heavy ['pydantic', 'typer']" in full[2]
    missing = str(tmp_path / "nope.py")
    assert run(QUICK, "run", missing) == run(FULL, "run", missing)
    assert run(QUICK, "run", missing)[0] == 2


def test_version_is_the_apps_and_needs_no_typer() -> None:
    full = run(FULL, "--version")
    assert full[0] == 0 and full[1].startswith("pit ")
    assert run(QUICK, "--version") == run(QUICK, "-V") == full
    out, last = probe("--version")
    assert out == full[1] and last.startswith("0 [") and "typer" not in last \
        and "rich" not in last, last


def test_status_with_a_bad_log_level_is_typers_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIT_LOG_LEVEL", "loud")
    assert entry.quick_answer(["status"]) is None
    env = {**pit_env(), "PIT_LOG_LEVEL": "loud"}
    done = subprocess.run([*QUICK, "status"], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "--log-level" in done.stderr, done.stderr


def test_status_with_a_host_running_goes_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIT_LOG_LEVEL", raising=False)
    with Pool(size=1) as pool:
        pool.execute("ping")
        assert entry.quick_answer(["status"]) is None
        code, out, err = run(QUICK, "status", "--json")
        assert code == 0, err
        assert str(pool.pids()[0]) in out


@pytest.mark.parametrize("args", [["", "--help"], ["gen adapter", "--help"]],
                         ids=["empty command", "two words in one argument"])
@SAME_TYPER
def test_an_argument_that_only_joins_into_a_page_name_is_typers_error(
        args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # "" and "gen adapter" are not commands: click says so (exit 2), it shows no help page
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("_PIT_COMPLETE", raising=False)
    assert entry.quick_answer(args) is None
    quick, full = run(QUICK, *args), run(FULL, *args)
    assert quick == full and quick[0] == 2, quick


@pytest.mark.parametrize(("closed", "args", "code"),
                         [("stdout", ["--help"], 0), ("stderr", [], 2),
                          ("stderr", ["status"], 3)])
def test_a_closed_stdout_or_stderr_is_left_to_typer(
        closed: str, args: list[str], code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python sets sys.stdout / sys.stderr to None when fd 1 / 2 is closed: click then
    # writes nothing and exits as usual; the quick answer must not fail with a traceback
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("_PIT_COMPLETE", raising=False)
    monkeypatch.delenv("PIT_LOG_LEVEL", raising=False)
    monkeypatch.setattr(sys, closed, None)
    assert entry.quick_answer(args) is None
    monkeypatch.undo()
    redirect = ">&-" if closed == "stdout" else "2>&-"
    for argv in (QUICK, FULL):
        done = subprocess.run(["sh", "-c", f'"$@" {redirect}', "sh", *argv, *args],
                              capture_output=closed == "stdout", env={**pit_env(),
                              "COLUMNS": "80"}, cwd=ROOT, stdin=subprocess.DEVNULL,
                              timeout=120)
        assert done.returncode == code, (argv, done.stderr)


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_a_reader_gone_before_the_answer_is_typers_exit_not_a_traceback(
        args: list[str]) -> None:
    # `pit --help | true`: the pipe's reader is gone when pit writes (EPIPE); click exits 1
    # and says nothing; the quick answer printed a BrokenPipeError traceback
    answers = []
    for argv in (QUICK, FULL):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            done = subprocess.run([*argv, *args], stdout=write_end, stderr=subprocess.PIPE,
                                  text=True, env={**pit_env(), "COLUMNS": "80"}, cwd=ROOT,
                                  stdin=subprocess.DEVNULL, timeout=120)
        finally:
            os.close(write_end)
        answers.append((done.returncode, done.stderr))
    assert answers[0] == answers[1] == (1, ""), answers
