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


def cleanup_dict(report: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {"state_dir": report.state_dir, "dry_run": report.dry_run,
            "left_behind": report.left_behind, "items": [asdict(i) for i in report.items]}


def print_cleanup(report: Any) -> None:
    from rich.table import Table

    out = Console(highlight=False)
    if not report.items:
        out.print(f"Nothing to clean up in {report.state_dir}.")
        return
    verb = "Would" if report.dry_run else "Did"
    table = Table(title=f"pit cleanup — {report.state_dir}" + (" (dry run)" if report.dry_run
                                                               else ""))
    for col in ("what", "target", "pool/worker", "reason", "action", "result"):
        table.add_column(col)
    for i in report.items:
        result = ("[dim]planned[/]" if report.dry_run else
                  "[green]done[/]" if i.done else f"[red]failed: {i.error}[/]")
        worker = f"{i.pool}/{i.worker_id}" if i.pool else ""
        table.add_row(i.kind, i.target, worker, i.reason, i.action, result)
    out.print(table)
    out.print(f"{verb} {'clean up' if report.dry_run else 'clean up'} "
              f"{sum(1 for i in report.items if i.kind == 'worker')} worker process(es); "
              f"{report.left_behind} item(s) left behind.")
