"""The `pit` command line: thin commands over `runtime`, rendering in `snakecli.render`."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from runtime import logs
from runtime.errors import PitError

from . import render
from .exit_codes import EXIT_CODES
from .run_cmd import run_script

app = typer.Typer(
    name="pit",
    help="Pools of isolated, long-lived Python worker processes over gRPC.\n\n"
         "Environment: PIT_CONFIG (config file to use), PIT_STATE_DIR (state directory, "
         "default .pit/ beside the config), PIT_UV (the uv binary to use), PIT_LOG_LEVEL "
         "(same as --log-level).",
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
    log_level: str | None = typer.Option(
        None, "--log-level", envvar="PIT_LOG_LEVEL",
        help="Log level of pit's own logs on stderr (default: error), one for all or per "
             "category: 'debug', 'error,pool=debug,worker=debug'. Categories: pool, worker "
             "(workers' stdout/stderr at debug), grpc, lifecycle, env, cli, telemetry."),
) -> None:
    try:
        logs.configure(log_level)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-level") from None
    if log_level:
        os.environ[logs.ENV_VAR] = log_level  # the worker pools of `pit run` follow it
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

    Exit codes: the script's own; 1 on an uncaught exception (or another pit error); 2 bad
    config, pool name or script path; 4 a pool's environment could not be built (its python
    not found, uv or its requirements failed); 5 workers failed to start; 130 interrupted
    (Ctrl-C); 143 terminated (SIGTERM).
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
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Also kill dead hosts' worker actors on this Ray "
                                    "cluster (auto, host:port or ray://host:port)."),
) -> None:
    """Remove what dead pit hosts left behind: worker processes, run dirs, registry rows.

    Only processes proven to be pit's (pid, start time and the markers on their command
    line match the registry) are signalled. A broken config does not stop it: it then uses
    PIT_STATE_DIR or the default state dir, and says so. Exit code 0 when nothing is left
    behind, 1 when something could not be removed (or, with --dry-run, when something would
    be), 2 when the config is broken and no state dir could be found without it.
    """
    from runtime.cleanup import cleanup
    from runtime.config import load_config, state_dir_despite
    from runtime.errors import ConfigError

    try:
        directory = state_dir.resolve() if state_dir else load_config().state_dir
    except ConfigError as exc:
        try:
            guess = state_dir_despite(exc)
        except ConfigError as unguessable:
            render.print_error(unguessable, debug=ctx.obj.debug)
            raise typer.Exit(EXIT_CODES["config"]) from None
        render.print_state_dir_guess(guess)
        directory = guess.path
    if force and not yes and not dry_run:
        if not sys.stdin.isatty():
            render.err_console.print("--force stops workers of live hosts: add --yes to "
                                     "confirm when not at a terminal")
            raise typer.Exit(2)
        typer.confirm("Stop the workers of hosts that are alive but do not respond?",
                      abort=True)
    report = cleanup(directory, dry_run=dry_run, force=force, ray_address=ray_address)
    if json_out:
        render.print_json(render.cleanup_dict(report))
    else:
        render.print_cleanup(report)
    raise typer.Exit(0 if report.left_behind == 0 else 1)


@app.command("setup")
def setup_cmd(
    ctx: typer.Context,
    pool: list[str] | None = typer.Option(None, "--pool", "-p",
                                          help="Only this pool (repeatable)."),
    check: bool = typer.Option(False, "--check", help="Build nothing; exit 1 if any env is "
                                                      "missing or stale (for CI)."),
    init: bool = typer.Option(False, "--init", help="Write a starter pit.toml when there is "
                                                    "none."),
    force: bool = typer.Option(False, "--force", help="Rebuild envs even when current."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Build every pool's environment (uv venv + requirements) and health-check its adapter.

    Pools without `python` or `requirements` run on the host's interpreter and are only
    health-checked. A second run with nothing changed rebuilds nothing. Exit code 1 when a
    pool's env or adapter is not OK.
    """
    from runtime.config import find_config, load_config
    from runtime.envs.setup import setup, write_starter_config

    try:
        if init:
            written = write_starter_config(Path.cwd())
            render.err_console.print(f"wrote {written}" if written else
                                     "pit.toml exists: nothing written", markup=False)
            if find_config() is None:
                raise typer.Exit(0)
        cfg = load_config()
        with render.progress("building environments") as report:
            rows = setup(cfg, pools=list(pool or []) or None, check=check, force=force,
                         on_progress=report)
    except PitError as exc:
        render.print_error(exc, debug=ctx.obj.debug)
        raise typer.Exit(EXIT_CODES.get(exc.category, 1)) from None
    if json_out:
        render.print_json([render.asdict(r) | {"ok": r.ok} for r in rows])
    else:
        render.print_setup(rows, check)
    raise typer.Exit(0 if all(r.ok for r in rows) else 1)


