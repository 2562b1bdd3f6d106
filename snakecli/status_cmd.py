"""`pit status`: once, or watched (live at a terminal, one plain frame per interval elsewhere,
like ``top -b``), over `runtime.control.status_watch`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from typing import Any

from rich.console import Console, Group

from runtime.errors import PitError

from . import render, status_view
from .exit_codes import EXIT_CODES, EXIT_NO_HOST
from .plain_text import no_host_text, orphan_note

EXIT_SHOWN_S = 5.0  # how long a live screen says "exited" of a host that went away


def show_status(*, instance: str | None, pool: str, watch: bool, json_out: bool,
                interval: float, wait: bool) -> int:
    """Print the status; the exit code (3: no host and not ``wait``)."""
    from runtime.control.status_watch import StatusWatcher

    watcher = StatusWatcher(instance, pool)
    try:
        frame = watcher.frame()
        if not frame.snapshots and not wait:
            render.err_console.print(no_host_text(instance, frame.orphans), markup=False,
                                     highlight=False, soft_wrap=True)
            return EXIT_NO_HOST
        if pool and frame.snapshots and not wait:
            from runtime.control.client import check_pool
            from runtime.control.status_watch import matching_instances

            check_pool(matching_instances(instance), pool)
        if not watch:
            if not _started(frame):
                render.err_console.print("waiting for a pit host (Ctrl-C to stop)",
                                         markup=False)
            while not _started(frame):  # a host just up lists its pools a moment later
                time.sleep(interval)
                frame = watcher.frame()
            _print_once(frame, json_out)
            return 0
        _watch(watcher, frame, interval, json_out)
    except PitError as exc:  # a pool no running host has
        render.print_error(exc)
        return EXIT_CODES.get(exc.category, 2)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `pit status --watch | head`: the reader has what it wanted
        _quiet_stdout()
    return 0


def _quiet_stdout() -> None:
    """stdout's reader is gone: point it at /dev/null, so that the exit's flush is quiet."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class _PipeConsole(Console):
    """Rich's Console exits 1 when stdout's reader goes away; a watch whose reader had
    enough (`| head`) has done its job: end it as Ctrl-C does, with 0."""

    def on_broken_pipe(self) -> None:
        _quiet_stdout()
        raise BrokenPipeError


def _started(frame: Any) -> bool:
    return any(s.get("pools") for s in frame.snapshots)


def _print_once(frame: Any, json_out: bool) -> None:
    if json_out:
        render.print_json(frame.snapshots)
        if frame.orphans:
            render.err_console.print(orphan_note(frame.orphans), markup=False)
        return
    out = Console(highlight=False)
    for line in status_view.frame_lines(frame, out.width if out.is_terminal else None):
        out.print(line, soft_wrap=not out.is_terminal)


def _watch(watcher: Any, frame: Any, interval: float, json_out: bool) -> None:
    out = _PipeConsole(highlight=False)
    if json_out:
        while True:
            for snap in frame.snapshots:
                print(json.dumps(snap), flush=True)
            for gone in frame.exited:
                print(json.dumps({"instance": gone.instance, "pid": gone.pid,
                                  "state": "exited"}), flush=True)
            time.sleep(interval)
            frame = watcher.frame()
    if not out.is_terminal:  # one plain frame per interval, as `top -b` prints
        while True:
            out.print(status_view.frame_header(frame, interval), soft_wrap=True)
            for line in status_view.frame_lines(frame, None, waiting=True):
                out.print(line, soft_wrap=True)
            out.print()
            sys.stdout.flush()
            time.sleep(interval)
            frame = watcher.frame()
    from rich.live import Live

    shown: dict[Any, float] = {}  # a redrawn screen keeps an exit in view EXIT_SHOWN_S
    with Live(console=out, auto_refresh=False, vertical_overflow="crop") as live:
        while True:
            now = time.monotonic()
            shown = {g: t for g, t in shown.items() if now - t < EXIT_SHOWN_S}
            shown.update((g, now) for g in frame.exited)
            frame = dataclasses.replace(frame, exited=list(shown))
            lines = status_view.frame_lines(frame, out.width, waiting=True)
            live.update(Group(status_view.frame_header(frame, interval), *lines),
                        refresh=True)
            time.sleep(interval)
            frame = watcher.frame()
