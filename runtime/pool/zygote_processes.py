"""Processes the host did not start with asyncio, as the fork server sees them (the parts of
``asyncio.subprocess.Process`` it uses: ``pid``, ``returncode``, ``stdout``, ``wait()``):

- `ForkedProcess`: a worker forked by a zygote. It is not the host's child: its output comes
  through a pipe the host made and handed over with the fork request, its exit code from the
  zygote's ``exit`` message (or, once the zygote is gone, a pidfd: "is gone");
- `ClaimedProcess`: a warm zygote (`warm_zygote`) a pool took over. Started with
  ``subprocess.Popen`` before any loop ran, its exit is learnt through a pidfd.
"""

from __future__ import annotations

import asyncio
import os
import subprocess


class ForkedProcess:
    def __init__(self, pid: int, loop: asyncio.AbstractEventLoop) -> None:
        self.pid = pid
        self.stdout: asyncio.StreamReader | None = None  # set by spawn()
        self.returncode: int | None = None
        self._done: asyncio.Future[int | None] = loop.create_future()
        self._loop = loop
        self._pidfd = -1

    def exited(self, code: int | None) -> None:
        if not self._done.done():
            self.returncode = code
            self._done.set_result(code)
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def watch_without_parent(self) -> None:
        """The zygote is gone: learn of this process's end through a pidfd."""
        if self._done.done():
            return
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (OSError, AttributeError):  # already gone (or no pidfd): report it gone
            self.exited(None)
            return
        self._loop.add_reader(self._pidfd, self.exited, None)

    async def wait(self) -> int | None:
        return await asyncio.shield(self._done)


class ClaimedProcess:
    """A taken warm zygote as the fork server sees its process (the parts of
    ``asyncio.subprocess.Process`` it uses): its exit is learnt through a pidfd, its output
    read from the pipe it was started with."""

    def __init__(self, popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.returncode: int | None = None
        self.stdout = asyncio.StreamReader(limit=1 << 20)
        self._done: asyncio.Future[int] = loop.create_future()
        self._loop = loop
        self._pidfd = os.pidfd_open(popen.pid)
        loop.add_reader(self._pidfd, self._exited)

    @classmethod
    async def adopt(cls, popen: subprocess.Popen[bytes]) -> ClaimedProcess:
        loop = asyncio.get_running_loop()
        proc = cls(popen, loop)
        assert popen.stdout is not None
        reader = proc.stdout
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), popen.stdout)
        return proc

    def _exited(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self.returncode = self._popen.wait()  # it has exited: this only reaps it
        if not self._done.done():
            self._done.set_result(self.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._done)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            self._popen.send_signal(sig)

    def kill(self) -> None:
        if self.returncode is None:
            self._popen.kill()