@app.command("doctor")
def doctor_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
) -> None:
    """Check the setup: config, state dir, uv, each pool's interpreter, env, gRPC packages,
    adapter and device, thread limits, orphaned workers, hardware.

    Every check prints pass / warn / fail with a remediation line. Exit code 1 if any fails.
    """
    from runtime.doctor import run_checks

    checks = run_checks()
    if json_out:
        render.print_json([render.asdict(c) for c in checks])
    else:
        render.print_checks(checks)
    raise typer.Exit(1 if any(c.status == "fail" for c in checks) else 0)


@app.command("hardware")
def hardware_cmd(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
    ray_address: str | None = typer.Option(
        None, "--ray", help="List a Ray cluster's nodes and resources instead (auto, "
                            "host:port or ray://host:port; needs the ray extra)."),
) -> None:
    """Show the CPU, GPUs (NVIDIA via NVML, AMD via rocm-smi, Apple MPS) and the device
    `device = "auto"` would pick; with --ray, a Ray cluster's nodes and resources."""
    from runtime.hardware import detect, select_device

    if ray_address is not None:
        from runtime.pool.ray_cluster import cluster_info

        try:
            cluster = cluster_info(ray_address)
        except PitError as exc:
            render.print_error(exc, debug=ctx.obj.debug)
            raise typer.Exit(EXIT_CODES.get(exc.category, 1)) from None
        if json_out:
            render.print_json(render.asdict(cluster))
        else:
            render.print_ray_cluster(cluster)
        return

    hw, choice = detect(), select_device()
    if json_out:
        render.print_json(render.asdict(hw) | {"auto_device": render.asdict(choice)})
    else:
        render.print_hardware(hw, choice)


gen_app = typer.Typer(help="Generate project files.", no_args_is_help=True)
app.add_typer(gen_app, name="gen")


def _gen_adapter(name: str, force: bool, debug: bool) -> None:
    from runtime.scaffold import generate_adapter

    try:
        made = generate_adapter(name, Path.cwd(), force=force)
    except PitError as exc:
        render.print_error(exc, debug=debug)
        raise typer.Exit(2) from None
    render.err_console.print(f"created {made.module.name} and tests/{made.test.name}; "
                             f"[pools.{name}] -> {made.adapter} in {made.config.name}\n"
                             f"next: pit setup && pytest tests/{made.test.name}",
                             markup=False)


@gen_app.command("adapter")
def gen_adapter(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Adapter/pool name (a Python identifier)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Create NAME.py (an adapter with two tools, one streaming), tests/test_NAME.py (drives
    it through a real pool) and a [pools.NAME] entry in pit.toml."""
    _gen_adapter(name, force, ctx.obj.debug)


@app.command("gen-adapter", hidden=True)
def gen_adapter_alias(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """Same as `pit gen adapter`."""
    _gen_adapter(name, force, ctx.obj.debug)


@app.command("status")
def status_cmd(
    ctx: typer.Context,
    watch: bool = typer.Option(False, "--watch", "-w", help="Redraw live (Ctrl-C to stop)."),
    instance: str | None = typer.Option(None, "--instance", help="Only this host (id prefix)."),
    pool: str = typer.Option("", "--pool", help="Only this pool."),
    json_out: bool = typer.Option(False, "--json", help="JSON: one snapshot per instance; "
                                                        "with --watch, one object per line."),
    interval: float = typer.Option(0.5, "--interval", help="Seconds between redraws "
                                                          "(>= 0.25)."),
) -> None:
    """Show every running pit host on this machine, its pools and workers.

    Exit code 3 when no host is running.
    """
    from runtime.control.client import find_instances

    try:
        found = find_instances(instance)
    except PitError as exc:
        render.print_error(exc)
        raise typer.Exit(3) from None
    if watch:
        render.watch_status(found, pool, max(interval, 0.25), json_out)
    elif json_out:
        from runtime.control.client import get_status

        render.print_json([get_status(i, pool) for i in found])
    else:
        from runtime.control.client import get_status

        for inst in found:
            render.print_status(get_status(inst, pool))


@app.command("profile-inspector")
def profile_inspector_cmd(
    instance: str | None = typer.Option(None, "--instance", help="Only this host (id prefix)."),
    pool: str = typer.Option("", "--pool", help="Only this pool."),
    detailed: bool = typer.Option(False, "--detailed", help="Add per-worker rows."),
    recommendations: bool = typer.Option(False, "--recommendations",
                                         help="Print advice derived from the numbers."),
    json_out: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Profile each pool of the running hosts: utilization, queue saturation, memory per
    worker and its growth, recycles, errors, latency. Exit code 3 when no host is running."""
    from runtime.control.client import find_instances, get_status
    from runtime.control.inspector import analyse
    from runtime.hardware import cpu_info

    try:
        found = find_instances(instance)
    except PitError as exc:
        render.print_error(exc)
        raise typer.Exit(3) from None
    cpus = cpu_info().usable_cpus
    reports = [analyse(p, cpus) for inst in found for p in get_status(inst, pool)["pools"]]
    if json_out:
        render.print_json(reports)
    else:
        render.print_profiles(reports, detailed, recommendations)


@app.command("version")
def version() -> None:
    """Print pit's version."""
    from runtime import __version__

    print(__version__)


def main() -> None:
    app(prog_name="pit")
