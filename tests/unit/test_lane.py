from __future__ import annotations

import asyncio
import random
import socket

import pytest

from runtime.errors import WorkerExit
from runtime.pool import lane_wire
from runtime.pool.lane import Lane, NotStarted, SocketLink, exit_error
from runtime.pool.lane_wire import batches as _batches
from runtime.protocol import frames, pb


def call(cid: int, size: int) -> pb.LaneCall:
    req = pb.ExecuteToolRequest(tool_name="t")
    req.binary_parameters["data"] = b"x" * size
    return pb.LaneCall(call_id=cid, request=req)


def wire(cid: int, size: int) -> lane_wire.Call:
    return lane_wire.lane_call(cid, call(cid, size).request, None)


def test_batches_stay_under_the_message_limit() -> None:
    calls = [wire(i, 400) for i in range(10)]
    batches = _batches(calls, max_bytes=1000)
    assert [c.call_id for b in batches for c in b] == list(range(10))
    assert all(sum(map(lane_wire.size, b)) <= 1000 for b in batches)
    assert len(batches) == 5
    assert _batches([wire(1, 5000)], 1000) == [[wire(1, 5000)]]  # one call is never split


def test_lane_frames_are_what_protobuf_would_write() -> None:
    """Calls with bytes arguments are serialized by hand (`lane_wire.Wire`), others stay
    messages; any mix of them makes, byte for byte, the LaneRequest protobuf would write,
    whatever the ids, sizes and deadlines."""
    plain = pb.ExecuteToolRequest(tool_name="ping")
    plain.metadata["correlation_id"] = "x-1"
    ids = (1, 127, 128, 2**40, 5)
    sizes = (0, 10, 300, 70_000)
    reqs = [call(cid, n).request for cid, n in zip(ids[:4], sizes, strict=True)] + [plain]
    for timeout in (None, 0.5, 10.0, 86_400.0):
        calls = [lane_wire.lane_call(cid, req, timeout)
                 for cid, req in zip(ids, reqs, strict=True)]
        assert [type(c) is lane_wire.Wire for c in calls] == [True] * 4 + [False]
        for first, end in ((0, 1), (4, 5), (3, 5), (0, 5)):
            batch = calls[first:end]
            frame = lane_wire.request_frame(batch)
            msg = pb.LaneRequest.FromString(frame[frames.HEADER.size:])
            assert frames.encode(msg) == frame
            assert lane_wire.request_message(batch) == msg
            assert [c.call_id for c in msg.calls] == [c.call_id for c in batch]
            assert [c.request for c in msg.calls] == reqs[first:end]
            if timeout is not None:
                assert msg.calls[0].timeout_ms == pytest.approx(
                    lane_wire.worker_timeout(timeout) * 1000)
    assert [lane_wire.varint(n) for n in (0, 1, 127, 128, 300, 2**63)] == [
        pb.LaneCall(call_id=n).SerializeToString()[1:] or b"\x00"
        for n in (0, 1, 127, 128, 300, 2**63)]


def test_frames_survive_any_split_of_the_byte_stream() -> None:
    msgs = [pb.LaneRequest(calls=[call(i, size)]) for i, size in enumerate((0, 10, 70_000, 3))]
    stream = b"".join(frames.encode(m) for m in msgs)
    for step in (1, 3, 7, 4096, len(stream)):
        buf = frames.FrameBuffer(limit=1 << 20)
        got = [pb.LaneRequest.FromString(f) for i in range(0, len(stream), step)
               for f in buf.feed(stream[i:i + step])]
        assert got == msgs, step


def test_frames_read_into_the_buffer_survive_any_read_size() -> None:
    """`get_buffer`/`filled` (recv_into): reads of any size, frames small and over the reused
    buffer's size, a frame torn across the buffer's end."""
    sizes = (0, 10, 70_000, 3, frames.READ_ROOM, 5, 300_000, 1, 40_000, 40_000)
    msgs = [pb.LaneRequest(calls=[call(i, size)]) for i, size in enumerate(sizes)]
    stream = b"".join(frames.encode(m) for m in msgs)
    rng = random.Random(7)
    for most in (1, 5, 4096, 100_000, len(stream)):
        buf = frames.FrameBuffer(limit=1 << 20)
        got, pos = [], 0
        while pos < len(stream):
            room = buf.get_buffer()
            assert len(room) >= 1
            n = min(len(room), len(stream) - pos, rng.randint(1, most))
            room[:n] = stream[pos:pos + n]
            pos += n
            got += [pb.LaneRequest.FromString(f) for f in buf.filled(n)]
        assert got == msgs, most


def test_a_large_frame_is_read_into_one_buffer_whatever_the_reads_sizes() -> None:
    """A frame over READ_ROOM gets one buffer of its size, read into until it is whole: the
    tail of its body (fewer than MIN_READ bytes left) neither regrows nor copies it."""
    body = b"x" * (1 << 22)
    stream = frames.HEADER.pack(len(body)) + body
    for tail in (1, 100, frames.MIN_READ - 1, frames.MIN_READ, 70_000):
        buf = frames.FrameBuffer(limit=1 << 23)
        got, pos, owners = [], 0, []
        for n in (100, len(stream) - 100 - tail, tail):
            room = buf.get_buffer()
            owners.append(room.obj)
            room[:n] = stream[pos:pos + n]
            pos += n
            got += buf.filled(n)
        assert got == [body], tail
        assert owners[1] is owners[2], tail  # the 4 MiB read so far was not copied


