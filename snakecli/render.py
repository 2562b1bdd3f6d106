"""Rendering for the CLI: Rich on stderr for diagnostics, plain JSON for scripts."""

from __future__ import annotations

import dataclasses
import json
import traceback
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

err_console = Console(stderr=True, highlight=False)


def plain(value: Any) -> Text:
    """A table cell shown as it is: data (paths, messages, config keys such as `[pools.a]`)
    is never read as Rich markup, which would drop it or raise MarkupError."""
    return Text(str(value))


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


def print_state_dir_guess(guess: Any) -> None:
    """Say on stderr that the config is broken and which state dir is used instead."""
    err_console.print("[yellow]warning[/] [dim](config)[/]: the config is broken: ", end="")
    err_console.print(guess.error.message, markup=False)
    err_console.print(f"using the state dir {guess.path} ({guess.source}) instead",
                      markup=False)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def print_versions(v: Any) -> None:
    """`pit --version`: one line per thing, plain text on stdout (scripts read it)."""
    from .plain_text import versions_text

    print(versions_text(v))


def print_stops(results: list[Any]) -> None:
    """`pit stop`: what became of each host, on stdout."""
    for r in results:
        what = ("closed its pools and exited" if r.exited else
                "was told to exit but is still running" if r.outcome == "exiting" else
                "closed its pools; its program keeps running")
        print(f"instance {r.instance} (pid {r.pid}) {what}")


def cleanup_dict(report: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {"state_dir": report.state_dir, "dry_run": report.dry_run,
            "left_behind": report.left_behind, "items": [asdict(i) for i in report.items]}


def print_cleanup(report: Any) -> None:
    from rich.table import Table

    out = Console(highlight=False)
    if not report.items:
        out.print(f"Nothing to clean up in {escape(str(report.state_dir))}.")
        return
    verb = "Would" if report.dry_run else "Did"
    table = Table(title=plain(f"pit cleanup — {report.state_dir}" + (
        " (dry run)" if report.dry_run else "")))
    for col in ("what", "target", "pool/worker", "reason", "action", "result"):
        table.add_column(col)
    for i in report.items:
        result = ("[dim]planned[/]" if report.dry_run else
                  "[green]done[/]" if i.done else f"[red]failed: {escape(str(i.error))}[/]")
        worker = f"{i.pool}/{i.worker_id}" if i.pool else ""
        table.add_row(*map(plain, (i.kind, i.target, worker, i.reason, i.action)), result)
    out.print(table)
    out.print(f"{verb} {'clean up' if report.dry_run else 'clean up'} "
              f"{sum(1 for i in report.items if i.kind == 'worker')} worker process(es); "
              f"{report.left_behind} item(s) left behind.")


def asdict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


STATUS_STYLE = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[red]fail[/]"}


def print_checks(checks: list[Any]) -> None:
    from rich.table import Table

    table = Table(title="pit doctor")
    for col in ("", "check", "result", "what to do"):
        table.add_column(col)
    for c in checks:
        table.add_row(STATUS_STYLE[c.status], plain(c.name), plain(c.message),
                      plain(c.remediation))
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
        env = Text(str(r.env), style="green" if r.env in ("host", "ready") else "red")
        table.add_row(plain(r.pool), plain(r.python or "?"), env, health,
                      plain(r.tools or ""), plain(r.detail))
    Console(highlight=False).print(table)


def print_ray_cluster(info: Any) -> None:
    """`pit hardware --ray`: a Ray cluster's nodes and their resources."""
    from rich.table import Table

    out = Console(highlight=False)
    out.print(plain(f"Ray {info.ray_version} at {info.address}: {len(info.nodes)} node(s), "
                    f"Python {info.python}, pit "
                    f"{'importable' if info.pit_importable else 'NOT importable'} there"))
    table = Table(show_edge=False, pad_edge=False)
    for col in ("node", "ip", "alive", "CPU", "GPU", "memory GiB", "custom"):
        table.add_column(col)
    standard = {"CPU", "GPU", "memory", "object_store_memory"}
    for n in info.nodes:
        res = n.resources
        custom = ", ".join(f"{k} {v:g}" for k, v in sorted(res.items())
                           if k not in standard and not k.startswith("node:"))
        table.add_row(plain(n.node_id[:12]), plain(n.ip), "yes" if n.alive else "no",
                      f"{res.get('CPU', 0):g}", f"{res.get('GPU', 0):g}",
                      f"{res.get('memory', 0) / 2**30:.1f}", plain(custom))
    out.print(table)


def print_hardware(hw: Any, choice: Any) -> None:
    out = Console(highlight=False)
    c = hw.cpu
    out.print("[bold]CPU[/] " + escape(
        f"{c.model} ({c.vendor}, {c.arch}): {c.physical_cores} cores, {c.logical_cores} "
        f"threads, {c.usable_cpus} usable ({c.usable_reason}); flags: "
        f"{', '.join(c.flags) or 'none of interest'}"))
    for acc in hw.accelerators:
        if not acc.available:
            out.print(f"[bold]{escape(acc.kind)}[/] [dim]not available: "
                      f"{escape(str(acc.reason))}[/]")
            continue
        out.print(f"[bold]{escape(acc.kind)}[/] " + escape(
            f"driver {acc.driver or '?'} {acc.runtime}: {acc.reason}"))
        for g in acc.devices:
            out.print(escape(f"  {acc.kind}:{g.index} {g.name} {g.memory_used_mb}/"
                             f"{g.memory_total_mb} MiB used, {g.utilization_pct}% busy, "
                             f"{g.temperature_c} C, {g.power_w} W"))
    out.print(f"device = \"auto\" picks: [bold]{escape(choice.name)}[/] "
              f"({escape(str(choice.reason))})")


def print_profiles(reports: list[dict[str, Any]], detailed: bool, advice: bool) -> None:
    from rich.table import Table

    out = Console(highlight=False)
    for r in reports:
        util = r["utilization"]
        color = "green" if util < 0.7 else "yellow" if util < 0.95 else "red"
        table = Table(title=plain(f"pool {r['pool']} ({r['profile']}, size {r['size']}, "
                                  f"capacity {r['capacity']})"), show_header=False)
        table.add_column("what")
        table.add_column("value")
        rows = [
            ("utilization (last minute)", f"[{color}]{util:.0%}[/]"),
            ("queue saturated", f"{r['queue_saturated_share']:.0%} of the last minute"),
            ("memory per worker", f"mean {r['memory_mean_mb']} MiB, max {r['memory_max_mb']} "
                                  f"MiB, growth {r['memory_growth_mb_per_100_requests']} "
                                  "MiB/100 requests"),
            ("recycles", ", ".join(f"{k} {v}" for k, v in r["recycles"].items()) or "none"),
            ("calls / errors", f"{r['calls']} / {r['error_rate']:.1%} "
                               f"{r['errors'] or ''}"),
            ("latency (last minute)", f"p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, "
                                      f"p99 {r['p99_ms']} ms, {r['calls_per_s']} calls/s"),
        ]
        for what, value in rows:  # only the utilization carries markup (its colour)
            table.add_row(what, value if what.startswith("utilization") else plain(value))
        if detailed:
            for w in r["workers"]:
                table.add_row(plain(f"  {w['id']} (pid {w['pid']})"),
                              f"{w['state']}, {w['requests']} requests, {w['errors']} errors, "
                              f"{w['rss_mb']:.0f} MiB, {w['cpu_pct']:.0f}% CPU")
        out.print(table)
        if advice:
            for line in r["recommendations"] or ["nothing to change"]:
                out.print(f"  [bold]advice[/]: {escape(line)}")
