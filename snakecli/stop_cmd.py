"""`pit stop`: ask running hosts to close their pools gracefully (the Control service's Stop)."""

from __future__ import annotations

import typer

from runtime.errors import PitError

from . import render
from .exit_codes import EXIT_NO_HOST, exit_code


def stop_cmd(
    ctx: typer.Context,
    instance: str | None = typer.Option(
        None, "--instance", metavar="ID",
        help="The host to stop (id prefix, as `pit status` shows); needed when several run."),
    every: bool = typer.Option(False, "--all", help="Stop every running host (of --instance "
                                                    "when given, every one it matches)."),
    json_out: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Ask a running host to close its pools.

    The host drains its in-flight calls and stops its workers, as on SIGTERM: a `pit run`
    host then exits (its script is interrupted as by SIGTERM: exit code 143); a program of
    your own that does not handle SIGTERM keeps running with its pools closed. pit stop
    waits until a host that exits is gone. Exit codes: 0 done; 1 a host could not be reached
    or did not exit in time; 3 no running host (or several, without --instance or --all).
    """
    from runtime.control.client import find_instance, find_instances, stop

    try:
        found = find_instances(instance) if every else [find_instance(instance)]
    except PitError as exc:
        render.print_error(exc, debug=ctx.obj.debug)
        raise typer.Exit(exit_code(exc.category, EXIT_NO_HOST)) from None
    results, failed = [], False
    for inst in found:
        try:
            results.append(stop(inst))
        except PitError as exc:
            render.print_error(exc, debug=ctx.obj.debug)
            failed = True
    if json_out:
        render.print_json([render.asdict(r) for r in results])
    else:
        render.print_stops(results)
    failed |= any(r.outcome == "exiting" and not r.exited for r in results)
    raise typer.Exit(1 if failed else 0)
