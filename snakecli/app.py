"""The `pit` command line: thin commands over `runtime`, rendering in `snakecli.render`."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from runtime import logs
from runtime.errors import PitError

from . import export_cmd, logs_cmd, render
from .call_cmd import call_cmd
from .examples import epilog
from .exit_codes import EXIT_CODES, EXIT_NO_HOST, exit_code
from .run_cmd import run_script
from .setup_cmd import setup_cmd
from .stop_cmd import stop_cmd

app = typer.Typer(
    name="pit",
    help="Pools of isolated, long-lived Python worker processes over gRPC.\n\n"
         "Environment: PIT_CONFIG (config file to use), PIT_STATE_DIR (state directory, "
         "default .pit/ beside the config), PIT_UV (the uv binary to use), PIT_LOG_LEVEL "
         "(same as --log-level), PIT_PRESTART=0 (no fork server started ahead of the first "
         "pool).",
    epilog=epilog("pit"),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class Globals:
    debug: bool = False
    verbose: int = 0  # -v: 1, -vv: 2
    quiet: bool = False


def _show_versions(value: bool) -> None:
    if value:
        from runtime.versions import versions

        render.print_versions(versions())
        raise typer.Exit(0)


@app.callback()
def _globals(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", "-V", callback=_show_versions,
                                 is_eager=True, help="Show the versions of pit, Python, "
                                                     "grpcio and uv, then exit."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, show_default=False,
                                help="More output: pit's logs at info (-vv: debug, workers' "
                                     "output included) and uv's own progress in `pit setup`."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Less output on stderr: no "
                                                            "progress lines, errors only."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of pit's own errors."),
    log_level: str | None = typer.Option(
        None, "--log-level", envvar="PIT_LOG_LEVEL", metavar="LEVEL",
        help="Log level of pit's own logs on stderr (default: error), one for all or per "
             "category: 'debug', 'error,pool=debug,worker=debug'. Categories: pool, worker "
             "(workers' stdout/stderr at debug), grpc, lifecycle, env, cli, telemetry. "
             "Wins over -v."),
) -> None:
    if verbose and quiet:
        raise typer.BadParameter("-v and -q contradict each other: give one",
                                 param_hint="-v / -q")
    if verbose and not log_level:
        log_level = "info" if verbose == 1 else "debug"
    try:
        logs.configure(log_level)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-level") from None
    if log_level:
        os.environ[logs.ENV_VAR] = log_level  # the worker pools of `pit run` follow it
    ctx.obj = Globals(debug=debug, verbose=verbose, quiet=quiet)


@app.command(
    "run",
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
    epilog=epilog("run"),
)
def run(
    ctx: typer.Context,
    script: str | None = typer.Argument(None, metavar="SCRIPT",
                                        help="Python script to run as __main__."),
    args: list[str] | None = typer.Argument(None, metavar="ARGS",
                                            help="Arguments passed to the script."),
    module: str | None = typer.Option(None, "-m", "--module", metavar="MODULE",
                                      help="Run MODULE as __main__ instead of a script, "
                                           "like python -m (SCRIPT and ARGS are then its "
                                           "arguments)."),
    pool: list[str] | None = typer.Option(
        None, "--pool", "-p", metavar="POOL",
        help="Start only this pool (repeatable); default: all pools."),
    config: Path | None = typer.Option(
        None, "--config", "-c", metavar="FILE",
        help="Config file (default: nearest pit.toml or pyproject.toml with [tool.pit])."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Run the script without waiting "
                                                          "for every worker to be ready."),
    quiet_workers: bool = typer.Option(False, "--quiet-workers", help="Do not copy the "
                                       "workers' stdout/stderr to stderr ([pool/worker-N] "
                                       "lines); `pit logs` still has it."),
) -> None:
    """Run a script (or -m module) with the pools up.

    Starts the configured pools, runs SCRIPT (or MODULE) in this process as __main__, stops
    the pools. The script reaches the pools through runtime.execute(...) or
    runtime.current_pools(). With no config at all, one pool runs the built-in showcase
    adapter. `pit stop` stops it as SIGTERM does.

    Exit codes: the script's own; 1 on an uncaught exception (or another pit error); 2 bad
    config, pool name, script path or module; 4 a pool's environment could not be built (its
    python not found, uv or its requirements failed); 5 workers failed to start; 130
    interrupted (Ctrl-C); 143 terminated (SIGTERM, `pit stop`).
    """
    rest = list(args or [])
    if module is not None:
        rest = [script, *rest] if script is not None else rest
    elif script is None:
        raise typer.BadParameter("give a SCRIPT to run, or -m MODULE", param_hint="SCRIPT")
    code = run_script(Path(script) if module is None and script else None, rest,
                      module=module, pools=list(pool or []), config=config,
                      wait=not no_wait, debug=ctx.obj.debug,
                      forward_workers=not quiet_workers)
    raise typer.Exit(code)


app.command("call", epilog=epilog("call"))(call_cmd)
app.command("stop", epilog=epilog("stop"))(stop_cmd)


@app.command("cleanup", epilog=epilog("cleanup"))
def cleanup_cmd(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", metavar="DIR",
        help="State directory (default: PIT_STATE_DIR, else .pit/ beside the config)."),
    force: bool = typer.Option(False, "--force", help="Also stop workers of hosts that are "
                                                     "alive but do not respond."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before --force."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", metavar="ADDRESS",
        help="Also kill dead hosts' worker actors on this Ray cluster (auto, host:port or "
             "ray://host:port)."),
) -> None:
    """Remove what dead pit hosts left behind.

    Worker processes, run dirs, registry rows. Only processes proven to be pit's (pid,
    start time and the markers on their command line match the registry) are signalled. A
    broken config does not stop it: it then uses PIT_STATE_DIR or the default state dir,
    and says so. Exit code 0 when nothing is left behind, 1 when something could not be
    removed (or, with --dry-run, when something would
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


app.command("setup", epilog=epilog("setup"))(setup_cmd)


@app.command("doctor", epilog=epilog("doctor"))
def doctor_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
) -> None:
    """Check the setup and say what to fix.

    Checks the config, state dir, uv, each pool's interpreter, env, gRPC packages, adapter
    and device, thread limits, orphaned workers, hardware. Every check prints pass / warn /
    fail with a remediation line. Exit code 1 if any fails.
    """
    from runtime.doctor import run_checks

    checks = run_checks()
    if json_out:
        render.print_json([render.asdict(c) for c in checks])
    else:
        render.print_checks(checks)
    raise typer.Exit(1 if any(c.status == "fail" for c in checks) else 0)


