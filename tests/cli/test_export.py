"""`pit export grafana`: the shipped dashboard, its queries checked against the metric names
the Prometheus exporter really produces."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from runtime import Pool
from runtime.control.client import find_instances, get_status
from runtime.telemetry.grafana import dashboard, queried_metrics
from runtime.telemetry.prometheus import families
from snakecli.app import app


class _Snapshot:
    def __init__(self, snap: dict[str, Any]) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Any]:
        yield from families(self.snap)


def exposed_metric_names(snap: dict[str, Any]) -> set[str]:
    """Every series name the exporter serves for ``snap``, read from its exposition text (a
    counter family ``x`` is served as ``x_total``; its TYPE line may name either)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(snap))  # type: ignore[arg-type]
    names = set()
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("# TYPE "):  # families without a sample yet (no errors) too
            _, _, name, kind = line.split()
            names.add(name + "_total" if kind == "counter" and not name.endswith("_total")
                      else name)
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split()[0])
    return names


def live_names() -> set[str]:
    """The names served for a live pool's snapshot (as its control service returns it)."""
    with Pool(size=1) as pool:
        pool.execute("add", {"a": 1, "b": 2})
        [inst] = find_instances(pool.instance.id)
        snap = get_status(inst)
    assert snap["pools"][0]["workers"], snap
    return exposed_metric_names(snap)


def test_every_dashboard_query_names_a_metric_the_exporter_serves() -> None:
    names = live_names()
    assert "pit_pool_calls_total" in names and "pit_worker_rss_bytes" in names
    queried = queried_metrics(dashboard())
    assert len(queried) >= 10
    assert queried <= names, f"queries name metrics pit does not export: {queried - names}"


def test_a_query_naming_an_unknown_metric_is_caught() -> None:
    board = dashboard()
    board["panels"][0]["targets"][0]["expr"] = "rate(pit_pool_calls_totl[1m])"
    assert "pit_pool_calls_totl" in queried_metrics(board)


def test_pit_export_grafana_prints_the_dashboard_json() -> None:
    result = CliRunner().invoke(app, ["export", "grafana"])
    assert result.exit_code == 0
    board = json.loads(result.output)
    assert board == dashboard() and board["panels"]
    assert all(t["expr"] for p in board["panels"] for t in p["targets"])
