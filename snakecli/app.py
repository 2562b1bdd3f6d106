"""The `pit` command line: thin commands over `runtime`, rendering in `snakecli.render`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from . import render
from .run_cmd import run_script

app = typer.Typer(
    name="pit",
    help="Pools of isolated, long-lived Python worker processes over gRPC.\n\n"
         "Environment: PIT_CONFIG (config file to use), PIT_STATE_DIR (state directory, "
         "default .pit/ beside the config).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class Globals:
    debug: bool = False


@app.callback()
def _globals(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of pit's own errors."),
) -> None:
    ctx.obj = Globals(debug=debug)


@app.command(
    "run",
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
)
def run(
    ctx: typer.Context,
    script: Path = typer.Argument(..., help="Python script to run as __main__.", exists=False),
    args: list[str] | None = typer.Argument(None, help="Arguments passed to the script."),
    pool: list[str] | None = typer.Option(
        None, "--pool", "-p", help="Start only this pool (repeatable); default: all pools."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Config file (default: nearest pit.toml or "
                                     "pyproject.toml with [tool.pit])."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Run the script without waiting "
                                                          "for every worker to be ready."),
) -> None:
    """Start the configured pools, run SCRIPT with them, stop them.

    The script reaches the pools through runtime.execute(...) or runtime.current_pools().
    With no config at all, one pool runs the built-in showcase adapter.

    Exit codes: the script's own; 1 on an uncaught exception; 2 bad config or pool name;
    5 workers failed to start; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """
    code = run_script(script, list(args or []), pools=list(pool or []), config=config,
                      wait=not no_wait, debug=ctx.obj.debug)
    raise typer.Exit(code)


@app.command("cleanup")
def cleanup_cmd(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", help="State directory (default: PIT_STATE_DIR, else .pit/ "
                                  "beside the config)."),
    force: bool = typer.Option(False, "--force", help="Also stop workers of hosts that are "
                                                     "alive but do not respond."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before --force."),
) -> None:
    """Remove what dead pit hosts left behind: worker processes, run dirs, registry rows.

    Only processes proven to be pit's (pid, start time and the markers on their command
    line match the registry) are signalled. Exit code 0 when nothing is left behind, 1 when
    something could not be removed (or, with --dry-run, when something would be).
    """
    from runtime.cleanup import cleanup
    from runtime.config import load_config

    directory = state_dir.resolve() if state_dir else load_config().state_dir
    if force and not yes and not dry_run:
        if not sys.stdin.isatty():
            render.err_console.print("--force stops workers of live hosts: add --yes to "
                                     "confirm when not at a terminal")
            raise typer.Exit(2)
        typer.confirm("Stop the workers of hosts that are alive but do not respond?",
                      abort=True)
    report = cleanup(directory, dry_run=dry_run, force=force)
    if json_out:
        render.print_json(render.cleanup_dict(report))
    else:
        render.print_cleanup(report)
    raise typer.Exit(0 if report.left_behind == 0 else 1)


@app.command("version")
def version() -> None:
    """Print pit's version."""
    from runtime import __version__

    print(__version__)


def main() -> None:
    app(prog_name="pit")
