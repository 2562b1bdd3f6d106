"""`pit export`: files for other tools, printed to stdout."""

from __future__ import annotations

import sys

import typer

export_app = typer.Typer(help="Print files for other tools (redirect them to a file).",
                         no_args_is_help=True)


@export_app.command("grafana")
def grafana() -> None:
    """A Grafana dashboard for pit's Prometheus metrics ([telemetry] prometheus_port):
    pit export grafana > pit.json, then Dashboards > Import in Grafana."""
    from runtime.telemetry.grafana import dashboard_text

    sys.stdout.write(dashboard_text())
