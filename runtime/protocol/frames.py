"""Length-prefixed protobuf frames: the call lane over a plain unix socket.

A frame is a 4-byte little-endian length, then that many bytes of one serialized message
(`LaneRequest` host -> worker, `LaneResponse` worker -> host): the same messages the gRPC
`CallLane` stream carries, without HTTP/2 around them. The host half shuts its writing side
when it has no more calls (over TLS, which cannot half-close: it sends END, an empty frame);
the worker answers what it took, then closes.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf.message import DecodeError

HEADER = struct.Struct("<I")
READ_CHUNK = 1 << 20  # larger bodies are read this much at a time
END = HEADER.pack(0)  # "no more frames" (the host never sends an empty LaneRequest)


class FrameError(Exception):
    """The peer sent a frame this side refuses (over the size limit, or not a message)."""


def encode(msg: Any) -> bytes:
    body = msg.SerializeToString()
    return HEADER.pack(len(body)) + body


def read_messages(sock: socket.socket, parse: Callable[[bytes], Any],
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
    """Bytes in, whole frames out (the non-blocking host side)."""

    def __init__(self, limit: int) -> None:
        self._buf = bytearray()
        self._need = HEADER.size  # bytes the next step needs: a header, then its body
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        if not self._buf and len(data) >= HEADER.size:  # the usual case: one whole frame
            (n,) = HEADER.unpack_from(data)
            if len(data) == HEADER.size + n and n <= self._limit:
                return [data[HEADER.size:]]
        buf = self._buf
        buf += data
        if len(buf) < self._need:
            return []
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= HEADER.size:
            (n,) = HEADER.unpack_from(buf, pos)
            if n > self._limit:
                raise FrameError(f"a {n}-byte frame is over the {self._limit}-byte limit")
            if len(buf) - pos - HEADER.size < n:
                self._need = HEADER.size + n
                break
            out.append(bytes(buf[pos + HEADER.size:pos + HEADER.size + n]))
            pos += HEADER.size + n
        else:
            self._need = HEADER.size
        del buf[:pos]
        return out
