"""A host instance: the run directory, identity and host-tool server shared by its pools.

Each `Pools` set (or standalone pool) is one instance: an id, a secret token written on every
worker's command line (so cleanup can prove a process is ours), a run directory (mode 0700)
holding the unix sockets and ready files, and the host's BridgeService for host tools.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from ..protocol import pb_grpc
from .host_bridge import HostBridgeServicer

MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS
SERVER_STOP_GRACE_S = 1.0


def _run_dir(state_dir: Path, instance_id: str) -> Path:
    preferred = state_dir / "run" / instance_id
    # Worker files are named "wNNNN.sock"; fall back to a short temp path when too long.
    if len(str(preferred / "w00000.ready.json")) <= MAX_SOCKET_PATH:
        return preferred
    return Path(tempfile.gettempdir()) / f"pit-{os.getuid()}" / instance_id


class HostInstance:
    def __init__(self, state_dir: Path, python_path: list[str] | None = None) -> None:
        self.id = secrets.token_hex(4)
        self.token = secrets.token_hex(16)
        self.state_dir = state_dir
        self.run_dir = _run_dir(state_dir, self.id)
        self.python_path = list(python_path or [])
        self.host_tools: dict[str, Callable[..., Any]] = {}
        self.host_address = f"unix:{self.run_dir / 'host.sock'}"
        self._server: Any = None
        self._files = itertools.count(1)

    def worker_files(self) -> tuple[Path, Path]:
        """A fresh (socket, ready file) pair in the run dir, unique across the instance."""
        n = next(self._files)
        return self.run_dir / f"w{n}.sock", self.run_dir / f"w{n}.ready.json"

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.run_dir, 0o700)
        self._server = grpc.aio.server()
        pb_grpc.add_BridgeServiceServicer_to_server(
            HostBridgeServicer(self.host_tools), self._server)
        self._server.add_insecure_port(self.host_address)
        await self._server.start()

    async def close(self) -> None:
        if self._server is not None:
            await self._server.stop(SERVER_STOP_GRACE_S)
            self._server = None
        with contextlib.suppress(OSError):
            shutil.rmtree(self.run_dir)
        with contextlib.suppress(OSError):
            self.run_dir.parent.rmdir()  # only when no other instance is using it

    def register_host_tool(self, name: str, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise TypeError(f"host tool {name!r} must be callable")
        self.host_tools[name] = fn
