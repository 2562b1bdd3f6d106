"""The Grafana dashboard shipped with pit (``grafana_dashboard.json`` beside this module) for
the metrics of `runtime.telemetry.prometheus`: `pit export grafana > pit.json`, then import it
in Grafana and pick the Prometheus data source that scrapes ``[telemetry] prometheus_port``.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

DASHBOARD_FILE = "grafana_dashboard.json"
_METRIC = re.compile(r"\bpit_[a-z0-9_]+\b")


def dashboard_text() -> str:
    """The dashboard JSON as shipped."""
    return resources.files(__package__).joinpath(DASHBOARD_FILE).read_text(encoding="utf-8")


def dashboard() -> dict[str, Any]:
    return dict(json.loads(dashboard_text()))


def queried_metrics(board: dict[str, Any]) -> set[str]:
    """Every pit metric name a query of ``board`` reads (panel targets and variables)."""
    exprs = [t.get("expr", "") for p in board.get("panels", []) for t in p.get("targets", [])]
    for var in board.get("templating", {}).get("list", []):
        query = var.get("query")
        exprs.append(query.get("query", "") if isinstance(query, dict) else str(query or ""))
    return {name for expr in exprs for name in _METRIC.findall(expr)}
