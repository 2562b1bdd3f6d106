"""Shared-memory payloads (pit extension): large ``bytes`` travel through files in /dev/shm
that the host creates, sizes and reuses per worker; the gRPC message carries a reference.

Request metadata:
    ``pit_shm_arg:<param>`` = ``<path>:<offset>:<size>``   the argument's bytes are there
    ``pit_shm_out``         = ``<path>:<capacity>``        a result up to capacity may go there
Response metadata:
    ``pit_shm_result``      = ``<path>:<offset>:<size>``   the result's bytes are there

A side that cannot map the file never sees these keys from pit (the host sends bytes inline to
workers without the "shm" feature). A worker on TCP (Ray-placed) may be on another machine, or
on this one behind another /dev/shm: it claims the feature only when it proves it sees the
host's /dev/shm, by reading the random token the host wrote into a probe file it names in
``PIT_SHM_PROBE`` (`write_probe` / `sees_probe`). Paths are always ``/dev/shm/pit-...``;
anything else is refused. The receiver copies the bytes out (a tool gets ordinary ``bytes``),
so an arena is free again as soon as the call's answer has been read.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import mmap
import os
import secrets
from typing import Any

from . import arrow

SHM_DIR = "/dev/shm"
PREFIX = f"{SHM_DIR}/pit-"
ARG = "pit_shm_arg:"
OUT = "pit_shm_out"
RESULT = "pit_shm_result"
MAPS_KEPT = 8
PROBE_ENV = "PIT_SHM_PROBE"  # "<path>:<token>": a worker on TCP checks it sees this file
PROBE_SUFFIX = "-probe"


def available() -> bool:
    """/dev/shm is there and writable, and PIT_NO_SHM is not set (it turns the feature off)."""
    return not os.environ.get("PIT_NO_SHM") and os.path.isdir(SHM_DIR) and \
        os.access(SHM_DIR, os.W_OK)


def worker_prefix(instance_id: str, pool: str, worker_id: str) -> str:
    """The start of a worker's arena (and probe) paths: its pool's name is in it because
    worker ids are per pool (every pool of a host has a worker-1). `pit cleanup` removes
    ``PREFIX<instance id>-*`` of a dead host."""
    return f"{PREFIX}{instance_id}-{pool}-{worker_id}"


def parse(spec: str) -> tuple[str, int, int]:
    path, off, size = spec.rsplit(":", 2)
    if not path.startswith(PREFIX) or "/" in path[len(PREFIX):]:
        raise ValueError(f"shared-memory reference {spec!r} is not a pit arena")
    return path, int(off), int(size)


def write_probe(path: str) -> str:
    """Host side: a fresh probe file at ``path`` (a pit arena name, mode 0600) holding a
    random token; the ``PIT_SHM_PROBE`` value that names it. The host unlinks it once the
    worker is ready."""
    parse(f"{path}:0:0")
    token = secrets.token_hex(16)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a stale one of an earlier start of this worker
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, token.encode())
    finally:
        os.close(fd)
    return f"{path}:{token}"


def sees_probe(value: str | None) -> bool:
    """Worker side: whether the probe ``value`` (``PIT_SHM_PROBE``) names a file here that
    holds its token, so this process shares the host's /dev/shm."""
    if not value or not available():
        return False
    path, _, token = value.rpartition(":")
    try:
        parse(f"{path}:0:0")
        with open(path, "rb") as fh:
            found = fh.read(64)
    except (OSError, ValueError):
        return False
    return bool(token) and hmac.compare_digest(found, token.encode())


class Mappings:
    """The worker's open arenas, by path (the host replaces an arena with a new path when it
    grows it, so a path's size never changes). Keeps the MAPS_KEPT most recent."""

    def __init__(self) -> None:
        self._maps: collections.OrderedDict[str, mmap.mmap] = collections.OrderedDict()

    def get(self, path: str) -> mmap.mmap:
        mm = self._maps.get(path)
        if mm is None:
            fd = os.open(path, os.O_RDWR)
            try:
                mm = mmap.mmap(fd, 0)
            finally:
                os.close(fd)
            self._maps[path] = mm
            while len(self._maps) > MAPS_KEPT:
                self._maps.popitem(last=False)[1].close()
        else:
            self._maps.move_to_end(path)
        return mm

    def read(self, spec: str) -> bytes:
        path, off, size = parse(spec)
        mm = self.get(path)
        if off + size > len(mm):
            raise ValueError(f"shared-memory reference {spec!r} is past the arena's end")
        return mm[off:off + size]

    def write(self, spec: str, data: Any) -> str | None:
        """Put raw ``data`` (bytes-like, or an `arrow.Encoded` stream) into the arena ``spec``
        (``path:capacity``) offers; its result reference, or None when it does not fit (the
        caller sends it inline)."""
        path, cap = spec.rsplit(":", 1)
        parse(f"{path}:0:0")
        n = data.nbytes if hasattr(data, "nbytes") else len(data)
        if n > int(cap):
            return None
        arrow.copy_into(self.get(path), 0, data)
        return f"{path}:0:{n}"