def test_a_frame_over_the_limit_is_refused_before_it_is_buffered() -> None:
    buf = frames.FrameBuffer(limit=100)
    with pytest.raises(frames.FrameError, match="over the 100-byte limit"):
        buf.feed(frames.HEADER.pack(101))


def test_the_blocking_reader_ends_when_the_peer_shuts_its_side() -> None:
    a, b = socket.socketpair()
    msgs = [pb.LaneRequest(calls=[call(i, 5000)]) for i in range(3)]
    for m in msgs:
        a.sendall(frames.encode(m))
    a.sendall(frames.encode(msgs[0])[:7])  # a torn last frame is not a message
    a.shutdown(socket.SHUT_WR)
    assert list(frames.read_messages(b, pb.LaneRequest.FromString, 1 << 20)) == msgs
    a.close()
    b.close()


def test_a_call_sent_after_the_lane_closed_is_answered_not_started() -> None:
    """A call handed to a lane that has ended must come back (NotStarted: the pool runs it
    elsewhere), never wait forever in its outbox."""

    class Worker:
        id, pid, exit_reason, freed = "w", 1, "", 0

        def slot_freed(self) -> None:
            self.freed += 1

    async def main() -> list:
        worker = Worker()
        lane = Lane(worker, None, 1 << 20)  # type: ignore[arg-type]
        lane._link = SocketLink(lane, 1 << 20)  # never connected
        await lane.close()
        answers: list = []
        lane.send(pb.ExecuteToolRequest(tool_name="t"), None, lambda v, e: answers.append(e))
        return [answers, worker.freed, lane.pending]

    answers, freed, pending = asyncio.run(main())
    assert [type(e) for e in answers] == [NotStarted] and freed == 1 and pending == {}


def test_a_dead_workers_calls_are_told_apart_by_its_progress() -> None:
    details = {"cause": "segfault"}
    # progress = (running, last finished): 5 was running, 4 had finished, 6 never started
    running = exit_error(5, (5, 4), "worker-1 died", details, WorkerExit, lone=False)
    assert type(running) is WorkerExit and running.details["culprit"] is True
    finished = exit_error(4, (5, 4), "worker-1 died", details, WorkerExit, lone=False)
    assert finished.details["culprit"] is False and "before sending" in str(finished)
    assert isinstance(exit_error(6, (5, 4), "worker-1 died", details, WorkerExit, lone=False),
                      NotStarted)
    # Without progress (thread profile) only a lone call is surely the culprit.
    assert exit_error(9, None, "m", details, WorkerExit, lone=True).details["culprit"] is True
    assert exit_error(9, None, "m", details, WorkerExit, lone=False).details["culprit"] is False


def test_a_call_with_a_deadline_centuries_away_reaches_the_worker_with_its_budget() -> None:
    """A timeout is any positive number of seconds: one past int64 nanoseconds from now
    (~292 years) must not wrap to a deadline already passed (bytes arguments, hand-encoded)
    nor be refused by protobuf (other calls)."""
    from runtime.worker.servicer import _lane_budget_ms

    plain = pb.ExecuteToolRequest(tool_name="t")
    for req in (call(1, 10).request, plain):
        for timeout in (1e10, 1e12):
            frame = lane_wire.request_frame([lane_wire.lane_call(1, req, timeout)])
            sent = pb.LaneRequest.FromString(frame[frames.HEADER.size:]).calls[0]
            assert _lane_budget_ms(sent) > 1e9 * 1000, (req.tool_name, timeout)


def test_the_worker_is_told_a_deadline_that_leaves_snakepits_margins() -> None:
    from runtime.pool.lane_wire import lane_call, worker_timeout

    assert worker_timeout(300.0) == pytest.approx(298.8)  # long calls: 1 s + 200 ms off
    assert worker_timeout(0.3) == 0.3  # too short for margins: all of it
    assert worker_timeout(2.0) == pytest.approx(1.2)  # in between: never a jump
    assert all(worker_timeout(t / 10) <= worker_timeout(t / 10 + 0.1) for t in range(100))
    def sent(c: lane_wire.LaneCall) -> pb.LaneCall:
        return pb.LaneRequest.FromString(lane_wire.request_frame([c])[4:]).calls[0]

    call = sent(lane_call(7, pb.ExecuteToolRequest(tool_name="t"), 10.0))
    assert call.call_id == 7 and call.timeout_ms == pytest.approx(8800.0)
    assert sent(lane_call(8, pb.ExecuteToolRequest(), None)).timeout_ms == 0


def test_the_blocking_reader_ends_at_an_end_frame() -> None:
    """Over TLS the host cannot shut one side of the connection: it sends END instead."""
    a, b = socket.socketpair()
    msgs = [pb.LaneRequest(calls=[call(i, 10)]) for i in range(2)]
    a.sendall(b"".join(frames.encode(m) for m in msgs) + frames.END)
    assert list(frames.read_messages(b, pb.LaneRequest.FromString, 1 << 20)) == msgs
    a.close()
    b.close()
