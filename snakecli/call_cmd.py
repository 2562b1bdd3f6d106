"""`pit call POOL TOOL ARGS`: one tool call, its result printed as JSON on stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from runtime.errors import PitError

from . import render
from .exit_codes import exit_code


def parse_args(text: str) -> dict[str, Any]:
    """ARGS as the call's keyword arguments: a JSON object. Raises typer.BadParameter."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(
            f"{text!r} is not valid JSON ({exc}): give the arguments as one JSON object in "
            """single quotes, e.g. '{"a": 1, "b": 2}'""", param_hint="ARGS") from None
    if not isinstance(value, dict):
        raise typer.BadParameter(
            f"{text!r} is a JSON {type(value).__name__}, not an object: the arguments go by "
            """name, e.g. '{"a": 1, "b": 2}'""", param_hint="ARGS")
    return value


def call_cmd(
    ctx: typer.Context,
    pool: str = typer.Argument(..., metavar="POOL", help="The pool whose tool to run."),
    tool: str = typer.Argument(..., metavar="TOOL", help="The tool to run."),
    args: str = typer.Argument("{}", metavar="ARGS", help="The tool's arguments as one JSON "
                                                          "object (default: none)."),
    instance: str | None = typer.Option(
        None, "--instance", metavar="ID",
        help="Run it in the pool of this running host (id prefix, as `pit status` shows) "
             "instead of a fresh pool."),
    config: Path | None = typer.Option(
        None, "--config", "-c", metavar="FILE",
        help="Config file of the fresh pool (default: nearest pit.toml or pyproject.toml "
             "with [tool.pit])."),
    timeout: float | None = typer.Option(None, "--timeout", metavar="SECONDS",
                                         help="Fail the call after this long."),
) -> None:
    """Run one tool call and print its result as JSON.

    Starts POOL from the project's config alone, runs TOOL with ARGS, prints the result as
    JSON on stdout and stops the pool; with --instance, the call runs in that running host's
    pool instead (nothing is started). Exit codes: 0 the call returned; 1 the tool raised
    (its error and traceback on stderr) or another pit error; 2 bad ARGS, config or pool
    name; 3 no such running host; 4 or 5 the pool could not start (see `pit run --help`).
    """
    values = parse_args(args)
    try:
        if instance is not None:
            from runtime.control.client import call_tool, find_instance

            result = call_tool(find_instance(instance), pool, tool, values, timeout=timeout)
        else:
            from runtime.oneshot import call_once

            result = call_once(pool, tool, values, config=config, timeout=timeout,
                               python_path=[str(Path.cwd())])
    except PitError as exc:
        render.print_error(exc, debug=ctx.obj.debug)
        code = (2 if exc.category == "invalid_argument" else  # ARGS the tool does not take
                exit_code(exc.category, 1))
        raise typer.Exit(code) from None
    render.print_json(result)
