"""The call lane over a plain unix socket (see runtime.protocol.frames).

Each connection the host opens is served by a thread of its own, with the same `CallLane`
handler the gRPC stream uses: its calls run on that thread, in order, and their results go
back as frames. The host opens one connection for the pool's loop and, while the worker is
lent to a blocking caller, one that caller's thread uses directly (`runtime.pool.direct`);
the host never has calls out on both at once, and the runner's slot lock keeps a worker of
the process profile to one call at a time whatever happens.
A gRPC round trip costs ~300 µs on a small machine; a socket round trip ~40 µs.
On TCP with TLS (``--tls``), each connection is wrapped (the TLS handshake) before its secret's
hello is read; the host ends its side with `frames.END` (TLS has no half-close). The thread
profile reads a connection's calls on a thread of its own while the handler writes results,
and OpenSSL forbids two threads in one SSL object at once: there a TLS connection is used
through `SerialTls`, which makes every SSL call under one lock.
"""

from __future__ import annotations

import contextlib
import errno
import io
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..protocol import pb, secret
from ..protocol.frames import FrameError, encode, read_messages

MAX_CONNECTIONS = 4  # the loop's, a lent one, and room for one being replaced


class LaneSocket:
    """Serves the lane on a unix socket ``address`` (a path), or on TCP ("tcp:HOST:PORT",
    port 0: any free one; `address` then names the port bound), where every connection must
    open with the pool's ``secret`` (`protocol.secret.lane_hello`), inside TLS when given a
    server context ``tls``."""

    def __init__(self, address: str, servicer: Any, limit: int, secret: str = "",
                 tls: ssl.SSLContext | None = None) -> None:
        self._servicer, self._limit, self._secret, self._tls = servicer, limit, secret, tls
        self.address = address
        if address.startswith("tcp:"):
            if not secret:
                raise ValueError("the call lane on TCP needs the pool's secret")
            host, _, port = address[4:].rpartition(":")
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.bind((host, int(port)))
            self.address = f"tcp:{host}:{self._listener.getsockname()[1]}"
        else:
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(address)
        self._listener.listen(MAX_CONNECTIONS)
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, name="pit-lane", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed: the worker is stopping
                return
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) >= MAX_CONNECTIONS:
                conn.close()  # the host never needs this many: refuse, do not pile up threads
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), name="pit-lane-conn",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        # Each read of the TLS handshake and of the hello times out, but a client that sends
        # a byte now and then, each in time, would hold this thread (one of MAX_CONNECTIONS)
        # as long as it liked: the two have one deadline together.
        deadline = _Deadline(conn, secret.HELLO_TIMEOUT_S) \
            if conn.family == socket.AF_INET else None
        if self._tls is not None:
            conn.settimeout(secret.HELLO_TIMEOUT_S)  # a client that never shakes hands
            try:
                conn = self._tls.wrap_socket(conn, server_side=True)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                sys.stderr.write(f"pit worker: refused a call lane connection: TLS "
                                 f"handshake failed: {exc}\n")
                conn.close()
                if deadline is not None:
                    deadline.cancel()
                return
        with conn:
            if deadline is not None:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                hello = secret.check_lane_hello(conn, self._secret)
                if not deadline.cancel() or not hello:
                    sys.stderr.write("pit worker: refused a call lane connection without "
                                     "the pool's secret\n")
                    return
            # calls read on a thread of their own (thread profile): one SSL call at a time
            threaded = getattr(getattr(self._servicer, "runner", None), "threads", 1) > 1
            lane: socket.socket | SerialTls = \
                SerialTls(conn) if threaded and isinstance(conn, ssl.SSLSocket) else conn
            requests = read_messages(lane, pb.LaneRequest.FromString, self._limit)
            try:
                for resp in self._servicer.lane(requests):
                    lane.sendall(encode(resp))
            except FrameError as exc:
                sys.stderr.write(f"pit worker: call lane closed: {exc}\n")
            except OSError:
                pass  # the host went away

    def close(self, grace: float) -> None:
        """Take no new connection; give the open ones ``grace`` seconds to finish their calls
        (the host ends them when it stops the worker)."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        end = time.monotonic() + grace
        for thread in [self._thread, *self._threads]:
            thread.join(max(end - time.monotonic(), 0.0))


class SerialTls:
    """A TLS connection that one thread reads and another writes (the thread profile's lane).
    OpenSSL allows no two threads in one SSL object at once, not even one in SSL_read and one
    in SSL_write, so each SSL call is made under one lock, on the socket made non-blocking,
    and a thread that must wait for the socket waits outside the lock. What `read_messages`
    and the handler use: `makefile("rb")` and `sendall`."""

    def __init__(self, conn: ssl.SSLSocket) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        conn.setblocking(False)

    def recv_into(self, buffer: Any) -> int:
        return self._ssl(lambda: self._conn.recv_into(buffer))

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._ssl(lambda: self._conn.send(view)):]  # noqa: B023 - called now

    def _ssl(self, op: Callable[[], int]) -> int:
        """``op()``, one SSL call, under the lock; again once the socket is ready, for as
        long as OpenSSL wants to read or write first."""
        while True:
            with self._lock:
                try:
                    return op()
                except ssl.SSLWantReadError:
                    wait = select.POLLIN
                except ssl.SSLWantWriteError:
                    wait = select.POLLOUT
            self._wait(wait)

    def _wait(self, event: int) -> None:
        fd = self._conn.fileno()
        if fd < 0:  # closed by the other thread: the end of the connection, as for a socket
            raise OSError(errno.EBADF, "the lane connection is closed")
        poller = select.poll()
        poller.register(fd, event)
        poller.poll()

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        assert mode == "rb"
        return io.BufferedReader(_Reads(self))


class _Reads(io.RawIOBase):
    def __init__(self, tls: SerialTls) -> None:
        self._tls = tls

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._tls.recv_into(buffer)


class _Deadline:
    """Shuts a connection down both ways (its blocked reads return) unless `cancel`led within
    ``seconds``. Holds its own descriptor of the connection: a TLS wrap takes over the first."""

    def __init__(self, conn: socket.socket, seconds: float) -> None:
        self._sock = conn.dup()
        self._lock = threading.Lock()
        self._over = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            if not self._over:
                self._over = True
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
                self._sock.close()

    def cancel(self) -> bool:
        """Stop it; False when it had already cut the connection."""
        self._timer.cancel()
        with self._lock:
            if self._over:
                return False
            self._over = True
            self._sock.close()
            return True
