"""How `pit status` lays out its lines (`snakecli.status_view`), from a recorded snapshot."""

from __future__ import annotations

import json
from pathlib import Path

from rich.cells import cell_len

from runtime.control.status_watch import ExitedHost, StatusFrame
from snakecli.status_view import (
    LOCAL_COLUMNS,
    POOL_FIELDS,
    WORKER_COLUMNS,
    Column,
    frame_lines,
    table,
)

SNAP = json.loads((Path(__file__).parents[1] / "fixtures" / "status_snapshot.json").read_text())


def lines(width: int | None, snap: dict | None = None) -> list[str]:
    frame = StatusFrame(0.0, [snap or SNAP])
    return [t.plain for t in frame_lines(frame, width)]


def test_without_a_width_every_column_and_field_is_printed_in_full() -> None:
    out = lines(None)
    header = next(ln for ln in out if ln.startswith("worker "))
    assert header.split() == " ".join(c.title for c in LOCAL_COLUMNS).split()
    rows = [ln for ln in out if ln.startswith("worker-")]
    assert len(rows) == len(SNAP["pools"][0]["workers"])
    assert all("…" not in ln for ln in out)
    pool = next(ln for ln in out if ln.startswith("pool "))
    assert all(get(SNAP["pools"][0]) in pool for get, _ in POOL_FIELDS)
    assert "node" not in header.split()  # a local pool's workers are all on this host
    # fixed width: the last column (uptime) is right-aligned, so every line ends together,
    # and a right-aligned number ends under the end of its title
    assert len({len(ln) for ln in [header, *rows]}) == 1
    end = header.index("requests") + len("requests")
    assert [row[:end].split()[-1] for row in rows] == [
        str(w["requests"]) for w in SNAP["pools"][0]["workers"]]


def test_a_ray_pool_shows_its_backend_and_each_workers_node() -> None:
    pool = dict(SNAP["pools"][0], backend="ray")
    pool["workers"] = [dict(w, node="10.0.0.7 node-a") for w in pool["workers"]]
    out = lines(None, dict(SNAP, pools=[pool]))
    header = next(ln for ln in out if ln.startswith("worker "))
    assert header.split() == " ".join(c.title for c in WORKER_COLUMNS).split()
    assert "backend ray" in next(ln for ln in out if ln.startswith("pool "))
    assert all("10.0.0.7 node-a" in ln for ln in out if ln.startswith("worker-"))


def test_a_narrow_width_drops_the_least_useful_columns_instead_of_wrapping() -> None:
    wide = dict(SNAP)
    wide["pools"] = [dict(SNAP["pools"][0])]
    wide["pools"][0]["workers"] = [w | {"last_recycle_reason": "max_requests", "lent": True}
                                   for w in SNAP["pools"][0]["workers"]]
    out = lines(80, wide)
    assert all(cell_len(ln) <= 80 for ln in out), [ln for ln in out if cell_len(ln) > 80]
    header = next(ln for ln in out if ln.startswith("worker ")).split()
    assert {"worker", "state", "load", "requests"} <= set(header)
    assert "memory" not in header and "python" not in header  # the least worth keeping
    assert all(ln.startswith("worker-") for ln in out if "max_requests" in ln)
    assert "…" not in "".join(out)
    assert next(ln for ln in out if ln.startswith("pool ")).startswith("pool default (")


def test_an_added_column_is_drawn_and_dropped_like_the_others() -> None:
    streams = Column("streams", lambda w: str(w.get("streams", 0)), keep=1)
    rows = [{"id": "worker-1", "streams": 7}]
    base = [c for c in WORKER_COLUMNS if c.title == "worker"]
    full = [t.plain for t in table(rows, [*base, streams], None)]
    assert full == ["worker    streams", "worker-1        7"]
    assert [t.plain for t in table(rows, [*base, streams], 10)] == ["worker", "worker-1"]


def test_a_frame_says_which_hosts_exited_and_how_many_workers_are_orphaned() -> None:
    frame = StatusFrame(0.0, [], [ExitedHost("abcd1234", 42)], orphans=2)
    assert [t.plain for t in frame_lines(frame, None, waiting=True)] == [
        "instance abcd1234 (pid 42): exited",
        "no running pit host on this machine; waiting for one (Ctrl-C to stop)",
        "2 orphaned workers: run `pit cleanup`"]
