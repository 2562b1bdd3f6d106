"""One worker's OS process, as the host starts, watches and ends it.

    argv() / env() --> spawn: `python -m runtime.worker` in its own session (asyncio subprocess)
                   \\-> fork: the pool's ForkServer forks it from its zygote (argv less 3)
    pid --> output pump: stdout + stderr lines, the last OUTPUT_TAIL_LINES kept, every line
                         to the instance's `WorkerOutput` (`pit logs`)
        --> exit watch: wait() -> exit_code, leftovers in its process group SIGKILLed,
                        then its owner's ``on_exit(code)`` (`WorkerHandle` records the death)
    ready: the ready file it writes (read once, refused unless it is its own) or, for a
           command-started worker, the loopback port it was told and listens on

It owns the run-dir files it is given (gRPC socket, ready file, stack file, progress file, lane
socket; removed at `remove_files`) and what crash classification reads of it: the output tail,
the cgroup's OOM-kill count at start, the progress file (the call it was running). It knows
nothing of calls (`worker_channel.WorkerChannel` carries them) nor of the pool
(`worker_handle.WorkerHandle` decides what an exit means). Everything here runs on the pool's
loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PitError, WorkerStartError
from ..logs import logger
from . import crash
from .host.worker_output import lines_of
from .transport import (
    adapter_flags,
    command_argv,
    free_port,
    listens_in_tree,
    snakepit_env,
)

if TYPE_CHECKING:
    from ..config import PoolConfig
    from ..protocol.tls import HostTls
    from .forkserver import ForkServer
    from .host.instance import HostInstance

READY_POLL_S = 0.005
TERM_GRACE_S = 2.0  # SIGTERM -> SIGKILL
OUTPUT_TAIL_LINES = 40

log = logger("worker")


def result_flags(config: PoolConfig) -> list[str]:
    """How the worker encodes results JSON cannot hold: only the keys the pool sets, so that
    the worker's SNAKEPIT_* environment variables apply to the others."""
    flags = ["--strict-results"] if config.strict_results else []
    if config.allow_device_copy:
        flags.append("--allow-device-copy")
    for flag, value in (("--unserializable-detail", config.unserializable_detail),
                        ("--unserializable-repr-maxlen", config.unserializable_repr_maxlen),
                        ("--tolist-max-elements", config.tolist_max_elements)):
        if value is not None:
            flags += [flag, str(value)]
    return flags


