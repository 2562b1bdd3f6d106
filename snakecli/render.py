"""Rendering for the CLI: Rich on stderr for diagnostics, plain JSON for scripts."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import traceback
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def progress(what: str) -> Iterator[Callable[[Any], None]]:
    """A status line on stderr while ``what`` runs; the callback prints one line per pool
    from its final `SetupRow` (env and adapter health both)."""
    with err_console.status(what + "..."):
        def report(row: Any) -> None:
            mark = "[green]ok[/]" if row.ok else "[red]failed[/]"
            adapter = {None: "", True: ", adapter ok", False: ", adapter broken"}[row.healthy]
            err_console.print(f"  {escape(row.pool)}: {mark} (env {escape(str(row.env))}"
                              f"{adapter}) {escape(str(row.detail))}",
                              markup=True, highlight=False)
        yield report


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


STATE_STYLE = {"ready": "green", "starting": "cyan", "draining": "yellow", "stopping": "yellow",
               "dead": "red"}
SPARK = " ▁▂▃▄▅▆▇█"


def _spark(values: list[float], top: float) -> str:
    if not values or top <= 0:
        return ""
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1)))] for v in values)


def _bar(part: float, whole: float, width: int = 10) -> str:
    filled = 0 if whole <= 0 else round(min(part / whole, 1.0) * width)
    color = "green" if filled < width * 0.7 else "yellow" if filled < width else "red"
    return f"[{color}]{'█' * filled}[/][dim]{'·' * (width - filled)}[/]"


def status_renderable(snap: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if snap.get("error"):
        return Text(f"instance {snap['instance']} (pid {snap['pid']}): {snap['error']}",
                    style="red")
    parts: list[Any] = [Text(f"instance {snap['instance']}  pid {snap['pid']}  "
                             f"{snap.get('config_path') or 'no config'}", style="bold")]
    for p in snap["pools"]:
        head = (f"pool [bold]{escape(p['name'])}[/] ({escape(p['adapter'])}, {p['profile']}) "
                f"{p['ready']}/{p['size']} ready  load {_bar(p['in_flight'], p['capacity'])} "
                f"{p['in_flight']}/{p['capacity']}  queue {p['queued']}/{p['max_queue']}  "
                f"{p['calls_per_s']:.0f} calls/s  p50 {p['p50_ms'] or 0:.2f} ms  "
                f"p99 {p['p99_ms'] or 0:.2f} ms  calls {p['calls']} failed {p['failed']}  "
                f"sessions {p['sessions']}")
        if p["recycles"]:
            head += "  recycles " + escape(", ".join(f"{k} {v}" for k, v in
                                                     p["recycles"].items()))
        placed = p.get("backend", "local") != "local"  # workers on other nodes: say which
        if placed:
            head += f"  backend {escape(p['backend'])}"
        table = Table(title=None, show_edge=False, pad_edge=False)
        for col in ("worker", "pid", *(("node",) if placed else ()), "state", "python", "load",
                    "requests", "errors", "RSS MiB", "USS MiB", "memory", "CPU %", "uptime"):
            table.add_column(col)
        hist = p.get("history", [])[-30:]
        for w in p["workers"]:
            mem = [h[4].get(w["id"], 0.0) for h in hist]
            style = STATE_STYLE.get(w["state"], "white")
            why = w.get("last_recycle_reason") or ""
            state = f"[{style}]{w['state']}[/]" + (f" ↻{escape(why)}" if why else "") + (
                " (lent)" if w.get("lent") else "")
            if w.get("missed_heartbeats"):
                state = f"[bold red]unresponsive ({w['missed_heartbeats']} missed)[/]"
            table.add_row(plain(w["id"]), str(w["pid"]),
                          *((plain(w.get("node") or "this host"),) if placed else ()),
                          state, plain(w["python"]),
                          f"{_bar(w['in_flight'], w['capacity'], 6)} {w['in_flight']}/"
                          f"{w['capacity']}", str(w["requests"]), str(w["errors"]),
                          f"{w['rss_mb']:.0f}", f"{w.get('uss_mb') or 0:.0f}",
                          _spark(mem, max(mem or [0]) or 1),
                          f"{w['cpu_pct']:.0f}", f"{w['uptime_s']:.0f}s")
        parts += [Text.from_markup(head), table]
        if p["events"]:
            parts.append(Text("recent: " + "; ".join(
                f"{e['worker']} {e['kind']}" for e in p["events"][-5:]), style="dim"))
    return Group(*parts)


def print_status(snap: dict[str, Any]) -> None:
    Console(highlight=False).print(status_renderable(snap))


def watch_status(instances: list[Any], pool: str, interval: float, json_lines: bool) -> None:
    """Redraw until Ctrl-C (or the hosts go away)."""
    import time

    from rich.console import Group
    from rich.live import Live

    from runtime.control.client import get_status

    try:
        if json_lines:
            while True:
                for inst in instances:
                    print(json.dumps(get_status(inst, pool)), flush=True)
                time.sleep(interval)
        with Live(refresh_per_second=4, console=Console(highlight=False)) as live:
            while True:
                snaps = [get_status(inst, pool) for inst in instances]
                live.update(Group(*(status_renderable(s) for s in snaps)))
                time.sleep(interval)
    except KeyboardInterrupt:
        pass


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
