"""A fork server started before its host knows its pool: the zygote's imports (grpc, protobuf,
the worker's modules: ~0.14 s of CPU here) run while the host is still importing its own
(~0.2 s), instead of after them.

    prestart()              `pit run`, and the first `runtime.Pool` / `Pools` / `AsyncPool` /
                            `PoolExecutor`
      -> python -m runtime.worker --zygote --warm P --run-id R --instance-token T
         (P: this host's pid; not as --host-pid, which leak checks match: a zygote nobody
         took yet is no test's worker)
         (imports, then waits for its pool: runtime/worker/zygote.py, `_await_load`)
    reserved_identity()     the first HostInstance of this process takes R and T as its own,
                            so the zygote's command line proves it is that instance's
    take(python, argv, env) its first fork server with the same interpreter and start-up
                            environment gets the process and sends it the pool's adapter and
                            environment ({"op": "load"}); else None, and it starts its own
    discard(instance_id)    the instance closes without having used it: it exits
    (WARM_IDLE_S)           no pool took it for that long: it exits (a program that touched
                            runtime.Pool and makes its pools much later, or never, does not
                            keep an idle interpreter: ~38 MiB resident, 19 MiB its own)

Nothing here imports more than the standard library: it runs before the host's imports.
A warm zygote nobody takes exits with its host (parent-death signal, a check of its parent
pid) or when its socket is closed (`discard`, or this process exiting).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading

# Read when an interpreter, grpc or protobuf starts: a zygote started with other values than
# the pool's cannot serve it. PYTHONPATH is the exception: the zygote adds the pool's entries.
STARTUP_PREFIXES = ("PYTHON", "LD_", "GRPC_", "PROTOCOL_BUFFERS_", "MALLOC_", "GLIBC_")
ENV_PRESTART = "PIT_PRESTART"  # "0": never start a fork server before a pool asks for one
WARM_IDLE_S = 60.0  # a warm zygote no pool took within this many seconds exits


class Warm:
    """One prestarted zygote: its process, our end of its control socket, its identity."""

    def __init__(self, popen: subprocess.Popen[bytes], sock: socket.socket, python: str,
                 instance_id: str, token: str, env: dict[str, str]) -> None:
        self.popen = popen
        self.sock = sock
        self.python = python
        self.instance_id = instance_id
        self.token = token
        self.env = env
        self.host_pid = os.getpid()
        self.identity_taken = False


_warm: Warm | None = None
_lock = threading.Lock()
_tried = False


def prestart(python: str | None = None) -> None:
    """Start this process's warm zygote, once (later calls do nothing); only on Linux, from
    the main thread (the parent-death signal follows the thread that started the child), not
    in a pit worker or fork server (an adapter that touches `runtime.Pool`) or a
    multiprocessing child (a spawn child imports its parent's main module again), and unless
    $PIT_PRESTART is "0"."""
    global _warm, _tried
    with _lock:
        if _tried:
            return
        _tried = True
        if os.environ.get(ENV_PRESTART, "1") == "0" or not sys.platform.startswith("linux") \
                or threading.current_thread() is not threading.main_thread() \
                or not hasattr(socket, "send_fds") or _in_worker() or _in_multiprocessing_child():
            return
        python = python or sys.executable
        instance_id, token = secrets.token_hex(4), secrets.token_hex(16)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [python, "-m", "runtime.worker", "--zygote", "--warm", str(os.getpid()),
                "--adapter", "", "--run-id", instance_id, "--instance-token", token,
                "--control-fd", str(theirs.fileno())]
        try:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     pass_fds=(theirs.fileno(),))
        except OSError:
            ours.close()
            return  # the pool starts its own zygote, and reports what is wrong then
        finally:
            theirs.close()
        _warm = Warm(popen, ours, python, instance_id, token, env)
        expiry = threading.Timer(WARM_IDLE_S, _expire, (_warm,))
        expiry.daemon = True
        expiry.start()


def _expire(warm: Warm) -> None:
    """WARM_IDLE_S passed: ``warm`` exits unless a pool took it (under the lock: a pool takes
    it whole, or not at all)."""
    global _warm
    with _lock:
        if _warm is not warm:
            return
        _warm = None
    _close(warm)


def _in_worker() -> bool:
    """This process is `python -m runtime.worker` (a worker, or a fork server and so every
    worker it forks)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and str(spec.name).startswith("runtime.worker")


def _in_multiprocessing_child() -> bool:
    """This process is a multiprocessing child, or its forkserver importing the parent's main
    module (``_inheriting``: what multiprocessing itself checks there). Not imported: neither."""
    mp = sys.modules.get("multiprocessing.process")
    return mp is not None and (mp.parent_process() is not None or
                               bool(getattr(mp.current_process(), "_inheriting", False)))


def reserved_identity() -> tuple[str, str] | None:
    """(instance id, token) of the warm zygote, for the first host instance that asks."""
    with _lock:
        warm = _warm
        if warm is None or warm.identity_taken or warm.host_pid != os.getpid():
            return None
        warm.identity_taken = True
        return warm.instance_id, warm.token


def pending_pid() -> int | None:
    """The pid of this process's warm zygote while no pool has taken it (None: none)."""
    warm = _warm
    return warm.popen.pid if warm is not None else None


def _startup_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(STARTUP_PREFIXES) and k != "PYTHONPATH"}


