"""A host instance: the run directory, identity and host-tool server shared by its pools.

Each `Pools` set (or standalone pool) is one instance: an id, a secret token written on every
worker's command line (so cleanup can prove a process is ours), a run directory (mode 0700)
holding the unix sockets and ready files, the host's BridgeService (host tools, and
ExecuteTool to any tool of its pools: `host_bridge`), its rows in the process registry, and a
sweeper that removes what dead sibling hosts left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from ...cleanup import cleanup, leftover_arenas
from ...config import ensure_state_dir
from ...control import index
from ...errors import EnvironmentProblem
from ...logs import logger
from ...protocol import pb_grpc
from ...registry import RegistryWriter
from .. import warm_zygote
from ..transport import peer_pid
from .host_bridge import HostBridgeServicer, TokenGate
from .host_tools import HostToolRegistry, ParamSpecs, make_host_tool
from .loop_thread import off_loop
from .tool_router import ToolRouter
from .worker_output import WorkerOutput, output_path, prune_output_files

log = logger("lifecycle")

MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS
SERVER_STOP_GRACE_S = 1.0
SWEEP_INTERVAL_S = 30.0


def _run_dir(state_dir: Path, instance_id: str) -> Path:
    preferred = state_dir / "run" / instance_id
    # Worker files are named "wNNNN.sock"; fall back to a short temp path when too long.
    if len(str(preferred / "w00000.ready.json")) <= MAX_SOCKET_PATH:
        return preferred
    return Path(tempfile.gettempdir()) / f"pit-{os.getuid()}" / instance_id


def private_dir(path: Path, *, readable: bool = False) -> None:
    """Create ``path`` with mode 0700 if missing, then refuse it unless it is a directory (not
    a link) owned by this user with no group or other permission bits (``readable``: no write
    bits; for the state dir's ``run/``, which older versions made 0755).

    The run dir holds the sockets calls travel on and the ready files that name them: a
    directory another local user could write to would let them stand in for a worker and read
    every call's arguments (or, on an allow_pickle pool, answer with a pickle). tmux checks its
    socket directory the same way.
    """
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = os.lstat(path)
    uid = os.getuid()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory (a symbolic link?)"
    elif st.st_uid != uid:
        problem = f"belongs to uid {st.st_uid}, not to you (uid {uid})"
    elif st.st_mode & (0o022 if readable else 0o077):
        problem = f"has mode {stat.S_IMODE(st.st_mode):04o}: it is open to other users"
    else:
        return
    raise EnvironmentProblem(
        f"pit will not use {path} for its sockets: it {problem}, so another local user could "
        "intercept calls to the workers",
        details={"path": str(path), "uid": st.st_uid, "mode": f"{stat.S_IMODE(st.st_mode):04o}"},
        hint=f"remove {path} if it is not yours to keep (ask its owner or an admin), or set "
             "PIT_STATE_DIR (or state_dir in pit.toml) to a shorter path of your own, so run "
             "directories live under it")


class HostInstance:
    def __init__(self, state_dir: Path, python_path: list[str] | None = None,
                 config_path: Path | None = None, prometheus_port: int = 0, *,
                 tool_token: str = "", tool_port: int = 0) -> None:
        """``tool_token`` / ``tool_port``: the ``[tool_bridge]`` settings; with a token the
        host also serves its BridgeService on 127.0.0.1:<tool_port> (``tool_address``) to
        calls that carry it."""
        # a warm zygote's identity, when this process started one (`warm_zygote`): the first
        # instance takes it, so that zygote's command line names its owner
        self.id, self.token = warm_zygote.reserved_identity() or \
            (secrets.token_hex(4), secrets.token_hex(16))
        self.state_dir = state_dir
        self.run_dir = _run_dir(state_dir, self.id)
        self.python_path = list(python_path or [])
        self.host_tools = HostToolRegistry()
        self.host_address = f"unix:{self.run_dir / 'host.sock'}"
        self.cores: list[Any] = []  # the PoolCores started in this instance (status, routing)
        self.default_pool: str | None = None  # the config's, for calls that name no pool
        self._router = ToolRouter(self.host_tools, lambda: self.cores,
                                  lambda: self.default_pool)
        self._registered: dict[str, list[Any]] = {}  # worker id -> RegisterTools' catalogue
        self._server: Any = None
        self._bridge = HostBridgeServicer(self.host_tools, self._router, self._registered)
        self._tcp: Any = None  # the loopback TCP server for Snakepit bridge workers
        self._tcp_address = ""
        self._tool_server: Any = None  # the [tool_bridge] listener (only with a token)
        self.tool_address = ""  # its 127.0.0.1:<port> while it listens
        self._tool_token = tool_token
        self._tool_port = tool_port
        self.config_path = config_path
        self.pool_names: list[str] = []
        self.registry: RegistryWriter | None = None
        self.started_at = time.time()
        self._sweeper: asyncio.Task[None] | None = None
        self._files = itertools.count(1)
        self.prometheus_port = prometheus_port
        self._exporter: Any = None
        self.output = WorkerOutput(output_path(state_dir, self.id))  # workers' recent output

    def worker_files(self) -> tuple[Path, Path]:
        """A fresh (socket, ready file) pair in the run dir, unique across the instance."""
        n = next(self._files)
        return self.run_dir / f"w{n}.sock", self.run_dir / f"w{n}.ready.json"

    def ensure_run_dir(self) -> None:
        """Create (or re-create) the run dir and check that nobody else can write to it;
        raises EnvironmentProblem. Before every worker start: `pit cleanup --force` on a
        paused host removes it, and the host must keep going once it resumes."""
        if self.run_dir.parent == self.state_dir / "run":
            ensure_state_dir(self.state_dir)
            private_dir(self.run_dir.parent, readable=True)
        else:  # the short fallback under the shared temp dir
            private_dir(self.run_dir.parent)
        private_dir(self.run_dir)

    async def start(self) -> None:
        self.ensure_run_dir()
        self.registry = RegistryWriter(self.state_dir)
        self._register()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        await off_loop(lambda: prune_output_files(self.state_dir))
        await self._serve()
        if self._tool_token:
            await self._serve_tools()
        if self.prometheus_port:
            from ...telemetry.prometheus import start_exporter

            self._exporter = start_exporter(self, self.prometheus_port)
        index.publish(self)

    def _register(self) -> None:
        assert self.registry is not None
        self.registry.instance_started(
            instance_id=self.id, token=self.token, control_address=self.host_address,
            config_path=str(self.config_path) if self.config_path else None,
            run_dir=str(self.run_dir), pools=",".join(self.pool_names))

    async def _serve(self) -> None:
        """The host's own gRPC server on host.sock: host tools and the control service."""
        self._server = grpc.aio.server()
        pb_grpc.add_BridgeServiceServicer_to_server(self._bridge, self._server)
        from ...control.server import add_control_service

        add_control_service(self, self._server)
        self._server.add_insecure_port(self.host_address)
        await self._server.start()

    async def ready_for_workers(self) -> None:
        """Before each worker start: the run dir exists and is private, the host is in the
        registry and serves on host.sock. `pit cleanup --force` run while this host was paused
        (SIGSTOP, a debugger) removes all three; once resumed, the host puts them back instead
        of failing every worker start for good."""
        if self._server is None:  # not serving yet: start() makes it
            return
        missing = not os.path.lexists(self.run_dir)
        self.ensure_run_dir()  # every time: a directory put in its place must be ours
        if not missing:
            return
        log.warning("instance %s: its run dir %s was removed (pit cleanup --force while this "
                    "host was paused?); re-creating it and re-registering", self.id,
                    self.run_dir)
        await self._server.stop(0)
        await self._serve()
        if self.registry is not None:
            self._register()

    async def _sweep_forever(self) -> None:
        """Remove what dead sibling hosts left behind: now, then every SWEEP_INTERVAL_S."""
        while True:
            try:
                await self.ready_for_workers()
                await asyncio.to_thread(cleanup, self.state_dir, exclude_instance=self.id)
            except Exception as exc:  # noqa: BLE001 - a failed sweep must not stop the host
                log.error("orphan sweep failed: %s", exc)
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def close(self) -> None:
        index.withdraw(self.id)
        await off_loop(lambda: warm_zygote.discard(self.id))  # prestarted, never used
        if self._exporter is not None:
            await off_loop(self._exporter.shutdown)
            self._exporter.server_close()
            self._exporter = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self.registry is not None:
            self.registry.instance_ended(self.id)
            await off_loop(self.registry.close)
            self.registry = None
        if self._server is not None:
            await self._server.stop(SERVER_STOP_GRACE_S)
            self._server = None
        if self._tcp is not None:
            await self._tcp.stop(SERVER_STOP_GRACE_S)
            self._tcp = None
        if self._tool_server is not None:
            await self._tool_server.stop(SERVER_STOP_GRACE_S)
            self._tool_server = None
            self.tool_address = ""
        self.output.close()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.run_dir)
        for arena in leftover_arenas(self.id):  # workers unlink theirs; this is the net
            with contextlib.suppress(OSError):
                os.unlink(arena)
        with contextlib.suppress(OSError):
            self.run_dir.parent.rmdir()  # only when no other instance is using it

    async def bridge_address(self) -> str:
        """Where Snakepit's bridge workers reach the host (their ``--elixir-address``): a
        BridgeService on a loopback TCP port, started on first use. The bridge dials it
        without credentials, so any local user could too: it serves only what the bridge
        needs (Ping, Heartbeat, InitializeSession, RegisterTools, the host tools), never
        ExecuteTool (which would reach every pool) nor the control service, which stay on
        host.sock in the 0700 run dir (`host_bridge` has the table)."""
        if self._tcp is None:  # set before the await: workers starting together share it
            self._tcp = grpc.aio.server()
            port = self._tcp.add_insecure_port("127.0.0.1:0")
            pb_grpc.add_BridgeServiceServicer_to_server(HostBridgeServicer(
                self.host_tools, self._router, self._registered, execute_tools=False,
                tools_from=lambda peer, tools: self._bridge_tools(peer, port, tools)),
                self._tcp)
            self._tcp_address = f"127.0.0.1:{port}"
            try:
                await self._tcp.start()
            except BaseException:
                self._tcp = None
                raise
        return self._tcp_address

    async def _serve_tools(self) -> None:
        """The ``[tool_bridge]`` listener: the host's BridgeService (ExecuteTool included) on
        127.0.0.1:<tcp_port>, for calls that carry the token (`host_bridge.TokenGate`)."""
        server = grpc.aio.server(interceptors=[TokenGate(self._tool_token)])
        pb_grpc.add_BridgeServiceServicer_to_server(self._bridge, server)
        try:
            port = server.add_insecure_port(f"127.0.0.1:{self._tool_port}")
        except RuntimeError as exc:  # grpc's "failed to bind"
            raise EnvironmentProblem(
                f"the host cannot listen on 127.0.0.1:{self._tool_port} for [tool_bridge]: "
                f"{exc}", hint="pick another tcp_port, or 0 for any free port") from None
        await server.start()
        self._tool_server = server
        self.tool_address = f"127.0.0.1:{port}"

    async def _bridge_tools(self, peer: str, port: int, tools: Any) -> bool:
        """RegisterTools on the bridge's TCP listener: is it from one of our pools' bridge
        workers? False: not one of ours (any local user can dial the port). The catalogue is
        kept (`registered_tools`) but not made the pool's tool list: the bridge registers
        only its @tool methods, not the names its execute_tool dispatches (the showcase's
        `add`, `ping`), so checking calls against it would refuse good ones."""
        pid = await asyncio.to_thread(peer_pid, peer, port)
        for core in tuple(self.cores):
            if pid is not None and pid in core.pids():
                return True
        log.warning("instance %s: RegisterTools from %s (pid %s), not one of its bridge "
                    "workers: refused", self.id, peer, pid)
        return False

    def registered_tools(self, worker_id: str | None = None) -> list[Any]:
        """The tool catalogue a worker sent with RegisterTools (Snakepit's bridge does, under
        an id of its own making); None: every catalogue kept, newest last."""
        if worker_id is None:
            return [t for tools in list(self._registered.values()) for t in tools]
        return list(self._registered.get(worker_id, ()))

    def register_host_tool(self, name: str, fn: Callable[..., Any], *,
                           description: str | None = None,
                           parameters: ParamSpecs | None = None,
                           session_id: str | None = None) -> None:
        """Make ``fn`` a host tool (see `host_tools.make_host_tool`); replaces one of the same
        name and scope. Raises InvalidArgument."""
        tool = make_host_tool(name, fn, description=description, parameters=parameters,
                              session_id=session_id)
        self.host_tools.register(tool)
        shadowed = [c.name for c in tuple(self.cores) if c.tool_spec(name) is not None]
        if shadowed and not tool.session_id:
            log.info("host tool %r has the name of a tool of pool %s: calls through the "
                     "host's ExecuteTool that name no pool get the host tool", name,
                     ", ".join(repr(n) for n in shadowed))

    def unregister_host_tool(self, name: str, *, session_id: str | None = None) -> bool:
        """Remove a host tool (the session's own with ``session_id``); False when there was
        none by that name in that scope."""
        return self.host_tools.unregister(name, session_id or "")

