"""How a worker's life ends: SIGTERM (`StopSignal`), its host's death (the parent-death signal
and a watchdog on the host's pid) or its host's silence (dependent mode: the host's pings stop,
or it stops answering our heartbeats)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

SHUTDOWN_GRACE_S = 2.0
HOST_HEARTBEAT_INTERVAL_S = 2.0
PARENT_POLL_S = 0.5


def arm_parent_death_signal() -> None:
    """Linux: SIGTERM when the parent dies (elsewhere the watchdogs do the job)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _host_alive(host_pid: int) -> bool:
    try:
        os.kill(host_pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def die_with_parent(host_pid: int, forked: bool = False) -> None:
    """Exit with the host: parent-death signal and a watchdog on the parent pid; a forked
    worker's parent is the fork server, so it watches the host's pid instead."""
    if not forked:
        arm_parent_death_signal()
        if host_pid and os.getppid() != host_pid:
            os._exit(0)  # the host died before we could arm the signal
    elif host_pid and not _host_alive(host_pid):
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if (not _host_alive(host_pid)) if forked else os.getppid() != host_pid:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    if host_pid:
        threading.Thread(target=watch, name="pit-parent-watch", daemon=True).start()


def watch_host_contact(servicer: Any, timeout_s: float, stop: StopSignal) -> None:
    """Dependent mode, when the host pings us: exit once it has been silent for ``timeout_s``
    (alive but wedged). Costs a sleeping thread, where `heartbeat_host` costs a gRPC client
    channel (~4 MiB a worker)."""

    def watch() -> None:
        while True:
            time.sleep(min(1.0, timeout_s / 4))
            silent = time.monotonic() - servicer.last_host_contact
            if silent > timeout_s:
                sys.stderr.write(f"pit worker: the host has not pinged for {silent:.1f} s "
                                 "(dependent_timeout_ms); exiting\n")
                stop.abandon_host()
                return

    threading.Thread(target=watch, name="pit-host-watch", daemon=True).start()


def heartbeat_host(address: str, timeout_s: float, stop: StopSignal) -> None:
    """Dependent mode: exit when the host has not answered for ``timeout_s`` (it may be alive
    but wedged, or gone in a way the parent-death signal cannot see)."""
    import grpc

    from ..protocol import pb, pb_grpc

    def beat() -> None:
        channel = grpc.insecure_channel(address)
        stub = pb_grpc.BridgeServiceStub(channel)
        last_ok = time.monotonic()
        while not stop.requested:
            try:
                stub.Heartbeat(pb.HeartbeatRequest(), timeout=HOST_HEARTBEAT_INTERVAL_S)
                last_ok = time.monotonic()
            except grpc.RpcError:
                if time.monotonic() - last_ok > timeout_s:
                    sys.stderr.write(f"pit worker: host at {address} has not answered for "
                                     f"{timeout_s:g} s; exiting\n")
                    stop.abandon_host()
                    return
            time.sleep(HOST_HEARTBEAT_INTERVAL_S)

    threading.Thread(target=beat, name="pit-host-heartbeat", daemon=True).start()


class StopSignal:
    """SIGTERM -> stop serving. The handler only sets a flag: a handler that took a lock (as
    Event.set does) deadlocks when a second signal lands while the first holds it."""

    def __init__(self) -> None:
        self.requested = False
        self.grace = SHUTDOWN_GRACE_S  # for the calls and streams still open when it stops
        self.fd, self._w = os.pipe()  # readable whenever a handled signal arrived
        os.set_blocking(self._w, False)
        os.set_blocking(self.fd, False)
        signal.set_wakeup_fd(self._w)  # the C-level handler writes here: select() wakes
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def abandon_host(self) -> None:
        """Stop because the host stopped answering: nobody will close the lane or the RPCs
        it holds, so waiting out their shutdown grace would only keep us past
        dependent_timeout_ms."""
        self.grace = 0.0
        os.kill(os.getpid(), signal.SIGTERM)

    def also_on(self, signum: int) -> None:
        """Stop on ``signum`` too (a worker launched by a Snakepit host stops on SIGINT, as
        Snakepit's bridge does)."""
        signal.signal(signum, self._handle)

    def pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking at once when a stop is asked; whether one was."""
        import select

        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            select.select([self.fd], [], [], left)
            self.drain()
        return self.requested

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self.fd, 512)

    def wait(self) -> None:
        import select

        while not self.requested:
            select.select([self.fd], [], [], 1.0)
            self.drain()

    def release(self) -> None:
        """Undo it all (a forked child starts over with its own)."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.close(self.fd)
        os.close(self._w)
