"""Length-prefixed protobuf frames: the call lane over a plain unix socket.

A frame is a 4-byte little-endian length, then that many bytes of one serialized message
(`LaneRequest` host -> worker, `LaneResponse` worker -> host): the same messages the gRPC
`CallLane` stream carries, without HTTP/2 around them. The host half shuts its writing side
when it has no more calls (over TLS, which cannot half-close: it sends END, an empty frame);
the worker answers what it took, then closes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf.message import DecodeError

if TYPE_CHECKING:
    import socket

HEADER = struct.Struct("<I")
READ_CHUNK = 1 << 20  # larger bodies are read this much at a time
READ_ROOM = 64 * 1024  # FrameBuffer: the reused buffer small frames are read into
MIN_READ = 4096  # ... and the least room a read is given
END = HEADER.pack(0)  # "no more frames" (the host never sends an empty LaneRequest)


class Readable(Protocol):
    """What `read_messages` reads from besides a socket: a wrapper with its ``makefile``."""

    def makefile(self, mode: str) -> Any: ...


class FrameError(Exception):
    """The peer sent a frame this side refuses (over the size limit, or not a message)."""


def encode(msg: Any) -> bytes:
    body = msg.SerializeToString()
    return HEADER.pack(len(body)) + body


def read_messages(sock: socket.socket | Readable, parse: Callable[[bytes], Any],
                  limit: int) -> Iterator[Any]:
    """Messages off a blocking socket until the peer shuts its side or sends END (or the
    socket fails).
    Raises FrameError for a frame over ``limit`` (before reading its body) or one that does
    not parse. A body is read in chunks as it arrives, so a header announcing a huge frame
    costs nothing until the bytes are really there."""
    with sock.makefile("rb") as stream:
        while True:
            try:
                head = stream.read(HEADER.size)
                if len(head) < HEADER.size:
                    return
                (n,) = HEADER.unpack(head)
                if n == 0:  # END
                    return
                if n > limit:
                    raise FrameError(f"a {n}-byte frame is over the {limit}-byte limit")
                body = stream.read(n) if n <= READ_CHUNK else _read_chunked(stream, n)
            except OSError:
                return
            if len(body) < n:
                return
            try:
                msg = parse(body)
            except DecodeError:
                raise FrameError(f"a {n}-byte frame is not a valid message") from None
            yield msg


def _read_chunked(stream: Any, n: int) -> bytes:
    """Up to ``n`` bytes, READ_CHUNK at a time (fewer: the peer closed early)."""
    parts = []
    left = n
    while left:
        part = stream.read(min(left, READ_CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


class FrameBuffer:
    """Whole frames out of a byte stream (the non-blocking side).

    Bytes are read straight into its buffer (`get_buffer`, then `filled` with the count read:
    asyncio's BufferedProtocol, `socket.recv_into`) or copied in (`feed`). Small frames share
    one reused READ_ROOM buffer; a frame too large for it gets a buffer of its announced size,
    so a large body is neither regrown nor copied while it arrives. (A plain ``recv(256 KiB)``
    allocated and shrank a 256 KiB bytes object per read: ~9 µs, more than the read itself.)
    """

    def __init__(self, limit: int) -> None:
        self._buf = bytearray(READ_ROOM)
        self._view = memoryview(self._buf)
        self._start = 0  # the first byte of a frame not handed out yet
        self._end = 0  # the end of what was read
        self._limit = limit

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next read goes: room for the rest of the frame being read (all of its
        announced body at once), and never less than MIN_READ while frames are small (a
        frame over READ_ROOM gets exactly the rest of it: its buffer is its own size)."""
        start, end = self._start, self._end
        have = end - start
        need = HEADER.size
        if have >= HEADER.size:  # its size was checked against the limit by `filled`
            need += HEADER.unpack_from(self._buf, start)[0]
        # A large frame's last few bytes must not cost a new buffer and a copy of the rest.
        want = need if need > READ_ROOM else max(need, have + MIN_READ)
        if len(self._buf) - start < want:
            if len(self._buf) >= want and have <= MIN_READ:  # move the torn frame's start down
                self._buf[:have] = self._buf[start:end]  # (same length: no resize)
            else:
                buf = bytearray(max(want, READ_ROOM))
                buf[:have] = self._view[start:end]
                self._buf, self._view = buf, memoryview(buf)
            self._start, self._end = 0, have
        return self._view[self._end:]

    def filled(self, n: int) -> list[bytes]:
        """``n`` bytes were read into the buffer `get_buffer` gave: the frames now whole."""
        end = self._end + n
        pos = self._start
        buf, view = self._buf, self._view
        out: list[bytes] = []
        while end - pos >= HEADER.size:
            (size,) = HEADER.unpack_from(buf, pos)
            if size > self._limit:
                raise FrameError(f"a {size}-byte frame is over the {self._limit}-byte limit")
            stop = pos + HEADER.size + size
            if stop > end:
                break
            out.append(view[pos + HEADER.size:stop].tobytes())
            pos = stop
        if pos == end:
            pos = end = 0
            if len(buf) > READ_ROOM:  # a large frame's buffer is not kept
                self._buf = bytearray(READ_ROOM)
                self._view = memoryview(self._buf)
        self._start, self._end = pos, end
        return out

    def feed(self, data: bytes) -> list[bytes]:
        """The frames ``data`` completes (copied in)."""
        out: list[bytes] = []
        src = memoryview(data)
        while src:
            room = self.get_buffer()
            n = min(len(room), len(src))
            room[:n] = src[:n]
            out += self.filled(n)
            src = src[n:]
        return out
