"""What the host writes on a call lane: `LaneRequest` frames put together from serialized
requests, and the deadline a worker is told.

A LaneRequest is ``repeated LaneCall calls = 1``, a LaneCall ``call_id = 1``, ``request = 2``
(an ExecuteToolRequest), ``timeout_ms = 3`` (double) and ``deadline_unix_ns = 4``. Building the
messages copies each request twice (into its LaneCall, the LaneCall into the LaneRequest) and
serializes it once more: for 16 MiB of inline bytes arguments three more 16 MiB copies. So a
call with bytes arguments is serialized once (`lane_call` makes a `Wire` of its parts) and a
frame is one join of its calls' parts (`request_frame`), byte for byte what protobuf would
write; a small call stays a message, which protobuf's C code handles faster.
"""

from __future__ import annotations

import struct
import time
from typing import Any, NamedTuple

from ..protocol import pb
from ..protocol.frames import HEADER, encode

# Snakepit's margins: the deadline a worker is told ends this much before the call's own, so
# that the tool's deadline (ctx.remaining(), a bridge's gRPC deadline) passes first and its
# answer (WORKER_MARGIN_S) travels back (REPLY_MARGIN_S) before the host's timer fires.
WORKER_MARGIN_S = 1.0
REPLY_MARGIN_S = 0.2
_DOUBLE = struct.Struct("<d")
_INT64_MAX = (1 << 63) - 1  # LaneCall.deadline_unix_ns is an int64


class Wire(NamedTuple):
    """A call with bytes arguments, serialized: its id, its size in bytes, its parts (a
    LaneRequest ``calls`` entry when joined)."""

    call_id: int
    size: int
    parts: tuple[bytes, ...]


Call = Any  # what the lane's outbox holds: a pb.LaneCall, or a Wire


def worker_timeout(left: float) -> float:
    """The deadline a worker is told for a call with ``left`` seconds to go: Snakepit's
    margins taken off a long call (left - 1.2 s); a call too short for them keeps what it
    can (all of it up to 1.2 s, then 1.2 s until the margins fit): continuous and never
    more than ``left``."""
    margins = WORKER_MARGIN_S + REPLY_MARGIN_S
    return max(min(left, margins), left - margins)


def lane_call(cid: int, req: Any, timeout: float | None) -> Call:
    """Call ``cid`` as the worker gets it: with the deadline `worker_timeout` leaves it (its
    wall-clock form held to what an int64 holds: a "no deadline" of 1e10 s made protobuf
    refuse the message, and wrapped the varint written by hand to a deadline long passed). A
    call with bytes arguments (inline: they may be large) is serialized here, once (`Wire`);
    others stay a LaneCall message, which is quicker for a small request (~1 µs a call)."""
    ms, deadline = 0.0, 0
    if timeout:
        inner = worker_timeout(timeout)
        ms, deadline = inner * 1000, min(time.time_ns() + int(inner * 1e9), _INT64_MAX)
    if not req.binary_parameters:
        return pb.LaneCall(call_id=cid, request=req, timeout_ms=ms, deadline_unix_ns=deadline)
    body = req.SerializeToString()
    head = b"\x08" + varint(cid) + b"\x12" + varint(len(body))
    tail = b"\x19" + _DOUBLE.pack(ms) + b"\x20" + varint(deadline) if timeout else b""
    n = len(head) + len(body) + len(tail)
    tag = b"\x0a" + varint(n)
    return Wire(cid, len(tag) + n, (tag + head, body, tail))


def _any_wire(calls: list[Call]) -> bool:
    for c in calls:
        if type(c) is Wire:
            return True
    return False


def _parts(calls: list[Call]) -> list[bytes]:
    return [part for c in calls for part in (
        c.parts if type(c) is Wire else (pb.LaneRequest(calls=[c]).SerializeToString(),))]


def request_frame(calls: list[Call]) -> bytes:
    """The frame of a LaneRequest carrying ``calls``."""
    if not _any_wire(calls):
        return encode(pb.LaneRequest(calls=calls))
    parts = _parts(calls)
    return b"".join([HEADER.pack(sum(map(len, parts))), *parts])


def request_message(calls: list[Call]) -> Any:
    """The same LaneRequest as a message (the gRPC `CallLane` stream)."""
    if not _any_wire(calls):
        return pb.LaneRequest(calls=calls)
    return pb.LaneRequest.FromString(b"".join(_parts(calls)))


def size(call: Call) -> int:
    """Bytes ``call`` adds to a LaneRequest (about: a LaneCall's own tag and length not
    counted)."""
    return int(call.size) if type(call) is Wire else int(call.ByteSize())


def batches(calls: list[Call], max_bytes: int) -> list[list[Call]]:
    """Split queued calls into messages that stay under the message limit."""
    if len(calls) == 1:
        return [calls]
    out: list[list[Call]] = [[]]
    total = 0
    for call in calls:
        n = call.size if type(call) is Wire else call.ByteSize()  # `size`, without a call
        if out[-1] and total + n > max_bytes:
            out.append([])
            total = 0
        out[-1].append(call)
        total += n
    return out


def varint(n: int) -> bytes:
    """``n`` (>= 0) as a protobuf varint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
