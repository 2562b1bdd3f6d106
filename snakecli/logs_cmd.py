"""`pit logs`: the workers' recent output from the running hosts, or followed live."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import typer

from runtime.errors import PitError

from . import render
from .exit_codes import exit_code

if TYPE_CHECKING:
    from runtime.control.worker_logs import HostEnded, LogLine



def logs(
    instance: str | None = typer.Option(None, "--instance", metavar="ID",
                                        help="Only this host (id prefix)."),
    pool: str = typer.Option("", "--pool", metavar="POOL", help="Only this pool."),
    worker: str = typer.Option("", "--worker", metavar="WORKER",
                               help="Only this worker (its id: worker-3)."),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output "
                                                               "until Ctrl-C."),
    since: str | None = typer.Option(None, "--since", metavar="AGE",
                                     help="Only output of the last 30s, 5m, 2h, 1d."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line: instance, "
                                                        "pool, worker, at, text."),
) -> None:
    """Print the workers' output of running hosts.

    Each line is prefixed [pool/worker-N].

    Each host keeps about 1 MiB per worker in memory, and writes every line to
    <state dir>/logs/<instance>.log (rotated). Exit code 3 when no host is running, 2 for a
    bad --since or a pool no running host has.
    """
    from runtime.control.client import check_pool, find_instances
    from runtime.control.worker_logs import (
        LogLine,
        follow,
        parse_since,
        read_lines,
        since_time,
    )

    try:
        start = since_time(parse_since(since) if since else None)
        found = find_instances(instance)
        check_pool(found, pool)
    except PitError as exc:
        render.print_error(exc)
        raise typer.Exit(exit_code(exc.category, 2)) from None
    several = len(found) > 1
    if not follow_:
        lines, gone = read_lines(found, pool=pool, worker=worker, since=start)
        for line in lines:
            _emit(line, several, json_out)
        for host in gone:
            _ended(host)
        return
    stream = follow(found, pool=pool, worker=worker, since=start)
    try:
        for item in stream:
            if isinstance(item, LogLine):
                _emit(item, several, json_out)
            else:
                _ended(item)
    except KeyboardInterrupt:
        pass
    finally:
        stream.close()


def _emit(line: LogLine, several: bool, json_out: bool) -> None:
    if line.dropped:
        render.err_console.print(f"({line.dropped} line(s) dropped: read too slowly)",
                                 markup=False)
    if json_out:
        print(json.dumps({"instance": line.instance, "pool": line.pool, "worker": line.worker,
                          "at": line.at, "text": line.text}), flush=True)
        return
    prefix = f"{line.instance} {line.prefix}" if several else line.prefix
    sys.stdout.write(f"{prefix} {line.text}\n")
    sys.stdout.flush()


def _ended(host: HostEnded) -> None:
    render.err_console.print(f"host {host.instance} (pid {host.pid}) {host.why}",
                             markup=False)
