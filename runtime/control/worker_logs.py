"""Reading workers' output from live hosts (their Control service's ReadOutput): `pit logs`.

`read_lines` returns what the hosts' rings hold now, oldest first across hosts; `follow` then
keeps yielding new lines (and a `HostEnded` for each host that goes away) until the caller
stops iterating. Each host is read on a thread of its own, so one slow host does not hold back
another.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import grpc

from ..errors import InvalidArgument
from ..protocol import pit_control_pb2 as cpb
from ..protocol import pit_control_pb2_grpc as cpb_grpc
from .index import LiveInstance

READ_TIMEOUT_S = 10.0  # reading a host's backlog (not following)
POLL_S = 0.2  # how often a follower checks that its caller still wants lines
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*")


@dataclass(frozen=True, slots=True)
class LogLine:
    instance: str
    pool: str
    worker: str
    text: str
    at: float  # time.time() when the host read it
    dropped: int = 0  # lines the host skipped just before this one (the reader was slow)

    @property
    def prefix(self) -> str:
        return f"[{self.pool}/{self.worker}]"


@dataclass(frozen=True, slots=True)
class HostEnded:
    """A host that could not be read (any more): it exited, or stopped answering."""
    instance: str
    pid: int
    why: str = "exited or stopped answering"


def _ended(inst: LiveInstance, exc: grpc.RpcError | None) -> HostEnded:
    if exc is not None and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
        return HostEnded(inst.instance_id, inst.pid, "runs an older pit that does not serve "
                                                     "its workers' output: restart it")
    return HostEnded(inst.instance_id, inst.pid)


def parse_since(text: str) -> float:
    """Seconds from a duration such as ``30s``, ``5m``, ``2h``, ``1d`` or ``90`` (seconds);
    raises InvalidArgument."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise InvalidArgument(f"--since {text!r} is not a duration",
                              hint="give a number and a unit: 30s, 5m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _request(pool: str, worker: str, since: float, follow: bool) -> cpb.OutputRequest:
    return cpb.OutputRequest(pool=pool, worker=worker, follow=follow,
                             since_ns=int(since * 1e9) if since > 0 else 0)


def _line(inst: LiveInstance, msg: cpb.OutputLine) -> LogLine:
    return LogLine(inst.instance_id, msg.pool, msg.worker, msg.text, msg.at_ns / 1e9,
                   msg.dropped)


def read_lines(instances: list[LiveInstance], *, pool: str = "", worker: str = "",
               since: float = 0.0) -> tuple[list[LogLine], list[HostEnded]]:
    """What every host's rings hold (only lines read at or after ``since``, a time.time()),
    oldest first; and the hosts that did not answer."""
    lines: list[LogLine] = []
    gone: list[HostEnded] = []
    for inst in instances:
        try:
            with grpc.insecure_channel(inst.control_address) as channel:
                stream = cpb_grpc.ControlStub(channel).ReadOutput(
                    _request(pool, worker, since, False), timeout=READ_TIMEOUT_S)
                lines += [_line(inst, msg) for msg in stream]
        except grpc.RpcError as exc:
            gone.append(_ended(inst, exc))
    return sorted(lines, key=lambda line: line.at), gone


def follow(instances: list[LiveInstance], *, pool: str = "", worker: str = "",
           since: float = 0.0) -> Generator[LogLine | HostEnded, None, None]:
    """The hosts' backlog, then their new lines as they come, until every host ended or the
    caller stops iterating (its ``close()``, or Ctrl-C in the caller's thread)."""
    inbox: queue.Queue[LogLine | HostEnded] = queue.Queue()
    streams: list[grpc.Future] = []
    channels = [grpc.insecure_channel(inst.control_address) for inst in instances]
    for inst, channel in zip(instances, channels, strict=True):
        stream = cpb_grpc.ControlStub(channel).ReadOutput(_request(pool, worker, since, True))
        streams.append(stream)
        threading.Thread(target=_pump, args=(inst, stream, inbox), daemon=True,
                         name=f"pit-logs-{inst.instance_id}").start()
    live = len(instances)
    try:
        while live:
            try:
                item = inbox.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, HostEnded):
                live -= 1
            yield item
    finally:
        for stream in streams:
            stream.cancel()
        for channel in channels:
            channel.close()


def _pump(inst: LiveInstance, stream: Iterator[cpb.OutputLine],
          inbox: queue.Queue[LogLine | HostEnded]) -> None:
    error = None
    try:
        for msg in stream:
            inbox.put(_line(inst, msg))
    except grpc.RpcError as exc:  # the host went away, or our caller cancelled: it is done
        error = exc
    inbox.put(_ended(inst, error))


def since_time(seconds: float | None) -> float:
    """The time.time() ``seconds`` ago (0: from the start)."""
    return time.time() - seconds if seconds else 0.0
