"""The Ray actor behind one Ray-placed worker: it starts pit's worker server on its node.

    host (ray_process)  --Ray: create actor (argv, env, secret, tls)--> WorkerActor.__init__
                                                                 |  Popen python -m runtime.worker
                                                                 |  --listen <node ip>:0
                                                                 |  --require-secret [--tls]
                                                                 v
    host  --Ray: ready()--> the worker's ready JSON + node ip / node id / actor pid
    host  --Ray: wait()---> returns once the worker exited: (exit code, output tail)
    host  ==gRPC over TCP (TLS with --tls), secret in every RPC's metadata==> the worker
            (calls never go through Ray)
    or, for a worker the host cannot reach (``ray_calls``, `ray_process`):
    host  --Ray: unary() / stream() / cancel()--> the actor --gRPC on its node--> the worker
            (`ray_forward`)

The secret, and the TLS certificate and key, reach the worker in its environment (it takes
them out at start), never on its command line.

The worker is a child of the actor's process: it exits with it (parent-death signal and a
watchdog on its parent pid, `--host-pid` is the actor's pid), so an actor that dies (killed,
its node lost, Ray's OOM killer) takes its worker along, and the host learns of it from
`wait()` failing with Ray's ActorDiedError. Ray never restarts the actor (max_restarts=0):
the pool decides replacements. This module imports no Ray: `ray_process` wraps the class with
``ray.remote`` on the host, and Ray imports it by name in the actor's process.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from .ray_forward import Answer, Forwarder

OUTPUT_TAIL_LINES = 40
READY_POLL_S = 0.01
# The worker announces this host instead of the one it listens on (its port kept), for a node
# the host knows by another address (NAT, a proxy); the actor itself forwards to the real one.
ANNOUNCE_HOST_ENV = "PIT_RAY_ANNOUNCE_HOST"


class WorkerActor:
    """Runs ``python -m runtime.worker *argv`` (with the secret in its environment) on the
    actor's node, listening on ``listen_host`` (the node's address when None); over TLS with
    ``tls_env`` (`protocol.tls.WorkerTls.env`: its certificate and key)."""

    def __init__(self, argv: list[str], env: dict[str, str], secret: str,
                 listen_host: str | None = None, lane_socket: bool = True,
                 tls_env: dict[str, str] | None = None,
                 max_message_bytes: int = 64 << 20,
                 tls_check: tuple[bytes, str] | None = None) -> None:
        from ..protocol import secret as secret_mod

        host = listen_host or _node_ip()
        self._secret, self._max_message_bytes = secret, max_message_bytes
        self._tls_check = tls_check  # (CA PEM, server name): how the forwarder checks its worker
        self._announce = env.get(ANNOUNCE_HOST_ENV, "")
        self._forwarder: Forwarder | None = None
        self._dir = tempfile.mkdtemp(prefix="pit-ray-")
        self._ready_file = os.path.join(self._dir, "ready.json")
        full_env = {**os.environ, **env, secret_mod.ENV: secret, **(tls_env or {}),
                    "PYTHONUNBUFFERED": "1"}
        self.argv = [sys.executable, "-m", "runtime.worker", *argv, "--listen", f"{host}:0",
                     "--ready-file", self._ready_file, "--host-pid", str(os.getpid()),
                     "--require-secret", *(["--tls"] if tls_env else []),
                     *(["--lane-socket", f"tcp:{host}:0"] if lane_socket else [])]
        self._output: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self._ps: Any = None  # psutil.Process of the worker, once sampled
        self._proc = subprocess.Popen(self.argv, env=full_env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        threading.Thread(target=self._pump, name="pit-worker-output", daemon=True).start()

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            self._output.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def ready(self, timeout_s: float) -> dict[str, Any]:
        """The worker's ready JSON once it serves, with where it runs; raises RuntimeError
        (with its last output) when it exits first or takes longer than ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not os.path.exists(self._ready_file):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.05)  # the last lines
                what = (f"exited with code {self._proc.returncode}"
                        if self._proc.returncode is not None
                        else f"was not ready within {timeout_s:g} s")
                raise RuntimeError(f"pit worker {what}; its last output:\n{self.tail()}")
            time.sleep(READY_POLL_S)
        with open(self._ready_file) as fh:
            info: dict[str, Any] = json.load(fh)
        import ray

        if isinstance(info.get("address"), str):
            if self._forwarder is None:  # ready() may be asked again (tests, tools)
                self._forwarder = Forwarder(info["address"], self._secret,
                                            self._max_message_bytes, self._tls_check)
            if self._announce:
                info["address"] = _announced(info["address"], self._announce)
                if isinstance(info.get("lane_socket"), str):  # "tcp:HOST:PORT"
                    info["lane_socket"] = "tcp:" + _announced(info["lane_socket"],
                                                              self._announce)
        info["node_ip"] = _node_ip()
        info["node_id"] = ray.get_runtime_context().get_node_id()
        info["actor_pid"] = os.getpid()
        return info

    def wait(self) -> tuple[int, str]:
        """Block until the worker exits: (its exit code, its last output)."""
        code = self._proc.wait()
        time.sleep(0.05)  # the output pump takes the last lines
        with contextlib.suppress(OSError):
            os.unlink(self._ready_file)
            os.rmdir(self._dir)
        return code, self.tail()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the worker's process group."""
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signum)

    def usage(self, uss: bool) -> tuple[float, float, float | None]:
        """(RSS MiB, CPU % since the last call, USS MiB when ``uss``) of the worker, read on
        its node with psutil (0s once it exited)."""
        import psutil

        try:
            if self._ps is None:
                self._ps = psutil.Process(self._proc.pid)
                self._ps.cpu_percent(None)  # the first reading primes the counter
            with self._ps.oneshot():
                mem = self._ps.memory_full_info() if uss else self._ps.memory_info()
                return (mem.rss / 2**20, self._ps.cpu_percent(None),
                        mem.uss / 2**20 if uss else None)
        except psutil.Error:
            return (0.0, 0.0, 0.0 if uss else None)

    def tail(self) -> str:
        return "\n".join(self._output)

    # --- calls through the actor (`ray_forward`) -----------------------------------------
    def unary(self, method: str, token: str, request: bytes, timeout: float | None,
              headers: list[tuple[str, str]]) -> Answer:
        if self._forwarder is None:
            return ("error", "UNAVAILABLE", "the worker is not ready")
        return self._forwarder.unary(method, token, request, timeout, headers)

    def stream(self, token: str, request: bytes, timeout: float | None,
               headers: list[tuple[str, str]]) -> Iterator[Answer]:
        """A Ray streaming generator (`ray_process` declares it so)."""
        if self._forwarder is None:
            yield ("error", "UNAVAILABLE", "the worker is not ready")
            return
        yield from self._forwarder.stream(token, request, timeout, headers)

    def cancel(self, token: str) -> None:
        if self._forwarder is not None:
            self._forwarder.cancel(token)


def _announced(address: str, host: str) -> str:
    """``address``'s port at ``host``."""
    return f"{host}:{address.rsplit(':', 1)[1]}"


def _node_ip() -> str:
    import ray

    return str(ray.util.get_node_ip_address())