class WorkerProcess:
    """The process behind one worker. The pool sets ``python``, ``bridge``, ``extra_env`` and
    ``forkserver`` before `launch`."""

    def __init__(self, worker_id: str, config: PoolConfig, instance: HostInstance) -> None:
        self.id = worker_id
        self.config = config
        self.python = sys.executable  # the pool's env interpreter, when it has one
        self.bridge: Path | None = None  # the worker bridge dir for env pools
        self.extra_env: dict[str, str] = {}  # device variables
        self.forkserver: ForkServer | None = None  # None: spawn a fresh interpreter
        self._instance = instance
        self._socket, self._ready_file = instance.worker_files()
        self.stack_file = self._socket.with_suffix(".stacks")
        self.progress_file = self._socket.with_suffix(".progress")
        self.lane_socket = self._socket.with_suffix(".lane")
        self.node = ""  # where it runs, when not on this host (a Ray-placed worker)
        self.exit_wait_s = 0.0  # > 0: how long a broken connection waits for its exit
        self.secret = ""  # what every RPC to it must carry ("" for a worker on a unix socket)
        self.tls: HostTls | None = None  # how the host checks a worker on TLS (Ray: `tls`)
        self._port = 0  # a command-started or Snakepit worker's loopback port
        self._host_tcp = ""  # where a Snakepit bridge worker dials the host
        self.pid: int | None = None
        self.started_at = time.time()
        self.ready_info: dict[str, Any] = {}
        self.output: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self.exit_code: int | None = None
        self.cause = ""  # what ended it (`crash.classify`), once it exited
        self._oom_before: int | None = None
        self._proc: Any = None  # asyncio.subprocess.Process, or a ForkedProcess
        self._tasks: list[asyncio.Task[Any]] = []  # the output pump, the exit watch

    # --- how it starts ----------------------------------------------------------------------
    @property
    def address(self) -> str:
        """Where its gRPC server listens: a unix socket in the run dir, or the loopback port
        of a command-started worker (see `transport`)."""
        if self.config.worker == "pit":
            return f"unix:{self._socket}"
        return f"127.0.0.1:{self._port}"

    @property
    def lane_endpoint(self) -> Path | str:
        """Where the host opens its call lane: the socket path it chose in the run dir."""
        return self.lane_socket

    def call_stub(self) -> tuple[Any, str] | None:
        """(a stand-in for the gRPC stub, its route's name) when calls cannot go to
        `address` (a Ray worker the host cannot reach); None: the channel connects there."""
        return None

    def argv(self) -> list[str]:
        if self.config.worker != "pit":
            argv = command_argv(self.config.command, python=self.python, port=self._port,
                                adapter=self.config.adapter, host_pid=os.getpid(),
                                run_id=self._instance.id, token=self._instance.token)
            if self.config.worker == "snakepit":  # the flags Snakepit's host passes
                argv += ["--adapter", self.config.adapter, "--port", "0",
                         "--elixir-address", self._host_tcp,
                         "--snakepit-run-id", self._instance.id,
                         "--snakepit-instance-name", f"pit-{self._instance.id}",
                         "--snakepit-instance-token", self._instance.token]
            return argv + adapter_flags(self.config.adapter_args)
        argv = [self.python, "-m", "runtime.worker", "--adapter", self.config.adapter,
                "--listen", f"unix:{self._socket}", "--ready-file", str(self._ready_file),
                "--run-id", self._instance.id, "--instance-token", self._instance.token,
                "--host-address", self._instance.host_address, "--host-pid", str(os.getpid()),
                "--worker-id", self.id, "--max-message-mb", str(self.config.max_message_mb),
                "--max-sessions", str(self.config.max_sessions),
                "--session-ttl", f"{self.config.session_ttl_s:g}",
                "--stack-file", str(self.stack_file), "--threads", str(self.config.capacity)]
        if self.config.capacity == 1:  # progress is "the one running call": one thread only
            argv += ["--progress-file", str(self.progress_file)]
        if self.config.allow_pickle:
            argv.append("--allow-pickle")
        argv += result_flags(self.config)
        if self.config.adapter_args:  # a table: a list is refused for pit's worker
            argv += ["--adapter-args", json.dumps(self.config.adapter_args)]
        if self.config.call_lane and self.config.lane_socket:
            argv += ["--lane-socket", str(self.lane_socket)]
        if not self.config.dependent:
            argv.append("--independent")
        else:
            argv += ["--dependent-timeout", f"{self.config.dependent_timeout_ms / 1000:g}",
                     "--host-pings", f"{self.config.heartbeat_interval_ms / 1000:g}"]
        return argv

    def zygote_argv(self) -> list[str]:
        """What the pool's fork server needs of `argv` (forked workers inherit its command
        line, and `pit cleanup` recognises them by these markers)."""
        argv = ["--adapter", self.config.adapter, "--run-id", self._instance.id,
                "--instance-token", self._instance.token, "--host-pid", str(os.getpid())]
        return argv + (["--independent"] if not self.config.dependent else [])

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update(self.config.worker_env())
        if self.bridge is not None:
            # A pool env: only the bridge, the user's code and what the pool's own `env`
            # names (a Snakepit checkout's priv/python), never the host's packages.
            env.pop("PYTHONHOME", None)
            paths = [str(self.bridge), *self._instance.python_path,
                     self.config.env.get("PYTHONPATH", "")]
        else:
            paths = [*self._instance.python_path, env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env["PYTHONUNBUFFERED"] = "1"
        if self.config.worker == "snakepit":
            env.update(snakepit_env(self.config, self._ready_file))
        return env

    async def launch(self) -> None:
        """Spawn (or fork) the process and register it; raises WorkerStartError."""
        try:
            await self._instance.ready_for_workers()
        except (PitError, OSError) as exc:  # a start failure the pool backs off from
            raise WorkerStartError(
                f"pool {self.config.name!r}: worker {self.id} cannot start: {exc}",
                details={"pool": self.config.name, "worker": self.id},
                hint=getattr(exc, "hint", None)) from None
        self._oom_before = crash.oom_kill_count()
        if self.config.worker == "command":
            self._port = free_port()
        elif self.config.worker == "snakepit":
            self._host_tcp = await self._instance.bridge_address()
        if self.forkserver is not None:
            self._proc = await self.forkserver.spawn(self.argv()[3:])
        else:
            await self._spawn()
        self.pid = self._proc.pid
        if self._instance.registry is not None:
            self._instance.registry.worker_started(
                instance_id=self._instance.id, token=self._instance.token,
                pool=self.config.name, worker_id=self.id, pid=self.pid,
                socket=self.address)

    async def _spawn(self) -> None:
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv(), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                env=self.env(), start_new_session=True)
        except OSError as exc:
            raise WorkerStartError(
                f"pool {self.config.name!r}: cannot start worker with "
                f"{self.argv()[0]}: {exc}",
                hint="check the pool's python setting" if self.config.worker == "pit" else
                "check the pool's command (its first word must be an executable)") from None

    def watch(self, on_exit: Callable[[int | None], Awaitable[None]]) -> None:
        """Pump its output and await its exit; ``on_exit(code)`` runs once it exited."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._pump_output()))
        self._tasks.append(loop.create_task(self._watch_exit(on_exit)))

    # --- readiness --------------------------------------------------------------------------
    async def wait_ready_file(self, deadline: float, exited: Callable[[], bool]) -> bool:
        """Poll for the ready file until it appears (True), the worker ``exited``, or
        ``deadline`` (loop time) passes."""
        loop = asyncio.get_running_loop()
        while not self._ready_file.exists():
            if exited() or loop.time() > deadline:
                return False
            await asyncio.sleep(READY_POLL_S)
        return True

    def read_port(self) -> None:
        """Take the port a Snakepit bridge worker wrote to SNAKEPIT_READY_FILE (decimal, no
        newline). Kills it and raises WorkerStartError for anything else."""
        try:
            text = self._ready_file.read_text()
            port = int(text)
            if not 0 < port < 65536:
                raise ValueError(f"port {port} out of range")
        except (OSError, ValueError) as exc:
            self.kill()
            raise self.start_error(f"wrote an unreadable ready file (a port number "
                                   f"expected): {exc}") from None
        self._port = port

    def read_ready(self) -> None:
        """Take ``ready_info`` from the ready file, once it proves to come from the process we
        started: the host connects only to the socket paths it chose itself, never to ones a
        file names. Kills it and raises WorkerStartError otherwise."""
        try:
            info = json.loads(self._ready_file.read_text())
            if not isinstance(info, dict):
                raise ValueError(f"a JSON {type(info).__name__}, not an object")
        except (OSError, ValueError) as exc:
            self.kill()
            raise self.start_error(f"wrote an unreadable ready file: {exc}") from None
        named = {"address": f"unix:{self._socket}", "lane_socket": str(self.lane_socket)}
        wrong = [f"{key}={info.get(key)!r}" for key, want in named.items()
                 if info.get(key) not in (None, want)]
        if info.get("pid") != self.pid or wrong:
            self.kill()
            raise self.start_error(
                f"has a ready file that is not its own (pid {info.get('pid')!r}, expected "
                f"{self.pid}"
                f"{'; ' + ', '.join(wrong) if wrong else ''}): something else wrote to the "
                "run dir")
        self.ready_info = info

    async def check_listener(self) -> None:
        """A command-started worker answered on its port: take it as ready only if the
        process we started (or a child of it) listens there. Kills it and raises
        WorkerStartError otherwise."""
        pid = self.pid
        if pid is None or not await asyncio.to_thread(listens_in_tree, pid, self._port):
            self.kill()
            raise self.start_error(
                f"was answered on port {self._port} by a process it did not start "
                "(another program took the port): refusing to send it calls")
        self.ready_info = {"pid": self.pid, "features": [], "tools": []}

    def start_error(self, what: str) -> WorkerStartError:
        tail = "\n".join(self.output) or "(no output)"
        return WorkerStartError(
            f"pool {self.config.name!r}: worker {self.id} (pid {self.pid}) {what}.\n"
            f"Its last output:\n{tail}",
            details={"pool": self.config.name, "worker": self.id, "exit_code": self.exit_code,
                     "cause": self.cause},
            hint=self._start_hint())

    def _start_hint(self) -> str:
        if self.config.worker == "snakepit":
            return ("run `pit doctor`: it runs the bridge's own --health-check (its gRPC "
                    f"packages and adapter {self.config.adapter!r} must import)")
        if self.config.worker == "command":
            return ("check that the command starts a worker that serves BridgeService on "
                    "127.0.0.1:{port}")
        return (f"check that adapter {self.config.adapter!r} imports and initializes: "
                f"python -m runtime.worker --health-check --adapter {self.config.adapter}")

    # --- while it runs, and its end ---------------------------------------------------------
    async def _pump_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        prefix = f"[{self.config.name}/{self.id}]"
        async for line in lines_of(self._proc.stdout):
            self.output.append(line)
            self._instance.output.add(self.config.name, self.id, line)
            log.debug("%s %s", prefix, line)

    async def _watch_exit(self, on_exit: Callable[[int | None], Awaitable[None]]) -> None:
        assert self._proc is not None
        code = await self._proc.wait()
        self.exit_code = code
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)  # leftovers in the worker's group
        await on_exit(code)

    def output_tail(self) -> str:
        return crash.tail_text(list(self.output))

    def classify(self, *, hung: bool, forced: str) -> str:
        """Name what ended it (`crash.classify`: its exit code, output tail, OOM kills since
        it started), once it exited; ``forced``: why the host killed it, when it did."""
        self.cause = crash.classify(self.exit_code, self.output_tail(),
                                    oom_before=self._oom_before,
                                    oom_after=crash.oom_kill_count(), hung=hung, forced=forced)
        return self.cause

    async def usage(self, uss: bool) -> tuple[float, float, float | None] | None:
        """(RSS MiB, CPU % since the last call, USS MiB when ``uss``) of a worker the host
        cannot sample by pid (one placed elsewhere), sampled where it runs; None for one of
        this machine's processes, which the host samples itself (psutil)."""
        return None

    def progress(self) -> tuple[int, int] | None:
        """(call running when it died, last call it finished), from the shared file."""
        try:
            data = self.progress_file.read_bytes()
            running, last_done = struct.unpack("<QQ", data[:16])
            return running, last_done
        except (OSError, struct.error):
            return None

    async def dump_stacks(self, dest_dir: Path) -> Path | None:
        """Ask the worker for its Python stacks (SIGUSR1 -> faulthandler) and keep a copy."""
        if not self.running:
            return None
        with contextlib.suppress(OSError):
            start = self.stack_file.stat().st_size
            os.kill(self._proc.pid, signal.SIGUSR1)
            for _ in range(50):
                await asyncio.sleep(0.02)
                if self.stack_file.stat().st_size > start:
                    break
            await asyncio.sleep(0.05)  # let it finish writing every thread
            dest_dir.mkdir(parents=True, exist_ok=True)
            name = f"{self._instance.id}-{self.config.name}-{self.id}-{int(time.time())}.txt"
            dest = dest_dir / name
            dest.write_bytes(self.stack_file.read_bytes()[start:])
            return dest
        return None

    @property
    def running(self) -> bool:
        """Started, and its exit not seen yet."""
        return self._proc is not None and self._proc.returncode is None

    def terminate(self) -> None:
        """SIGTERM its process group (its owner waits, then `kill`s: TERM_GRACE_S)."""
        if self.running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL its process group now."""
        if self.running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    async def wait_tasks(self, timeout: float) -> None:
        """Give the output pump and the exit watch up to ``timeout`` each to end, then cancel
        them."""
        for task in self._tasks:
            if not task.done():
                await asyncio.wait({task}, timeout=timeout)
                task.cancel()

    def record_end(self, reason: str) -> None:
        """Note in the host's registry that it ended, and why."""
        if self._instance.registry is not None:
            self._instance.registry.worker_ended(
                instance_id=self._instance.id, pool=self.config.name, worker_id=self.id,
                reason=reason)

    def remove_files(self) -> None:
        for path in (self._socket, self._ready_file, self.stack_file, self.progress_file,
                     self.lane_socket):
            with contextlib.suppress(OSError):
                path.unlink()
