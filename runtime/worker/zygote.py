"""The fork server (zygote): ``python -m runtime.worker --zygote --adapter ... --control-fd N``.

Started once per pool with the pool's interpreter and environment, it imports what a worker
needs (grpc, protobuf, the worker modules, the adapter's module; then ``Adapter.preload()``),
creates no gRPC object and no thread, and forks a worker for each request of its host:

    host -> zygote  {"op": "fork", "id": n, "argv": [worker args]}  + the output pipe's fd
    zygote -> host  {"op": "ready", "pid", "fork_safe", "threads"}   once, after the imports
                    {"op": "forked", "id": n, "pid": p} | {"op": "error", "id": n, "message"}
                    {"op": "exit", "pid": p, "code": c}    when a worker ends (-N: signal N)

over a SOCK_SEQPACKET socket inherited as ``--control-fd``. A forked worker starts its own
session, writes to the pipe it was given, and then runs exactly like a spawned one
(`main.serve`), watching the host's pid rather than its parent's. The zygote exits with the
host (parent-death signal, and a check of its parent pid) or when the host closes the socket;
its workers do not die with it.

A warm zygote (``--warm``: started by `runtime/pool/warm_zygote.py` before its host knew its
pool) imports what every worker needs, then waits for
``host -> zygote  {"op": "load", "argv": [--adapter ..., --run-id ...], "env": {...},
"cwd": ...}``, takes that environment (and its PYTHONPATH entries into sys.path) and
directory, loads the adapter and goes on as above.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import select
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lifetime import StopSignal

POLL_S = 0.5


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    try:
        sock.send(json.dumps(message).encode())
    except OSError:
        pass  # the host is gone; we exit at the next poll


def _import_common() -> None:
    """What every worker needs, whatever its adapter (the bulk of a zygote's start)."""
    import grpc  # noqa: F401 - imported here so every worker finds it in memory
    import grpc._server  # noqa: F401 - grpc.server() would import it in every worker
    from google.protobuf import any_pb2  # noqa: F401

    from . import lane_socket, servicer, specs  # noqa: F401
    from .main import argument_parser

    argument_parser()  # argparse's set-up costs each forked worker ~10 ms otherwise


def _preload(ns: argparse.Namespace) -> dict[str, Any]:
    from .adapter import collect_tools
    from .main import PRELOADED_TOOLS, load_adapter_class

    _import_common()
    cls = load_adapter_class(ns.adapter)
    PRELOADED_TOOLS[cls] = collect_tools(cls)
    preload = getattr(cls, "preload", None)
    if callable(preload):
        preload()
    return {"fork_safe": bool(getattr(cls, "fork_safe", True))}


def serve(ns: argparse.Namespace) -> int:
    from .lifetime import StopSignal, arm_parent_death_signal

    if ns.warm:
        ns.host_pid = ns.warm  # its --host-pid comes with the pool (see warm_zygote)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A fatal signal while importing the adapter or in preload() names the crashing line in
    # the output the host reports (main.serve does the same in each worker it forks).
    faulthandler.enable(file=sys.stderr, all_threads=False)
    if not ns.independent:
        arm_parent_death_signal()
        if ns.host_pid and os.getppid() != ns.host_pid:
            return 0
    sock = socket.socket(fileno=ns.control_fd)
    try:
        if ns.warm:
            _import_common()
            # collected and frozen while nobody waits: after the load, what is left to do is
            # the adapter's share (~15 ms of collection less on the pool's start here)
            import gc

            gc.collect()
            gc.freeze()
            loaded = _await_load(sock, ns)
            if loaded is None:
                return 0  # the host closed the socket, or is gone: never claimed
            ns = loaded
        info = _preload(ns)
    except BaseException as exc:  # noqa: BLE001 - report, then exit
        import traceback

        sys.stderr.write(f"pit fork server: adapter {ns.adapter!r} failed to load:\n"
                         f"{traceback.format_exc()}")
        sys.stderr.flush()
        _send(sock, {"op": "failed", "message": f"{type(exc).__name__}: {exc}"})
        return 3
    import gc

    gc.collect()
    gc.freeze()  # the collector never touches what the workers inherit: fewer pages copied
    stop = StopSignal()
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() through stop.fd too
    sys.stdout.flush()
    sys.stderr.flush()
    _send(sock, {"op": "ready", "pid": os.getpid(), "threads": _threads(), **info})
    while not stop.requested:
        readable, _, _ = select.select([sock.fileno(), stop.fd], [], [], POLL_S)
        if stop.fd in readable:
            stop.drain()
        _reap(sock)
        if sock.fileno() in readable:
            try:
                data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 4)
            except OSError:
                data, fds = b"", []
            if not data:
                return 0  # the host closed the socket: we are done (workers keep running)
            _fork(sock, stop, json.loads(data), fds)  # the child never returns
        if not ns.independent and ns.host_pid and os.getppid() != ns.host_pid:
            return 0
    return 0