@app.command("hardware", epilog=epilog("hardware"))
def hardware_cmd(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
    ray_address: str | None = typer.Option(
        None, "--ray", metavar="ADDRESS",
        help="List a Ray cluster's nodes and resources instead (auto, host:port or "
             "ray://host:port; needs the ray extra)."),
) -> None:
    """Show the CPU, GPUs and the device picked.

    GPUs: NVIDIA via NVML, AMD via rocm-smi, Apple MPS; and the device `device = "auto"`
    would pick. With --ray, the cluster's nodes and their resources instead."""
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


gen_app = typer.Typer(help="Generate project files.", epilog=epilog("gen"),
                      no_args_is_help=True)
app.add_typer(gen_app, name="gen")


def _gen_adapter(name: str, force: bool, debug: bool, quiet: bool) -> None:
    from runtime.scaffold import generate_adapter

    try:
        made = generate_adapter(name, Path.cwd(), force=force)
    except PitError as exc:
        render.print_error(exc, debug=debug)
        raise typer.Exit(2) from None
    if not quiet:
        render.err_console.print(f"created {made.module.name} and tests/{made.test.name}; "
                                 f"[pools.{name}] -> {made.adapter} in {made.config.name}\n"
                                 f"next: pit setup && pytest tests/{made.test.name}",
                                 markup=False)


@gen_app.command("adapter", epilog=epilog("gen adapter"))
def gen_adapter(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME",
                               help="Adapter/pool name (a Python identifier)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Create an adapter, its test and its pool.

    Writes NAME.py (an adapter with two tools, one streaming), tests/test_NAME.py (drives it
    through a real pool) and a [pools.NAME] entry in pit.toml."""
    _gen_adapter(name, force, ctx.obj.debug, ctx.obj.quiet)


@app.command("gen-adapter", hidden=True)
def gen_adapter_alias(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """Same as `pit gen adapter`."""
    _gen_adapter(name, force, ctx.obj.debug, ctx.obj.quiet)


@app.command("status", epilog=epilog("status"))
def status_cmd(
    ctx: typer.Context,
    watch: bool = typer.Option(False, "--watch", "-w", help="Redraw live (Ctrl-C to stop)."),
    instance: str | None = typer.Option(None, "--instance", metavar="ID",
                                        help="Only this host (id prefix)."),
    pool: str = typer.Option("", "--pool", metavar="NAME", help="Only this pool."),
    json_out: bool = typer.Option(False, "--json", help="JSON: one snapshot per instance; "
                                                        "with --watch, one object per line."),
    interval: float = typer.Option(0.5, "--interval", metavar="SECONDS",
                                   help="Seconds between redraws (>= 0.25)."),
    wait: bool = typer.Option(False, "--wait", help="When no host runs, wait for one "
                                                    "instead of exiting 3."),
) -> None:
    """Show the running pit hosts, their pools and workers.

    Piped, every column in fixed-width lines; --watch without a terminal prints one frame per
    interval. Exit code 3 when no host is running (unless --wait).
    """
    from .status_cmd import show_status

    raise typer.Exit(show_status(instance=instance, pool=pool, watch=watch, json_out=json_out,
                                 interval=max(interval, 0.25), wait=wait))


app.command("logs", epilog=epilog("logs"))(logs_cmd.logs)
app.add_typer(export_cmd.export_app, name="export", epilog=epilog("export"))


@app.command("profile-inspector", epilog=epilog("profile-inspector"))
def profile_inspector_cmd(
    instance: str | None = typer.Option(None, "--instance", metavar="ID",
                                        help="Only this host (id prefix)."),
    pool: str = typer.Option("", "--pool", metavar="POOL", help="Only this pool."),
    detailed: bool = typer.Option(False, "--detailed", help="Add per-worker rows."),
    recommendations: bool = typer.Option(False, "--recommendations",
                                         help="Print advice derived from the numbers."),
    json_out: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Profile the pools of the running hosts.

    Per pool: utilization, queue saturation, memory per worker and its growth, recycles,
    errors, latency. Exit code 3 when no host is running."""
    from runtime.control.client import find_instances, get_status
    from runtime.control.inspector import analyse
    from runtime.hardware import cpu_info

    try:
        found = find_instances(instance)
    except PitError as exc:
        render.print_error(exc)
        raise typer.Exit(exit_code(exc.category, EXIT_NO_HOST)) from None
    cpus = cpu_info().usable_cpus
    reports = [analyse(p, cpus) for inst in found for p in get_status(inst, pool)["pools"]]
    if json_out:
        render.print_json(reports)
    else:
        render.print_profiles(reports, detailed, recommendations)


@app.command("version", epilog=epilog("version"))
def version() -> None:
    """Show the versions of pit and what it runs on.

    pit, Python (and its path), grpcio and uv (and its path), as `pit --version` does."""
    from runtime.versions import versions

    render.print_versions(versions())


def main() -> None:
    app(prog_name="pit")
