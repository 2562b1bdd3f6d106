"""A Snakepit host launches pit's worker: ``python -m runtime.worker`` in place of Snakepit's
``grpc_server.py`` (issue 15 B).

An Elixir Snakepit host (0.13) starts each Python worker as

    <python> <script> --adapter pkg.module.Class --port 0 --elixir-address 127.0.0.1:<port>
        --snakepit-run-id <id> --snakepit-instance-name <name> --snakepit-instance-token <tok>
    env: SNAKEPIT_READY_FILE, SNAKEPIT_HEARTBEAT_CONFIG (JSON), SNAKEPIT_PROCESS_GROUP=1

and pit's worker takes exactly that. This module owns the launch half of the contract: the
flags (`add_arguments`), what they become in pit's worker (`launch`: ``--port`` stands for
``--listen 127.0.0.1:<port>``, ``--elixir-address`` is the host address host tools are called
on, the run id and token are the markers `pit cleanup` reads), the process group, the wait for
the host before binding (`before_binding`), the bind (`bind`) and the port file
(`write_port`). The serving half (the host's session RPCs, RegisterTools, heartbeats) is
`snakepit_servicer.py`.

    main(): launch(ns) -> SnakepitLaunch (None: pit's own launch, nothing here applies)
    serve(): before_binding (setsid, Ping the host until it answers) -> load the adapter
             -> bind(127.0.0.1:<port>) -> write_port(SNAKEPIT_READY_FILE) -> serve until
             SIGTERM / SIGINT, or until the host is lost (heartbeats, when dependent)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

HOST_ADDRESS_ENV = ("SNAKEPIT_GRPC_ADDRESS", "SNAKEPIT_ELIXIR_ADDRESS")  # in this order
READY_FILE_ENV = "SNAKEPIT_READY_FILE"
HEARTBEAT_ENV = "SNAKEPIT_HEARTBEAT_CONFIG"
PROCESS_GROUP_ENV = "SNAKEPIT_PROCESS_GROUP"
DEFAULT_LISTEN_HOST = "127.0.0.1"  # loopback: the port takes no credentials (Snakepit's design)
# Waiting for the host before binding: the host may still be starting its BridgeService.
HOST_WAIT_TRIES = 60
HOST_WAIT_FIRST_DELAY_S = 0.05  # doubling after each failed try ...
HOST_WAIT_MAX_DELAY_S = 2.0  # ... up to this: about 110 s in all before giving up
HOST_PING_TIMEOUT_S = 1.0
EXIT_HOST_UNREACHABLE = 4
EXIT_NOT_BOUND = 5
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})


class LaunchError(ValueError):
    """Snakepit's flags given in a way that cannot work (the worker exits 2, as argparse)."""


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    """How the worker heartbeats its Snakepit host (Snakepit's defaults). Each session the
    host's calls carry is beaten every ``interval_ms`` (+ up to ``jitter_ms``), each beat
    waiting ``timeout_ms``; after ``max_missed_heartbeats`` failed beats in a row a
    ``dependent`` worker stops (an independent one says so and keeps serving)."""

    enabled: bool = True
    interval_ms: int = 2_000
    timeout_ms: int = 10_000
    max_missed_heartbeats: int = 3
    initial_delay_ms: int = 0
    jitter_ms: int = 0
    dependent: bool = True

    @classmethod
    def merged(cls, *layers: Mapping[str, Any]) -> HeartbeatConfig:
        """The defaults overlaid with each layer in turn. Keys may be camelCase; unknown keys
        and values that do not convert are ignored (the value before them stays)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for layer in layers:
            for key, value in layer.items():
                name = _snake_case(str(key))
                if name in known:
                    converted = _convert(name, value)
                    if converted is not None:
                        values[name] = converted
        return cls(**values)


def _snake_case(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key).lstrip("_")


def _convert(name: str, value: Any) -> bool | int | None:
    if name in ("enabled", "dependent"):
        return value.strip().lower() in _TRUE if isinstance(value, str) else bool(value)
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return None if name == "max_missed_heartbeats" and number < 0 else number


@dataclass(frozen=True, slots=True)
class SnakepitLaunch:
    """What a Snakepit host asked of this worker on its command line and in its environment."""

    port: int  # 0: any free port, reported in the ready file
    listen_host: str
    host_address: str  # the host's BridgeService, host:port
    ready_file: str  # "" when none was asked for
    instance_name: str
    heartbeat: HeartbeatConfig
    process_group: bool

    def listen_address(self, port: int | None = None) -> str:
        host = self.listen_host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"{host}:{self.port if port is None else port}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "Snakepit's launch flags",
        "A Snakepit host starts pit's worker as it starts its grpc_server.py: --port replaces "
        "--listen, and the environment may hold " + ", ".join(HOST_ADDRESS_ENV)
        + f" (the host's address), {READY_FILE_ENV} (gets the bound port), {HEARTBEAT_ENV} "
        f"(JSON: enabled, interval_ms, timeout_ms, max_missed_heartbeats, initial_delay_ms, "
        f"jitter_ms, dependent; it overrides the --heartbeat-* flags) and {PROCESS_GROUP_ENV} "
        "(1: start a session of its own, setsid).")
    g.add_argument("--port", type=int, default=None,
                   help="serve on this TCP port (0: pick one) instead of --listen")
    g.add_argument("--listen-host", default=DEFAULT_LISTEN_HOST,
                   help="the address --port binds (default: loopback only; every local user "
                        "can reach a TCP port, and it takes no credentials)")
    g.add_argument("--elixir-address", default=None,
                   help="the Snakepit host's BridgeService, host:port (default: "
                        f"${HOST_ADDRESS_ENV[0]}, else ${HOST_ADDRESS_ENV[1]})")
    g.add_argument("--snakepit-run-id", default="", help="marker of the owning host's run")
    g.add_argument("--snakepit-instance-name", default="", help="the owning host's name")
    g.add_argument("--snakepit-instance-token", default="", help="the owning host's token")
    g.add_argument("--heartbeat-enabled", action="store_true", help="heartbeat the host")
    g.add_argument("--heartbeat-interval-ms", type=int, default=None)
    g.add_argument("--heartbeat-timeout-ms", type=int, default=None)
    g.add_argument("--heartbeat-max-missed", type=int, default=None)
    g.add_argument("--heartbeat-initial-delay-ms", type=int, default=None)
    g.add_argument("--heartbeat-dependent", dest="heartbeat_dependent", action="store_true",
                   help="stop when the host misses heartbeats (the default)")
    g.add_argument("--heartbeat-independent", dest="heartbeat_dependent",
                   action="store_false", help="keep serving when the host misses heartbeats")
    parser.set_defaults(heartbeat_dependent=None)


def launch(ns: argparse.Namespace, environ: Mapping[str, str]) -> SnakepitLaunch | None:
    """The Snakepit launch ``ns`` asks for (None: ``--port`` absent, pit's own launch), with
    ``ns`` filled in for pit's worker: ``listen``, ``host_address``, ``run_id``,
    ``instance_token``. Raises LaunchError for flags that cannot work together."""
    if ns.port is None:
        return None
    if ns.listen:
        raise LaunchError("--port (a Snakepit launch) and --listen cannot be given together")
    if not 0 <= ns.port <= 65535:
        raise LaunchError(f"--port {ns.port} is not a TCP port (0-65535; 0 picks one)")
    address = ns.elixir_address or next((environ[v] for v in HOST_ADDRESS_ENV
                                         if environ.get(v)), "")
    if not address:
        raise LaunchError(f"--port needs the Snakepit host's address: --elixir-address "
                          f"host:port, or {HOST_ADDRESS_ENV[0]} in the environment")
    result = SnakepitLaunch(
        port=ns.port, listen_host=ns.listen_host, host_address=address,
        ready_file=environ.get(READY_FILE_ENV, ""), instance_name=ns.snakepit_instance_name,
        heartbeat=heartbeat_config(ns, environ),
        process_group=environ.get(PROCESS_GROUP_ENV, "").strip().lower() in _TRUE)
    ns.listen = result.listen_address()
    ns.host_address = address
    ns.run_id = ns.run_id or ns.snakepit_run_id
    ns.instance_token = ns.instance_token or ns.snakepit_instance_token
    return result


def heartbeat_config(ns: argparse.Namespace, environ: Mapping[str, str]) -> HeartbeatConfig:
    """The --heartbeat-* flags, overlaid with SNAKEPIT_HEARTBEAT_CONFIG (the host's word wins,
    as with Snakepit's bridge); an unreadable variable is reported and ignored."""
    flags: dict[str, Any] = {"enabled": True} if ns.heartbeat_enabled else {}
    for attr, key in (("heartbeat_interval_ms", "interval_ms"),
                      ("heartbeat_timeout_ms", "timeout_ms"),
                      ("heartbeat_max_missed", "max_missed_heartbeats"),
                      ("heartbeat_initial_delay_ms", "initial_delay_ms"),
                      ("heartbeat_dependent", "dependent")):
        if getattr(ns, attr) is not None:
            flags[key] = getattr(ns, attr)
    text = environ.get(HEARTBEAT_ENV, "")
    from_host: Any = {}
    if text:
        try:
            from_host = json.loads(text)
        except ValueError:
            from_host = None
        if not isinstance(from_host, dict):
            sys.stderr.write(f"pit worker: {HEARTBEAT_ENV} is not a JSON object; ignored: "
                             f"{text[:200]!r}\n")
            from_host = {}
    return HeartbeatConfig.merged(flags, from_host)


def enter_process_group() -> None:
    """Start a session of our own (SNAKEPIT_PROCESS_GROUP), so the host can signal the worker
    and everything it started as one group. Already a group leader (EPERM): we have one."""
    if not hasattr(os, "setsid"):
        return
    try:
        os.setsid()
    except PermissionError:
        pass
    except OSError as exc:
        sys.stderr.write(f"pit worker: cannot start a process group of its own: {exc}\n")


def ping_host(address: str, timeout: float) -> None:
    """One Ping to the host's BridgeService on a fresh channel (raises when unanswered)."""
    import grpc

    from ..protocol import pb, pb_grpc

    with grpc.insecure_channel(address) as channel:
        pb_grpc.BridgeServiceStub(channel).Ping(pb.PingRequest(message="pit worker waiting"),
                                                timeout=timeout)


def wait_for_host(address: str, pause: Callable[[float], bool],
                  ping: Callable[[str, float], None] = ping_host,
                  tries: int = HOST_WAIT_TRIES) -> str | None:
    """Ping the host until it answers, up to ``tries`` times with a doubling pause between
    tries (``pause(s)`` returns True to give up: the worker was told to stop). None once the
    host answered, else what the last try met."""
    delay = HOST_WAIT_FIRST_DELAY_S
    last = "not tried"
    for attempt in range(1, tries + 1):
        try:
            ping(address, HOST_PING_TIMEOUT_S)
            return None
        except Exception as exc:  # noqa: BLE001 - whatever stops a try, the next may work
            last = _describe(exc)
        if attempt == tries or pause(delay):
            break
        delay = min(delay * 2, HOST_WAIT_MAX_DELAY_S)
    return last


def _describe(exc: Exception) -> str:
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):  # a grpc.RpcError
        return f"{getattr(code(), 'name', code())}: {details()}"
    return f"{type(exc).__name__}: {exc}"


def before_binding(launch: SnakepitLaunch, pause: Callable[[float], bool],
                   stop_requested: Callable[[], bool]) -> int | None:
    """What a Snakepit-launched worker does before it binds: its own process group when asked,
    then wait for the host to answer a Ping. None to go on, else the exit code (0: told to
    stop meanwhile)."""
    if launch.process_group:
        enter_process_group()
    problem = wait_for_host(launch.host_address, pause)
    if stop_requested():
        return 0
    if problem is not None:
        sys.stderr.write(f"pit worker: the Snakepit host at {launch.host_address} did not "
                         f"answer a Ping in {HOST_WAIT_TRIES} tries (last: {problem}); "
                         "exiting\n")
        return EXIT_HOST_UNREACHABLE
    return None


def bind(server: Any, launch: SnakepitLaunch) -> int:
    """Bind the gRPC server to the launch's TCP port; the port bound, or 0 (stderr says why)."""
    address = launch.listen_address()
    try:
        port = int(server.add_insecure_port(address))
    except RuntimeError as exc:  # grpc refuses an address it cannot bind
        port, why = 0, str(exc)
    else:
        why = "gRPC bound nothing"
    if not port:
        sys.stderr.write(f"pit worker: cannot listen on {address}: {why} (port in use?)\n")
    return port


def write_port(path: str, port: int) -> None:
    """The ready file a Snakepit host waits for: the port in decimal, no newline, written
    whole (a temporary file renamed over it)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(str(port))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
