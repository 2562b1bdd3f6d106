"""Rendering for the CLI: Rich on stderr for diagnostics, plain JSON for scripts."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import traceback
from collections.abc import Callable, Iterator
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


def asdict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


@contextlib.contextmanager
def progress(what: str) -> Iterator[Callable[[Any], None]]:
    """A status line on stderr while ``what`` runs; the callback prints one line per pool."""
    with err_console.status(what + "..."):
        def report(status: Any) -> None:
            mark = "[green]ok[/]" if status.state in ("ready", "host") else "[red]failed[/]"
            err_console.print(f"  {status.pool}: {mark} {status.state} {status.detail}",
                              markup=True, highlight=False)
        yield report


STATUS_STYLE = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[red]fail[/]"}


def print_checks(checks: list[Any]) -> None:
    from rich.table import Table

    table = Table(title="pit doctor")
    for col in ("", "check", "result", "what to do"):
        table.add_column(col)
    for c in checks:
        table.add_row(STATUS_STYLE[c.status], c.name, c.message, c.remediation)
    out = Console(highlight=False)
    out.print(table)
    counts = {k: sum(1 for c in checks if c.status == k) for k in STATUS_STYLE}
    out.print(f"checks: {counts['pass']} ok, {counts['warn']} warning(s), "
              f"{counts['fail']} failing")


def print_setup(rows: list[Any], check: bool) -> None:
    from rich.table import Table

    table = Table(title="pit setup --check" if check else "pit setup")
    for col in ("pool", "python", "env", "adapter", "tools", "detail"):
        table.add_column(col)
    for r in rows:
        health = ("-" if r.healthy is None else "[green]ok[/]" if r.healthy else "[red]broken[/]")
        env = f"[green]{r.env}[/]" if r.env in ("host", "ready") else f"[red]{r.env}[/]"
        table.add_row(r.pool, r.python or "?", env, health, str(r.tools or ""), r.detail)
    Console(highlight=False).print(table)


def print_hardware(hw: Any, choice: Any) -> None:
    out = Console(highlight=False)
    c = hw.cpu
    out.print(f"[bold]CPU[/] {c.model} ({c.vendor}, {c.arch}): {c.physical_cores} cores, "
              f"{c.logical_cores} threads, {c.usable_cpus} usable ({c.usable_reason}); "
              f"flags: {', '.join(c.flags) or 'none of interest'}")
    for acc in hw.accelerators:
        if not acc.available:
            out.print(f"[bold]{acc.kind}[/] [dim]not available: {acc.reason}[/]")
            continue
        out.print(f"[bold]{acc.kind}[/] driver {acc.driver or '?'} {acc.runtime}: {acc.reason}")
        for g in acc.devices:
            out.print(f"  {acc.kind}:{g.index} {g.name} {g.memory_used_mb}/"
                      f"{g.memory_total_mb} MiB used, {g.utilization_pct}% busy, "
                      f"{g.temperature_c} C, {g.power_w} W")
    out.print(f"device = \"auto\" picks: [bold]{choice.name}[/] ({choice.reason})")
