"""The worker-transport seam: what a pool drives of a worker, whatever kind of process it is.

    pool (scheduler, sessions, deadlines, crash barrier, lifecycle, status)
      |  start() / send() / stream() / abandon() / ping() / cleanup_session() / stop() / kill()
      v
    WorkerTransport  --  worker = "pit" (`worker_handle.WorkerHandle`): spawned or forked
                             `python -m runtime.worker`, unix sockets in the run dir, a JSON
                             ready file, the call lane (socket frames) beside gRPC, shared
                             memory, direct calls
                     --  worker = "command": any process started by ``command`` that serves
                             Snakepit's BridgeService (`ExecuteTool`, `ExecuteStreamingTool`,
                             `Ping`, `CleanupSession`) on the loopback port it is told
                     --  worker = "snakepit": Snakepit's own Python bridge (grpc_server.py),
                             launched as Snakepit's host launches it (`snakepit_env`, the
                             flags in `WorkerProcess.argv`): it dials the host's loopback
                             BridgeService (`HostInstance.bridge_address`), binds a port of
                             its choosing and writes it to SNAKEPIT_READY_FILE

A pool with backend = "ray" runs pit's own worker in a Ray actor on a cluster node
(`ray_process.RayWorkerProcess` in place of `worker_process.WorkerProcess`): it listens on
TCP, every RPC and lane connection carries the pool's secret (`protocol.secret`), over TLS
when the pool has ``tls`` (`protocol.tls`), and its lane is frames on TCP (the CallLane gRPC
stream with lane_socket = false); one the host cannot reach is called through its actor
(`ray_stub`, ``ray_calls``).

Another kind plugs in by how it is launched and found, not by a second pool: `WorkerProcess`
starts ``command`` (placeholders filled by `command_argv`) in its own process group, learns
its port (told, or read from the ready file), and the worker counts as ready once that port
answers `Ping` and the listener is in the process tree it started. From then on the channel
speaks unary `ExecuteTool` per call, with the call's deadline as the RPC's; streams, pings,
session cleanup, exit watching (the cause and output tail of a crash), timeouts, replacement
and recycling are the pool's, as for its own workers. What these kinds do not get: the call
lane, shared memory, direct calls and the fork server (those need pit's worker); and a call
that times out (at its deadline less Snakepit's margins, `lane_wire.worker_timeout`) or is
cancelled only ends its RPC: its slot is free at once and the worker may finish the tool
unseen, where pit's own worker is watched until the call really ended. Cleanup can
prove such a process is pit's only if its command line carries the run id and token
(``--run-id {run_id} --instance-token {token}``; the bridge's ``--snakepit-run-id`` /
``--snakepit-instance-token``, which pit always passes it); otherwise `pit cleanup` leaves
it be. A loopback TCP port can be reached by every local user, where pit's own workers listen
on unix sockets in a 0700 run dir: these kinds are for workers that cannot do otherwise.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..config import PLACEHOLDER_HINT, command_problem

if TYPE_CHECKING:
    from ..config import PoolConfig



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
    """A pool's ``command`` with its placeholders filled (checked by `config.command_problem`)."""
    problem = command_problem(template)
    if problem:
        raise ValueError(f"{problem} ({PLACEHOLDER_HINT})")
    return [part.format(**values) for part in template]


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


def snakepit_env(config: PoolConfig, ready_file: Path) -> dict[str, str]:
    """The environment Snakepit's host gives its bridge workers: where to write the port it
    bound (atomically, decimal), its heartbeat settings (JSON), no OpenTelemetry console
    exporter, and a quiet log."""
    heartbeat = {"enabled": config.heartbeat_interval_ms > 0,
                 "interval_ms": config.heartbeat_interval_ms,
                 "timeout_ms": config.heartbeat_timeout_ms,
                 "max_missed_heartbeats": config.heartbeat_max_missed,
                 "initial_delay_ms": 0, "dependent": config.dependent}
    # No SNAKEPIT_PROCESS_GROUP: pit starts it in a session of its own already, and the
    # bridge's own setsid would fail and print a warning into the crash tail.
    env = {"SNAKEPIT_READY_FILE": str(ready_file),
           "SNAKEPIT_HEARTBEAT_CONFIG": json.dumps(heartbeat),
           "SNAKEPIT_OTEL_CONSOLE": "false",
           "SNAKEPIT_LOG_LEVEL": os.environ.get("SNAKEPIT_LOG_LEVEL", "warning")}
    # The bridge's graceful serialization reads these; the pool's keys win, as in pit's worker.
    for name, value in (("SNAKEPIT_UNSERIALIZABLE_DETAIL", config.unserializable_detail),
                        ("SNAKEPIT_UNSERIALIZABLE_REPR_MAXLEN",
                         config.unserializable_repr_maxlen),
                        ("SNAKEPIT_TOLIST_MAX_ELEMENTS", config.tolist_max_elements)):
        if value is not None:
            env[name] = str(value)
    return env


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


def peer_pid(peer: str, server_port: int) -> int | None:
    """The pid of the local process behind a gRPC ``peer`` ("ipv4:127.0.0.1:54321") of our
    loopback server on ``server_port``, from the kernel's socket table; None when it is not a
    local TCP peer or cannot be found. Blocking (psutil): run it off the loop."""
    import psutil

    if not peer.startswith(("ipv4:", "ipv6:")):
        return None
    try:
        port = int(peer.rsplit(":", 1)[1])
        conns = psutil.net_connections(kind="tcp")
    except (ValueError, psutil.Error):
        return None
    for c in conns:
        if c.laddr and c.laddr.port == port and c.raddr and c.raddr.port == server_port:
            return c.pid
    return None


async def wait_answering(ping: Callable[[float], Any], exited: Callable[[], bool],
                         deadline: float, poll_s: float = 0.02) -> bool:
    """Ping until the worker answers (True), it exits, or ``deadline`` (loop time) passes."""
    loop = asyncio.get_running_loop()
    while not exited() and loop.time() < deadline:
        if await ping(min(0.5, max(deadline - loop.time(), 0.01))):
            return True
        await asyncio.sleep(poll_s)
    return False
