"""`pit status` drawn as lines that hold: at a terminal, in a pipe, in 80 columns.

A frame (`runtime.control.status_watch.StatusFrame`) becomes lines of fixed-width columns.
Columns are data (`WORKER_COLUMNS`, `POOL_FIELDS`): each says how to read its cell from a
snapshot and how much it is worth keeping (``keep``). Given a width (a terminal's), the least
worth keeping go first until a line fits, rather than wrapping; with no width (a pipe, a file)
every column is printed in full. Styles (colours) only at a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.text import Text

from .plain_text import orphan_note

Row = dict[str, Any]
GAP = "  "
STATE_STYLE = {"ready": "green", "starting": "cyan", "draining": "yellow", "stopping": "yellow",
               "dead": "red", "unresponsive": "bold red"}
SPARK = "▁▂▃▄▅▆▇█"
SPARK_POINTS = 30


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    cell: Callable[[Row], str]
    keep: int  # when too wide, the lowest goes first
    right: bool = True  # numbers align right
    style: Callable[[Row], str] | None = None


def _state(w: Row) -> str:
    if w.get("missed_heartbeats"):
        return f"unresponsive ({w['missed_heartbeats']} missed)"
    why = w.get("last_recycle_reason") or ""
    return w["state"] + (f" ↻{why}" if why else "") + (" (lent)" if w.get("lent") else "")


def _state_style(w: Row) -> str:
    return STATE_STYLE["unresponsive" if w.get("missed_heartbeats") else w["state"]] \
        if w["state"] in STATE_STYLE else ""


def _spark(values: list[float]) -> str:
    top = max(values or [0.0])
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1)))] for v in values)


WORKER_COLUMNS: list[Column] = [
    Column("worker", lambda w: str(w["id"]), 100, right=False),
    Column("pid", lambda w: str(w["pid"]), 60),
    Column("node", lambda w: str(w.get("node") or "this host"), 85, right=False),  # Ray pools
    # Ray pools: how calls reach the worker ("socket" direct over TCP, "ray-actor" through it)
    Column("lane", lambda w: str(w.get("lane") or ""), 55, right=False),
    Column("state", _state, 95, right=False, style=_state_style),
    Column("python", lambda w: str(w["python"]), 15, right=False),
    Column("load", lambda w: f"{w['in_flight']}/{w['capacity']}", 90),
    Column("requests", lambda w: str(w["requests"]), 80),
    Column("errors", lambda w: str(w["errors"]), 75),
    Column("RSS MiB", lambda w: f"{w['rss_mb'] or 0:.0f}", 70),
    Column("USS MiB", lambda w: f"{w.get('uss_mb') or 0:.0f}", 30),
    Column("memory", lambda w: _spark(w.get("_memory", [])), 10, right=False),
    Column("CPU %", lambda w: f"{w['cpu_pct'] or 0:.0f}", 65),
    Column("uptime", lambda w: f"{w['uptime_s']:.0f}s", 40),
]


def _ms(value: float | None) -> str:
    return f"{value or 0:.2f} ms"


# (text of the field, keep): the pool's header line, dropped lowest first like the columns.
POOL_FIELDS: list[tuple[Callable[[Row], str], int]] = [
    (lambda p: f"pool {p['name']} ({p['adapter']}, {p['profile']})", 100),
    (lambda p: f"{p['ready']}/{p['size']} ready", 95),
    (lambda p: f"load {p['in_flight']}/{p['capacity']}", 90),
    (lambda p: f"queue {p['queued']}/{p['max_queue']}", 85),
    (lambda p: f"{p['calls_per_s']:.0f} calls/s", 70),
    (lambda p: f"p50 {_ms(p['p50_ms'])}", 60),
    (lambda p: f"p99 {_ms(p['p99_ms'])}", 50),
    (lambda p: f"calls {p['calls']} failed {p['failed']}", 80),
    (lambda p: f"sessions {p['sessions']}", 30),
    (lambda p: f"backend {p['backend']}" if p.get("backend", "local") != "local" else "", 92),
    (lambda p: "streams {completed} failed {failed} chunks {chunks}".format(
        **{"completed": 0, "failed": 0, "chunks": 0, **(p.get("streams") or {})}), 45),
    (lambda p: f"circuit {p['circuit']}" if p.get("circuit", "closed") != "closed" else "", 98),
    (lambda p: "recycles " + ", ".join(f"{k} {v}" for k, v in p["recycles"].items())
     if p["recycles"] else "", 40),
]


LOCAL_COLUMNS = [c for c in WORKER_COLUMNS if c.title not in ("node", "lane")]


def fit(parts: list[tuple[str, int]], width: int | None, gap: str = GAP) -> list[int]:
    """Indexes of the ``(text, keep)`` parts that fit in ``width`` joined by ``gap``: the
    lowest ``keep`` dropped first; all of them when ``width`` is None. The highest one always
    stays."""
    kept = [i for i, (text, _) in enumerate(parts) if text]
    while width is not None and len(kept) > 1 and \
            sum(cell_len(parts[i][0]) for i in kept) + cell_len(gap) * (len(kept) - 1) > width:
        kept.remove(min(kept, key=lambda i: parts[i][1]))
    return kept


def table(rows: list[Row], columns: list[Column], width: int | None) -> list[Text]:
    """A header and one line per row, each column as wide as its widest cell; columns that do
    not fit in ``width`` are dropped, least worth keeping first."""
    cells = [[c.cell(r) for c in columns] for r in rows]
    widths = [max([cell_len(c.title), *(cell_len(line[i]) for line in cells)])
              for i, c in enumerate(columns)]
    # A column fits as wide as its widest cell: pass that width as the part's text length.
    kept = fit([(" " * w, c.keep) for w, c in zip(widths, columns, strict=True)], width)

    def line(texts: list[str], styles: list[str]) -> Text:
        out = Text(no_wrap=True, overflow="crop")
        for n, i in enumerate(kept):
            pad = " " * (widths[i] - cell_len(texts[i]))
            if n:
                out.append(GAP)
            out.append(pad if columns[i].right else "")
            out.append(texts[i], style=styles[i])
            out.append("" if columns[i].right else pad)
        out.rstrip()
        return out

    head = line([c.title for c in columns], ["bold"] * len(columns))
    body = [line(texts, [c.style(r) if c.style else "" for c in columns])
            for texts, r in zip(cells, rows, strict=True)]
    return [head, *body]


def snapshot_lines(snap: Row, width: int | None) -> list[Text]:
    if snap.get("error"):
        return [Text(f"instance {snap['instance']} (pid {snap['pid']}): {snap['error']}",
                     style="red")]
    out = [Text(f"instance {snap['instance']}  pid {snap['pid']}  "
                f"{snap.get('config_path') or 'no config'}", style="bold", no_wrap=True,
                overflow="crop")]
    for p in snap["pools"]:
        fields = [(text, keep) for get, keep in POOL_FIELDS if (text := get(p))]
        out.append(Text(GAP.join(fields[i][0] for i in fit(fields, width)), no_wrap=True,
                        overflow="crop"))
        hist = p.get("history", [])[-SPARK_POINTS:]
        rows = [w | {"_memory": [h[4].get(w["id"], 0.0) for h in hist]} for w in p["workers"]]
        placed = p.get("backend", "local") != "local"  # workers on other nodes: say which
        out += table(rows, WORKER_COLUMNS if placed else LOCAL_COLUMNS, width)
        if p["events"]:
            recent = "recent: " + "; ".join(f"{e['worker']} {e['kind']}"
                                            for e in p["events"][-5:])
            out.append(Text(recent, style="dim", no_wrap=True, overflow="ellipsis"))
    return out


def frame_lines(frame: Any, width: int | None, *, waiting: bool = False) -> list[Text]:
    """Every line of one frame: each host, those that exited since the last frame, orphans."""
    out: list[Text] = []
    for snap in frame.snapshots:
        out += snapshot_lines(snap, width)
    for gone in frame.exited:
        out.append(Text(f"instance {gone.instance} (pid {gone.pid}): exited", style="yellow"))
    if not frame.snapshots and waiting:
        out.append(Text("no running pit host on this machine; waiting for one (Ctrl-C to "
                        "stop)", style="dim"))
    if frame.orphans:
        out.append(Text(orphan_note(frame.orphans), style="yellow"))
    return out


def frame_header(frame: Any, interval: float) -> Text:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(frame.taken_at))
    return Text(f"pit status  {stamp}  every {interval:g}s", style="dim")
