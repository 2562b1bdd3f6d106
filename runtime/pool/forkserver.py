"""Host side of the fork server (`runtime/worker/zygote.py`): start it once per pool, ask it
for workers, learn their exit codes.

A forked worker is not the host's child, so a `ForkedProcess` (`zygote_processes`) stands in
for ``asyncio.subprocess.Process``: its output comes through a pipe the host made and handed
over with the request, its exit code from the zygote's ``exit`` message. The zygote itself is
an asyncio subprocess, or the process's warm zygote (`warm_zygote`), when the pool can take
it, as a `ClaimedProcess`. If the zygote dies, its workers keep running; the host then
watches each through a pidfd (exit code unknown: reported as "is gone") and starts a new
zygote for the next worker. A zygote that could not load the adapter is not restarted on its
own: the spawns that were waiting for it get its error (with that run's output only), and only
a later spawn (a replacement, after the pool's backoff) tries a new one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
from typing import Any

import psutil

from ..errors import WorkerStartError
from ..logs import logger
from ..registry import flag
from . import warm_zygote
from .host.worker_output import lines_of
from .zygote_processes import ClaimedProcess, ForkedProcess

log = logger("lifecycle")
OUTPUT_TAIL_LINES = 40
DRAIN_S = 3.0  # at close: how long the zygote may take to answer what was asked and exit


class ForkServer:
    """One zygote for one pool: ``await spawn(argv)`` -> ForkedProcess."""

    def __init__(self, pool: str, python: str, common_argv: list[str], env: dict[str, str],
                 instance: Any = None, startup_timeout: float = 30.0) -> None:
        self.pool = pool
        self.python = python
        self.common_argv = common_argv  # --adapter, --run-id, --instance-token, --host-pid...
        self.env = env
        self.instance = instance  # its registry gets a row per zygote (for pit cleanup)
        self.startup_timeout = startup_timeout
        self.pid: int | None = None
        self.generation = 0
        self.row_id = "fork-server"  # its registry row: one per zygote started
        self.fork_safe = True
        self.output: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        # asyncio's Process, or a warm zygote's ClaimedProcess (the same parts)
        self._proc: Any = None
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[ForkedProcess]] = {}
        # every forked child, from the "forked" message on, until its "exit" message
        self._children: dict[int, ForkedProcess] = {}
        self._unwanted: set[int] = set()  # requests whose caller gave up: kill what comes
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[Any]] = []
        self._closing = False
        self._restart: asyncio.Task[None] | None = None
        self._load_failure: str | None = None  # the current run's "failed" message
        self.start_error: WorkerStartError | None = None  # why the last start() failed

    @property
    def alive(self) -> bool:
        return self._sock is not None and self._proc is not None and \
            self._proc.returncode is None

    @property
    def _registry(self) -> Any:
        return self.instance.registry if self.instance is not None else None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._closing = False
        self._load_failure = self.start_error = None
        # A fresh tail per run: a late line of the previous zygote must not land in this
        # one's error.
        self.output = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        warm = warm_zygote.take(self.python, self.common_argv, self.env)
        if warm is not None:  # started before the host's imports, told its pool just now
            ours, self._proc = warm.sock, await ClaimedProcess.adopt(warm.popen)
        else:
            ours, self._proc = await self._exec()
        ours.setblocking(False)
        self._sock = ours
        self.pid = self._proc.pid
        self.generation += 1
        self.row_id = f"fork-server-{self.generation}"
        self._ready = loop.create_future()
        # Its exception is raised by the wait below; if that wait was cancelled (the pool
        # closing meanwhile) nobody else will read it, and asyncio would print it at exit.
        self._ready.add_done_callback(_retrieve)
        loop.add_reader(ours.fileno(), self._on_message)
        self._tasks = [loop.create_task(self._pump_output(self._proc, self.output)),
                       loop.create_task(self._watch_exit(self._proc, self.row_id))]
        if self._registry is not None:
            self._registry.worker_started(
                instance_id=self.instance.id, token=self.instance.token, pool=self.pool,
                worker_id=self.row_id, pid=self.pid, socket="")
        try:
            info = await asyncio.wait_for(asyncio.shield(self._ready), self.startup_timeout)
        except asyncio.TimeoutError:
            await self.close()
            self.start_error = self._error(f"was not ready within {self.startup_timeout:g} s")
            raise self.start_error from None
        except WorkerStartError:
            await self._wait_gone()
            # Built now that its output is complete: the "failed" message, or the socket's
            # close, can arrive before what the zygote wrote to its pipe (a fatal signal's
            # stack: the lines that name the crash).
            self.start_error = self._error(
                "exited before it was ready" if self._load_failure is None
                else f"could not load the adapter: {self._load_failure}")
            raise self.start_error from None
        self.fork_safe = bool(info.get("fork_safe", True))
        if info.get("threads", 1) > 1:
            log.warning("pool %r: the fork server runs %d threads; forking may deadlock",
                        self.pool, info["threads"])

    async def _exec(self) -> tuple[socket.socket, Any]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [self.python, "-m", "runtime.worker", "--zygote", *self.common_argv,
                "--control-fd", str(theirs.fileno())]
        try:
            return ours, await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=self.env, start_new_session=True,
                pass_fds=(theirs.fileno(),))
        except OSError as exc:
            ours.close()
            raise WorkerStartError(f"pool {self.pool!r}: cannot start the fork server with "
                                   f"{self.python}: {exc}",
                                   hint="check the pool's python setting") from None
        finally:
            theirs.close()

    def _error(self, what: str) -> WorkerStartError:
        tail = "\n".join(self.output) or "(no output)"
        return WorkerStartError(
            f"pool {self.pool!r}: the fork server (pid {self.pid}) {what}.\n"
            f"Its last output:\n{tail}", details={"pool": self.pool, "cause": "fork_server"},
            hint="check that the adapter imports: python -m runtime.worker --health-check "
                 f"--adapter {self.common_argv[1] if len(self.common_argv) > 1 else '...'}")

    async def _wait_gone(self) -> None:
        """Wait (bounded) for the zygote to exit and for its output up to the end."""
        if self._proc is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 2.0)
        if self._tasks:  # the output pump ends at the pipe's EOF
            await asyncio.wait(self._tasks[:1], timeout=0.5)

    def _on_message(self) -> bool:
        """Handle one message from the zygote; False when there was none to read."""
        assert self._sock is not None
        try:
            data = self._sock.recv(1 << 16)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._lost()
            return True
        msg = json.loads(data)
        op = msg.get("op")
        if op == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(msg)
        elif op == "failed" and self._ready is not None and not self._ready.done():
            self._load_failure = str(msg.get("message", ""))
            self._ready.set_exception(self._error(f"could not load the adapter: "
                                                  f"{self._load_failure}"))
        elif op == "forked":
            child = ForkedProcess(int(msg["pid"]), asyncio.get_running_loop())
            self._children[child.pid] = child  # before any "exit" message can arrive
            fut = self._waiting.pop(msg.get("id"), None)
            if msg.get("id") in self._unwanted:
                self._unwanted.discard(msg["id"])
                _kill(child)
            elif fut is not None and not fut.done():
                fut.set_result(child)
        elif op == "error":
            fut = self._waiting.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_exception(WorkerStartError(
                    f"pool {self.pool!r}: the fork server could not fork a worker: "
                    f"{msg.get('message', '')}"))
        elif op == "exit":
            gone = self._children.pop(int(msg["pid"]), None)
            if gone is not None:
                gone.exited(int(msg["code"]))
        return True

    def _ours(self, pid: int) -> bool:
        """``pid`` still runs with this pool's markers (not a recycled pid)."""
        try:
            cmd = psutil.Process(pid).cmdline()
        except (psutil.Error, OSError):
            return False
        token = flag(self.common_argv, "--instance-token")
        return token is not None and flag(cmd, "--instance-token") == token

    def _lost(self) -> None:
        """The zygote's socket closed: it died (or is stopping). Its workers live on."""
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(self._error("exited before it was ready"))
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(WorkerStartError(
                    f"pool {self.pool!r}: the fork server died while forking a worker"))
        self._waiting.clear()
        for child in self._children.values():
            if self._closing and self._ours(child.pid):
                # The pool has stopped every worker it knew before closing its fork server:
                # a fork still alive now slipped through (e.g. a stop signal lost between fork
                # and the child's own signal set-up). It must not outlive the pool.
                log.warning("pool %r: worker pid %d outlived its pool; killing it", self.pool,
                            child.pid)
                _kill(child)
            child.watch_without_parent()
        self._children.clear()
        if not self._closing and self._restart is None and self._proc is not None and \
                self._load_failure is None:
            # supervised: a new zygote now, so the next replacement does not wait for one
            # (not after a load failure: a new one would fail the same way, at once)
            self._restart = asyncio.get_running_loop().create_task(self._start_again())

    async def _start_again(self) -> None:
        try:
            await asyncio.sleep(0.1)  # let the dead one's exit be seen first
            await self.spawn_ready()
        except Exception as exc:  # noqa: BLE001 - the next spawn() tries again and reports
            log.error("pool %r: the fork server could not be restarted: %s", self.pool, exc)
        finally:
            self._restart = None

    async def _pump_output(self, proc: Any,
                           output: collections.deque[str]) -> None:
        assert proc.stdout is not None
        async for line in lines_of(proc.stdout):
            output.append(line)
            if self.instance is not None:  # `pit logs` shows the zygote's output too
                self.instance.output.add(self.pool, "fork-server", line)
            log.debug("[%s/fork-server] %s", self.pool, line)

    async def _watch_exit(self, proc: Any, row_id: str) -> None:
        code = await proc.wait()
        if self._registry is not None:
            self._registry.worker_ended(instance_id=self.instance.id, pool=self.pool,
                                       worker_id=row_id, reason=f"exit {code}")
        if proc is self._proc and self._sock is not None:
            self._lost()

    async def spawn_ready(self) -> None:
        """Start the zygote unless it runs (again, after it died). Raises WorkerStartError.

        Callers that waited while another one's start failed get that failure: the workers
        a pool starts together would otherwise each start (and fail) a zygote of their own."""
        generation = self.generation
        async with self._lock:
            if self.generation != generation and self.start_error is not None:
                raise self.start_error
            if not self.alive:
                if self._proc is not None:
                    log.warning("pool %r: the fork server is gone; starting a new one",
                                self.pool)
                await self.start()

    async def spawn(self, argv: list[str]) -> ForkedProcess:
        """A new worker process running ``python -m runtime.worker <argv>``; (re)starts the
        zygote when it is not running. Raises WorkerStartError."""
        await self.spawn_ready()
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        rid = next(self._ids)
        fut: asyncio.Future[ForkedProcess] = loop.create_future()
        self._waiting[rid] = fut
        try:
            socket.send_fds(self._sock, [json.dumps({"op": "fork", "id": rid,
                                                     "argv": argv}).encode()], [write_fd])
        except OSError as exc:
            self._waiting.pop(rid, None)
            os.close(read_fd)
            raise WorkerStartError(f"pool {self.pool!r}: the fork server did not take the "
                                   f"request: {exc}") from None
        finally:
            os.close(write_fd)
        try:
            child = await asyncio.wait_for(fut, self.startup_timeout)
        except BaseException:
            os.close(read_fd)
            if self._waiting.pop(rid, None) is not None:
                self._unwanted.add(rid)  # cancelled (pool closing): the child must not live
            elif fut.done() and not fut.cancelled() and fut.exception() is None:
                _kill(fut.result())  # forked, but its caller gave up as the answer came
            raise
        try:
            reader = asyncio.StreamReader(limit=1 << 20)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                         os.fdopen(read_fd, "rb", 0))
        except BaseException:
            _kill(child)  # cancelled here (pool closing): nobody else knows of this process
            raise
        child.stdout = reader
        return child

    async def close(self) -> None:
        """Stop the zygote (its workers are stopped by the pool, not here).

        The host shuts its side of the socket: the zygote serves the fork requests already
        sent, answers them, and exits at the end of them. Answers for requests whose caller
        gave up (pool closing mid-start) are read meanwhile and their children killed, so no
        fork can outlive the pool unseen (a SIGTERM could land after such a fork, before its
        answer was read). SIGTERM, then SIGKILL, only if it does not exit by itself."""
        self._closing = True
        if self._restart is not None:
            self._restart.cancel()
            await asyncio.gather(self._restart, return_exceptions=True)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_WR)
        if self._proc is not None and self._proc.returncode is None:
            try:
                await asyncio.wait_for(self._proc.wait(), DRAIN_S)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(self._proc.wait(), 2.0)
                except asyncio.TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        self._proc.kill()
                    await self._proc.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, 1.0)
        while self._sock is not None and self._on_message():
            pass  # the zygote is gone: read what it answered, up to _lost() at the end
        if self._sock is not None:
            self._lost()
        if self._unwanted:
            log.warning("pool %r: %d fork request(s) unanswered at close", self.pool,
                        len(self._unwanted))


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _kill(child: ForkedProcess) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)  # its own session: pgid = pid


def supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork") and \
        hasattr(socket, "send_fds")
