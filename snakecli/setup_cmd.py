"""`pit setup`: build and health-check every pool's env, with its progress on stderr."""

from __future__ import annotations

from pathlib import Path

import typer

from runtime.errors import PitError

from . import render
from .exit_codes import EXIT_CODES
from .setup_progress import setup_progress


def setup_cmd(
    ctx: typer.Context,
    pool: list[str] | None = typer.Option(None, "--pool", "-p", metavar="POOL",
                                          help="Only this pool (repeatable)."),
    check: bool = typer.Option(False, "--check", help="Build nothing; exit 1 if any env is "
                                                      "missing or stale (for CI)."),
    init: bool = typer.Option(False, "--init", help="Write a starter pit.toml when there is "
                                                    "none."),
    force: bool = typer.Option(False, "--force", help="Rebuild envs even when current."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Build and health-check each pool's env.

    Builds every pool's environment (uv venv + requirements) and health-checks its adapter
    in it, showing each pool's phase and elapsed time (-v: uv's own progress too). Pools
    without `python` or `requirements` run on the host's interpreter and are only
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
        with setup_progress(quiet=ctx.obj.quiet or check, verbose=ctx.obj.verbose > 0) as view:
            rows = setup(cfg, pools=list(pool or []) or None, check=check, force=force,
                         on_progress=view.done, on_phase=view.phase,
                         on_output=view.on_output)
    except PitError as exc:
        render.print_error(exc, debug=ctx.obj.debug)
        raise typer.Exit(EXIT_CODES.get(exc.category, 1)) from None
    if json_out:
        render.print_json([render.asdict(r) | {"ok": r.ok} for r in rows])
    else:
        render.print_setup(rows, check)
    raise typer.Exit(0 if all(r.ok for r in rows) else 1)
