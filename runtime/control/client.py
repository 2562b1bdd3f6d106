"""Reading and driving live hosts: the index of instances, their Control service (status,
stop), and one tool call through the host's ExecuteTool (`pit call --instance`)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import orjson

from ..errors import InvalidArgument, PitError, PoolNotFound, from_payload
from ..protocol import codec, pb, pb_grpc
from ..protocol import pit_control_pb2 as cpb
from ..protocol import pit_control_pb2_grpc as cpb_grpc
from ..registry import process_alive
from .index import LiveInstance, live_instances

STATUS_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0  # for the host to answer the Stop request
STOP_WAIT_S = 60.0  # for a host that is exiting to be gone (its pools drain first)
STOP_POLL_S = 0.05
CALL_TIMEOUT_S = 300.0  # a call through a host, when the caller sets none


class NoInstance(PitError):
    category = "no_instance"


class HostUnreachable(PitError):
    category = "host_unreachable"


@dataclass(frozen=True, slots=True)
class StopResult:
    instance: str
    pid: int
    outcome: str  # "exiting" or "pools_closed" (`control.server`)
    exited: bool  # the host process is gone (only ever for "exiting")


def find_instances(instance_id: str | None = None) -> list[LiveInstance]:
    found = live_instances()
    if instance_id:
        found = [i for i in found if i.instance_id.startswith(instance_id)]
    if not found:
        what = f"instance {instance_id!r}" if instance_id else "pit host"
        raise NoInstance(f"no running {what} on this machine",
                         hint="start one with `pit run script.py` (or a program using "
                              "runtime.Pool), then run this again")
    return found


def check_pool(instances: list[LiveInstance], pool: str) -> None:
    """Raise PoolNotFound when no host of ``instances`` has a pool named ``pool`` ('': any)."""
    names = sorted({name for inst in instances for name in inst.pools})
    if pool and pool not in names:
        raise PoolNotFound(f"no running host has a pool named {pool!r}",
                           details={"pool": pool, "pools": names},
                           hint=f"pools of the running hosts: {', '.join(names) or 'none'}")


def find_instance(instance_id: str | None) -> LiveInstance:
    """The one host ``instance_id`` (an id prefix) names, or the only running host."""
    found = find_instances(instance_id)
    if len(found) > 1:
        ids = ", ".join(f"{i.instance_id} (pid {i.pid})" for i in found)
        what = f"{instance_id!r} matches" if instance_id else "there are"
        raise NoInstance(f"{what} several running hosts: {ids}",
                         hint="name one with --instance ID (`pit status` lists them)")
    return found[0]


def get_status(inst: LiveInstance, pool: str = "") -> dict[str, Any]:
    try:
        with grpc.insecure_channel(inst.control_address) as channel:
            snap = cpb_grpc.ControlStub(channel).GetStatus(cpb.StatusRequest(pool=pool),
                                                          timeout=STATUS_TIMEOUT_S)
    except grpc.RpcError as exc:
        return unanswered(inst, exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
    return dict(orjson.loads(snap.json))


def unanswered(inst: LiveInstance, timed_out: bool) -> dict[str, Any]:
    """The stand-in snapshot of a host that did not answer: ``state`` "exited" when its
    process is gone, else "unresponsive" with an ``error`` in words (never gRPC's)."""
    base = {"instance": inst.instance_id, "pid": inst.pid, "pools": []}
    if not process_alive(inst.pid, inst.create_time):
        return base | {"state": "exited", "error": "exited"}
    why = (f"did not answer within {STATUS_TIMEOUT_S:g} s (busy, paused or stopping?)"
           if timed_out else "is alive but its control socket refused the call (stopping?)")
    return base | {"state": "unresponsive", "error": why}


def watch(inst: LiveInstance, pool: str = "", interval_ms: int = 250) -> Iterator[dict[str, Any]]:
    with grpc.insecure_channel(inst.control_address) as channel:
        stream = cpb_grpc.ControlStub(channel).WatchStatus(
            cpb.WatchRequest(pool=pool, interval_ms=interval_ms))
        try:
            for snap in stream:
                yield dict(orjson.loads(snap.json))
        finally:
            stream.cancel()


def stop(inst: LiveInstance, *, wait: float = STOP_WAIT_S) -> StopResult:
    """Ask the host to close its pools (`control.server` says how) and wait up to ``wait`` s
    for them to be closed (and, when its program exits, for it to be gone). Raises
    HostUnreachable."""
    try:
        with grpc.insecure_channel(inst.control_address) as channel:
            reply = cpb_grpc.ControlStub(channel).Stop(cpb.StopRequest(),
                                                       timeout=STOP_TIMEOUT_S)
    except grpc.RpcError as exc:
        why = ("runs an older pit that cannot be asked to stop"
               if exc.code() == grpc.StatusCode.UNIMPLEMENTED else
               f"did not take the stop request: {exc.code().name}: {exc.details()}")
        raise HostUnreachable(f"host {inst.instance_id} (pid {inst.pid}) {why}",
                              hint=f"`kill {inst.pid}` stops it the hard way; then `pit "
                                   "cleanup` removes what it leaves") from None
    deadline = time.monotonic() + wait
    if reply.outcome == "exiting":
        while not (gone := not process_alive(inst.pid, inst.create_time)) and \
                time.monotonic() < deadline:
            time.sleep(STOP_POLL_S)
        return StopResult(inst.instance_id, inst.pid, reply.outcome, gone)
    while not _pools_closed(inst) and time.monotonic() < deadline:
        time.sleep(STOP_POLL_S)
    return StopResult(inst.instance_id, inst.pid, reply.outcome, False)


def _pools_closed(inst: LiveInstance) -> bool:
    """No worker left in the host's pools (or the host no longer answers: a standalone
    pool's close takes its host down with it)."""
    snap = get_status(inst)
    return bool(snap.get("error")) or not any(p["workers"] for p in snap["pools"])


def call_tool(inst: LiveInstance, pool: str, tool: str, args: Mapping[str, Any] | None, *,
              timeout: float | None = None) -> Any:
    """Run ``tool`` of the host's pool ``pool`` once, through the host's ExecuteTool, and
    return its result; a failed call raises the PitError the call raised in the host (a
    tool's own exception keeps its type and traceback). Raises HostUnreachable."""
    req = pb.ExecuteToolRequest(tool_name=tool)
    try:
        codec.encode_params(req, args)
    except codec.CodecError as exc:
        raise InvalidArgument(f"tool {tool!r}: {exc}") from None
    from ..pool.host.tool_router import POOL_KEY  # here: it loads the host's pool package

    req.metadata[POOL_KEY] = pool
    try:
        with grpc.insecure_channel(inst.control_address) as channel:
            resp = pb_grpc.BridgeServiceStub(channel).ExecuteTool(
                req, timeout=timeout or CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        raise HostUnreachable(f"host {inst.instance_id} (pid {inst.pid}) did not run "
                              f"{tool!r}: {exc.code().name}: {exc.details()}",
                              hint="check it with `pit status`") from None
    if not resp.success:
        payload = codec.decode_error(resp.error_message)
        raise from_payload(payload, tool, {"pool": pool, "instance": inst.instance_id})
    return codec.decode_result(resp)