def _path_entries(env: dict[str, str]) -> list[str]:
    return [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]


def _extends_path(pool_env: dict[str, str], warm_env: dict[str, str]) -> bool:
    """The pool's PYTHONPATH ends with the warm zygote's: the zygote adds the pool's other
    entries ahead of those (`zygote._await_load`), and its sys.path is then the one a zygote
    started with the pool's environment would have. Entries the pool dropped cannot be taken
    back (modules may have been imported from them)."""
    theirs = _path_entries(warm_env)
    return not theirs or _path_entries(pool_env)[-len(theirs):] == theirs


def take(python: str, common_argv: list[str], env: dict[str, str]) -> Warm | None:
    """The warm zygote, sent its pool (``common_argv``: --adapter, --run-id ...; ``env``; the
    current directory, which a zygote started now would have),
    when it can serve it: same interpreter, same instance, a dependent pool, the same
    start-up environment, a PYTHONPATH that extends its own, still running. It is then the
    caller's."""
    global _warm
    with _lock:
        warm = _warm
        if warm is None or warm.host_pid != os.getpid() or warm.python != python or \
                "--independent" in common_argv or \
                _flag(common_argv, "--run-id") != warm.instance_id or \
                _flag(common_argv, "--instance-token") != warm.token or \
                _startup_env(env) != _startup_env(warm.env) or \
                not _extends_path(env, warm.env) or warm.popen.poll() is not None:
            return None
        _warm = None
    import json

    try:
        warm.sock.send(json.dumps({"op": "load", "argv": common_argv, "env": env,
                                   "cwd": os.getcwd()}).encode())
    except OSError:  # it is no use: it ends off the caller's thread (a pool's loop)
        threading.Thread(target=_close, args=(warm,), name="pit-warm-close", daemon=True).start()
        return None
    return warm


def discard(instance_id: str) -> None:
    """The instance ``instance_id`` closes: a warm zygote of its identity it did not take
    exits (its socket closed; waited for, briefly, then killed)."""
    global _warm
    with _lock:
        warm = _warm
        if warm is None or warm.instance_id != instance_id:
            return
        _warm = None
    _close(warm)


def _close(warm: Warm) -> None:
    with contextlib.suppress(OSError):
        # shutdown, not only close: a child this process forked holds a copy of the socket,
        # and the zygote would see no end of file while it lives
        warm.sock.shutdown(socket.SHUT_RDWR)
    warm.sock.close()
    try:
        warm.popen.wait(2.0)
    except subprocess.TimeoutExpired:
        warm.popen.kill()
        warm.popen.wait()
    if warm.popen.stdout is not None:
        warm.popen.stdout.close()


def _flag(argv: list[str], name: str) -> str | None:
    try:
        return argv[argv.index(name) + 1]
    except (ValueError, IndexError):
        return None
