"""`pit`'s entry point: the answers that need no Typer, then the Typer app for the rest.

Typer (its vendored click, the pydantic it coerces options with) and Rich take ~0.1-0.2 s to
import, far longer than `pit --help` or a `pit status` with no host running needs. Four
answers are given before they load, each as the Typer app gives it (tests/cli/test_entry.py):

- `pit [COMMAND ...] --help`, and a bare `pit`: a page of `help_pages`, which
  scripts/gen_help.py renders from the Typer app itself. A page is used only while the sources
  it was rendered from are unchanged (`source_digest`) and the help is as wide as the page
  (click's is 78 columns from an 80-column terminal up); otherwise Typer renders it.
- `pit status [--json]` with no host running: the frame `pit status` reads
  (`StatusWatcher`), the same words on stderr, exit code 3. A running host goes to Typer.
- `pit --version` / `-V`: `runtime.versions`, in the same words (`plain_text`).
- `pit run SCRIPT [ARGS...]` with no option: `run_cmd.run_script`, as the Typer command
  calls it (Typer's pydantic alone costs ~50 ms of the ~0.35 s a one-call `pit run` takes).

Anything else, or any doubt (shell completion, PIT_LOG_LEVEL set, a failure while looking),
goes to `app.main`, the one place that parses pit's command line.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing costs ~10 ms here (re, enum); type checkers read this name
if TYPE_CHECKING:
    from typing import TextIO

COMPLETE_VAR = "_PIT_COMPLETE"  # Typer's shell completion calls `pit` with it set
PAGE_SOURCES_SKIPPED = ("entry.py", "help_pages.py")  # not where help text comes from


def main() -> None:
    try:
        code = quick_answer(sys.argv[1:])
        if code is not None:
            sys.stdout.flush()  # here, where a reader gone away can be told apart
            sys.stderr.flush()
    except BrokenPipeError:  # `pit --help | true`: as click, exit 1 saying nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # what is still buffered goes nowhere at exit, quietly
        os.dup2(devnull, 2)
        sys.exit(1)
    if code is None:
        from .app import main as full

        full()
    else:
        sys.exit(code)


def quick_answer(args: list[str]) -> int | None:
    """The exit code after answering ``args`` here; None: the Typer app must answer."""
    if os.environ.get(COMPLETE_VAR):
        return None
    if sys.stdout is None or sys.stderr is None:  # fd 1 or 2 closed: click writes nothing
        return None  # and exits as usual; writing here would fail with a traceback
    if not args:  # no_args_is_help: the help, on stderr, exit code 2 (as click does)
        return 2 if show_help("", sys.stderr) else None
    if args[-1] == "--help":
        if any(not a or " " in a for a in args[:-1]):  # "" or "gen adapter" as one
            return None  # argument: no such command (click's error), though it joins into one
        return 0 if show_help(" ".join(args[:-1]), sys.stdout) else None
    if args in (["status"], ["status", "--json"]):
        return status_without_host()
    if len(args) >= 2 and args[0] == "run" and not args[1].startswith("-"):
        return run_without_options(args[1], args[2:])
    if args in (["--version"], ["-V"]):  # eager in the app: answered before its callback
        from runtime.versions import versions

        from .plain_text import versions_text

        print(versions_text(versions()))
        return 0
    return None


def show_help(page: str, out: TextIO) -> bool:
    """Write the help of ``page`` (a command path: "", "status", "gen adapter") to ``out``;
    False when it must come from Typer (unknown page, other width, sources changed)."""
    from . import help_pages

    text = help_pages.PAGES.get(page)
    if text is None or help_width() != help_pages.WIDTH \
            or source_digest() != help_pages.SOURCE_DIGEST:
        return False
    out.write(text)
    return True


def help_width() -> int:
    """The width click formats help to (`click.formatting.HelpFormatter`): from the columns
    `shutil.get_terminal_size` gives, found as it finds them (shutil would import re)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:  # sys.__stdout__ may be None: AttributeError, caught as shutil catches it
            fd = sys.__stdout__.fileno()  # type: ignore[union-attr]
            columns = os.get_terminal_size(fd).columns or 80
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(min(columns, 80) - 2, 50)


def source_digest() -> str:
    """A digest of what the help pages are rendered from: this package's modules, then
    (after "+typer:") the installed Typer's ``__init__`` (its version). Not a security
    measure: a change detector. A new Typer release changes only the second part: pages
    rendered with another Typer are not used, but are not stale for `make test` either
    (``gen_help.py --check``), since a fresh install may pick up a newer Typer any day."""
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    names = sorted(n for n in os.listdir(here)
                   if n.endswith(".py") and n not in PAGE_SOURCES_SKIPPED)
    spec = importlib.util.find_spec("typer")
    typer_init = spec.origin if spec and spec.origin else ""
    return (_crc([os.path.join(here, n) for n in names]) + "+typer:" + _crc([typer_init]))


def _crc(paths: list[str]) -> str:
    import zlib

    crc, size = 0, 0
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            data = b"?"
        crc = zlib.crc32(data, crc)
        size += len(data)
    return f"{crc:08x}-{size}"


def _logs_as_the_app() -> bool:
    """pit's logging set up as the app's callback does with no options; False (Typer must
    answer) when PIT_LOG_LEVEL is set: the callback checks its value (exit 2 when bad)."""
    from runtime import logs

    if logs.ENV_VAR in os.environ:
        return False
    logs.configure(None)
    return True


def run_without_options(script: str, script_args: list[str]) -> int | None:
    """`pit run SCRIPT [ARGS...]` (no option before SCRIPT: what follows it is the script's,
    as the app's ``allow_interspersed_args=False`` makes it): `run_cmd.run_script` as the
    Typer command calls it with no options. None (Typer answers) when PIT_LOG_LEVEL is set:
    the app's callback checks it."""
    if not _logs_as_the_app():
        return None
    from pathlib import Path

    from .run_cmd import run_script

    return run_script(Path(script), script_args, pools=[], config=None, wait=True,
                      debug=False)


def status_without_host() -> int | None:
    """`pit status [--json]` when no host runs: its message and exit code 3. None when a host
    runs or anything is in doubt: the Typer command answers then."""
    if not _logs_as_the_app():
        return None
    try:
        from runtime.control.index import live_instances
        from runtime.control.status_watch import StatusWatcher

        if live_instances():  # a host to ask: the Typer command does, once
            return None
        frame = StatusWatcher().frame()  # the orphans of dead hosts, as the command counts
    except Exception:  # noqa: BLE001 - the full path looks again and reports it properly
        return None
    if frame.snapshots:
        return None
    from .exit_codes import EXIT_NO_HOST
    from .plain_text import no_host_text

    sys.stderr.write(no_host_text(None, frame.orphans) + "\n")
    return EXIT_NO_HOST
