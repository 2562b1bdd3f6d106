"""`pit export`: files for other tools, printed to stdout."""

from __future__ import annotations

import sys

import typer

from .examples import epilog

export_app = typer.Typer(help="Print files for other tools (redirect them to a file).",
                         no_args_is_help=True)


@export_app.command("grafana", epilog=epilog("export grafana"))
def grafana() -> None:
    """A Grafana dashboard for pit's Prometheus metrics.

    The metrics are served with [telemetry] prometheus_port. Import the file in Grafana
    (Dashboards > Import)."""
    from runtime.telemetry.grafana import dashboard_text

    sys.stdout.write(dashboard_text())
