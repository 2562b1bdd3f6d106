"""Rendering for the CLI: Rich on stderr for diagnostics, plain JSON for scripts."""

from __future__ import annotations

import json
import traceback
from typing import Any

from rich.console import Console

err_console = Console(stderr=True, highlight=False)


def print_error(exc: BaseException, *, debug: bool = False) -> None:
    """One error, its hint and (with --debug) the traceback, to stderr."""
    from runtime.errors import PitError

    if debug:
        err_console.print("".join(traceback.format_exception(exc)), markup=False)
    if isinstance(exc, PitError):
        err_console.print(f"[bold red]error[/] [dim]({exc.category})[/]: ", end="")
        err_console.print(exc.message, markup=False)
        if exc.hint:
            err_console.print("[yellow]hint[/]: ", end="")
            err_console.print(exc.hint, markup=False)
    else:
        err_console.print(f"[bold red]error[/]: {type(exc).__name__}: ", end="")
        err_console.print(str(exc), markup=False)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