def _await_load(sock: socket.socket, ns: argparse.Namespace) -> argparse.Namespace | None:
    """A warm zygote (``--warm``, started before its host knew its pool: see
    `runtime/pool/warm_zygote.py`) waits here, its imports done, for the pool's
    ``{"op": "load", "argv": [...], "env": {...}}``; it takes that environment for its own
    (its workers inherit it) and returns the pool's arguments. None: the host went away."""
    from .main import parse_args

    while True:
        readable, _, _ = select.select([sock.fileno()], [], [], POLL_S)
        if ns.host_pid and os.getppid() != ns.host_pid:
            return None
        if not readable:
            continue
        try:
            data = sock.recv(1 << 22)
        except OSError:
            return None
        if not data:
            return None
        msg = json.loads(data)
        if msg.get("op") == "load":
            break
    env = {str(k): str(v) for k, v in msg.get("env", {}).items()}
    os.environ.clear()
    os.environ.update(env)
    import time

    time.tzset()  # the C library read TZ as the time module started: the pool's, now
    cwd = msg.get("cwd")
    if cwd and cwd != os.getcwd():  # the host's, now: what a zygote started now would have
        started_in = os.getcwd()
        os.chdir(cwd)
        if sys.path and sys.path[0] == started_in:  # python -m put its directory first
            sys.path[0] = cwd
    # The interpreter read PYTHONPATH at its start; the pool's entries (its user's code) join
    # sys.path now, where PYTHONPATH's would have been: after the current directory.
    fresh = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[1:1] = fresh
    return parse_args([*msg.get("argv", []), "--zygote", "--control-fd", str(ns.control_fd)])


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"op": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _fork(sock: socket.socket, stop: StopSignal, request: dict[str, Any],
          fds: list[int]) -> None:
    if request.get("op") != "fork" or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        _send(sock, {"op": "error", "id": request.get("id"),
                     "message": "expected a fork request with one file descriptor"})
        return
    out_fd = fds[0]
    sync_r, sync_w = os.pipe()  # the child's own session exists before the host hears of it
    # SIGTERM stays blocked in the child until the worker has its own handler (main.serve):
    # until then it would run the zygote's flag-only handler, whose flag the child drops.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        pid = os.fork()
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in (out_fd, sync_r, sync_w):
            os.close(fd)
        _send(sock, {"op": "error", "id": request["id"], "message": f"fork failed: {exc}"})
        return
    if pid == 0:  # the worker
        code = 1
        try:
            os.setsid()
            os.close(sync_r)
            os.close(sync_w)
            stop.release()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sock.close()
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
            os.close(out_fd)
            from .main import main

            code = main([*request["argv"], "--forked"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(out_fd)
    os.close(sync_w)
    os.read(sync_r, 1)  # EOF once the child has called setsid and closed its end
    os.close(sync_r)
    _send(sock, {"op": "forked", "id": request["id"], "pid": pid})
