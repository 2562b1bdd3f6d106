"""The worker-transport seam: what a pool drives of a worker, whatever kind of process it is.

    pool (scheduler, sessions, deadlines, crash barrier, lifecycle, status)
      |  start() / send() / stream() / abandon() / ping() / cleanup_session() / stop() / kill()
      v
    WorkerTransport  --  pit's worker (`worker_handle.WorkerHandle`, launch "pit"):
                             spawned or forked `python -m runtime.worker`, unix sockets in the
                             run dir, a ready file, the call lane (socket frames) beside gRPC,
                             shared memory, direct calls
                     --  a command-started worker (launch "command", `worker_command`):
                             any process that serves Snakepit's BridgeService (`ExecuteTool`,
                             `ExecuteStreamingTool`, `Ping`, `CleanupSession`) on a loopback
                             TCP port it is told on its command line

A second kind plugs in by how it is launched and found, not by a second pool: `WorkerHandle`
starts ``worker_command`` (placeholders filled by `command_argv`) in its own process group,
waits until the port answers `Ping` (no ready file: the process need know nothing of pit),
and from then on speaks unary `ExecuteTool` per call, with the call's deadline as the RPC's;
streams, pings, session cleanup, exit watching (the cause and output tail of a crash),
timeouts, replacement and recycling are the pool's, as for its own workers. What it does not
get: the call lane, shared memory, direct calls and the fork server (those need pit's worker).
Cleanup can prove such a process is pit's only if the command carries ``{run_id}`` and
``{token}`` (as ``--run-id`` / ``--instance-token``); without them `pit cleanup` leaves it be.
A loopback TCP port can be reached by every local user, where pit's own workers listen on
unix sockets in a 0700 run dir: this kind is for workers that cannot do otherwise.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol

PLACEHOLDERS = ("port", "adapter", "host_pid", "run_id", "token")


class WorkerTransport(Protocol):
    """One worker as the pool drives it (`worker_handle.WorkerHandle` implements it)."""

    id: str
    state: str  # starting | ready | draining | stopping | dead
    capacity: int
    in_flight: int

    @property
    def pid(self) -> int | None: ...

    async def start(self) -> None: ...
    def send(self, req: Any, timeout: float | None,
             on_done: Callable[[Any, BaseException | None], None],
             big: dict[str, Any] | None = None) -> int: ...
    def stream(self, req: Any, timeout: float | None) -> AsyncIterator[Any]: ...
    def abandon(self, cid: int, err: BaseException) -> None: ...
    async def ping(self, timeout: float) -> bool: ...
    async def cleanup_session(self, session_id: str, timeout: float = 5.0) -> bool: ...
    async def stop(self) -> None: ...
    def kill(self) -> None: ...


def command_argv(template: Sequence[str], **values: Any) -> list[str]:
    """``worker_command`` with its placeholders filled (`PLACEHOLDERS`)."""
    try:
        return [part.format(**values) for part in template]
    except KeyError as exc:
        raise ValueError(f"worker_command {list(template)!r}: {{{exc.args[0]}}} is not a "
                         f"placeholder (use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}; "
                         "write a literal brace twice: {{ }})") from None
    except (IndexError, ValueError) as exc:
        raise ValueError(f"worker_command {list(template)!r}: {exc} (placeholders: "
                         f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}; write a literal "
                         "brace twice: {{ }})") from None


def adapter_flags(args: Mapping[str, Any] | Sequence[str]) -> list[str]:
    """``adapter_args`` as command-line arguments: a list as it is; a table as
    ``--name value`` (``--name`` alone for true, nothing for false or null; other values
    than strings and numbers as JSON)."""
    if not isinstance(args, Mapping):
        return list(args)
    out: list[str] = []
    for name, value in args.items():
        if value is None or value is False:
            continue
        out.append(f"--{name.replace('_', '-')}")
        if value is not True:
            out.append(value if isinstance(value, str) else json.dumps(value))
    return out


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now (the worker binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listens_in_tree(pid: int, port: int) -> bool:
    """Whether the process ``pid`` or one of its descendants listens on 127.0.0.1:``port``:
    the answer to the pool's Ping came from the worker it started, not from another program
    that bound the port between `free_port` and the worker's own bind."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for proc in procs:
        try:
            # net_connections since psutil 6; connections before (pit accepts >= 5.9)
            conns = getattr(proc, "net_connections", proc.connections)(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
               for c in conns):
            return True
    return False


async def wait_answering(ping: Callable[[float], Any], exited: Callable[[], bool],
                         deadline: float, poll_s: float = 0.02) -> bool:
    """Ping until the worker answers (True), it exits, or ``deadline`` (loop time) passes."""
    loop = asyncio.get_running_loop()
    while not exited() and loop.time() < deadline:
        if await ping(min(0.5, max(deadline - loop.time(), 0.01))):
            return True
        await asyncio.sleep(poll_s)
    return False
