"""`pit setup`'s progress on stderr: per pool, the step it is on and for how long, redrawn
live (where stderr is no terminal, one line per step instead); one final line per pool once
its verdict is in (env built and adapter checked), whose mark is that verdict. The errors
themselves are left to the result table (or JSON), so each is printed once."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.text import Text

from .render import err_console


class SetupProgress:
    """The callbacks `runtime.envs.setup.setup` takes (``phase``, ``output``, ``done``) and
    the live view they feed. Build threads call them: state changes hold the lock."""

    def __init__(self, *, show_output: bool, silent: bool = False) -> None:
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}  # pool -> when its first step began
        self._step: dict[str, tuple[str, float]] = {}  # pool -> (step, when it began)
        self._live: Live | None = None
        self.on_output = self.output if show_output and not silent else None
        self._silent = silent

    def attach(self, live: Live) -> None:
        """Print through ``live`` from now on (lines go above the redrawn steps)."""
        self._live = live

    def phase(self, pool: str, step: str) -> None:
        now = time.monotonic()
        with self._lock:
            began = self._started.setdefault(pool, now)
            self._step[pool] = (step, now)
        if not err_console.is_terminal:  # nothing is redrawn (CI, a pipe): one line a step
            self._print(Text(f"  {pool}: {step} (at {now - began:.1f} s)", style="cyan"))

    def output(self, pool: str, line: str) -> None:
        if line.strip():
            self._print(Text(f"    {pool}: {line}", style="dim"))

    def done(self, row: Any) -> None:
        with self._lock:
            began = self._started.pop(row.pool, time.monotonic())
            self._step.pop(row.pool, None)
        elapsed = time.monotonic() - began
        verdict = ("ok" if row.ok else
                   "adapter broken" if row.healthy is False else f"env {row.env}")
        mark = Text("ok" if row.ok else "failed", style="green" if row.ok else "red")
        adapter = {None: "", True: ", adapter ok", False: ""}[row.healthy]
        line = Text(f"  {row.pool}: ") + mark + Text(
            f" in {elapsed:.1f} s (env {row.env}{adapter})" if row.ok else
            f" after {elapsed:.1f} s: {verdict} (see below)")
        self._print(line)

    def _print(self, line: Text) -> None:
        if self._silent:
            return
        (self._live.console if self._live is not None else err_console).print(line)

    def __rich__(self) -> Group:
        now = time.monotonic()
        with self._lock:
            steps = sorted(self._step.items())
        return Group(*(Text(f"  {pool}: {step} ({now - began:.1f} s)", style="cyan")
                       for pool, (step, began) in steps))


@contextlib.contextmanager
def setup_progress(*, quiet: bool, verbose: bool) -> Iterator[SetupProgress]:
    """A live SetupProgress on stderr while the block runs (with ``quiet``, one that shows
    nothing)."""
    if quiet:
        yield SetupProgress(show_output=False, silent=True)
        return
    view = SetupProgress(show_output=verbose)
    with Live(view, console=err_console, refresh_per_second=4, transient=True) as live:
        view.attach(live)
        yield view
