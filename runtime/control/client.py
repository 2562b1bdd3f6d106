"""Reading live hosts: the index of instances, and their Control service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import orjson

from ..errors import PitError, PoolNotFound
from ..protocol import pit_control_pb2 as cpb
from ..protocol import pit_control_pb2_grpc as cpb_grpc
from ..registry import process_alive
from .index import LiveInstance, live_instances

STATUS_TIMEOUT_S = 5.0


class NoInstance(PitError):
    category = "no_instance"


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
