"""This host's connection to Ray, the pools' secrets, and what Ray says when an actor dies.

One Ray connection per host process (Ray's rule): the first Ray pool connects to its
``ray_address`` (or finds Ray already initialized by the program, and uses that), later pools
must name the same address. ``local`` starts a private Ray instance for the host's lifetime:
loopback only (`_single_machine`), no dashboard, LOCAL_CPUS CPUs; Ray shuts it down when the
host exits. Actors
are created in the NAMESPACE namespace and named ``pit-<run id>-<pool>-<worker>``, so that
`pit cleanup` can find those of a host that is gone. Ray is imported only here and in
`ray_process`, and only when a Ray pool starts: without Ray installed everything else works.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, EnvironmentProblem

NAMESPACE = "pit"
RAY_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's own variable
LOCAL_CPUS = 2  # a private instance ("local") is for development: keep it small
RAY_HINT = ("install pit's ray extra: pip install 'pit-pools[ray]' "
            "(or: uv pip install 'pit-pools[ray]')")

# The per-process registry (CONVENTIONS #16): the address this host connected to, and each
# pool's secret by (run id, pool name).
_lock = threading.Lock()
_connected: dict[str, str] = {}
_secrets: dict[tuple[str, str], str] = {}


def import_ray() -> Any:
    """The ``ray`` module; EnvironmentProblem naming the extra when it is not importable."""
    try:
        import ray
    except ImportError as exc:
        raise EnvironmentProblem(f"backend = \"ray\" needs Ray, which cannot be imported "
                                 f"here: {exc}", hint=RAY_HINT) from None
    return ray


def connect(address: str) -> Any:
    """Connect this process to Ray at ``address`` once (blocking: seconds; run it off the
    loop); returns the ``ray`` module."""
    ray = import_ray()
    with _lock:
        if ray.is_initialized():
            first = _connected.get("address")
            if first is not None and first != address:
                raise ConfigError(
                    f"ray_address = {address!r}: this host is already connected to Ray at "
                    f"{first!r}, and a process can be connected to one Ray cluster only",
                    hint="give every Ray pool of this host the same ray_address")
            return ray
        if address == "local":
            _single_machine(ray)
            ray.init(address="local", num_cpus=LOCAL_CPUS, include_dashboard=False,
                     namespace=NAMESPACE, log_to_driver=False)
        else:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
        _connected["address"] = address
    return ray


def _single_machine(ray: Any) -> None:
    """Make a private instance listen on 127.0.0.1 only. Ray takes a node's address from the
    machine's network interfaces (and then also binds 0.0.0.0) unless it is told it is not a
    cluster: its RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (read at import, so the constant is set
    too; the variable is for the processes it starts). Measured here (Ray 2.60): without
    it GCS and raylet listened on 0.0.0.0 and the eth0 address; with it, 127.0.0.1 only."""
    os.environ[RAY_SINGLE_MACHINE_ENV] = "0"
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def pool_secret(run_id: str, pool: str) -> str:
    """The secret every connection to this pool's workers carries (made on first use). No
    lock: dict.setdefault is atomic, and `connect` holds ``_lock`` for seconds (ray.init)
    while this runs on a pool's loop."""
    return _secrets.setdefault((run_id, pool), secrets.token_urlsafe(32))


def actor_name(run_id: str, pool: str, worker_id: str) -> str:
    return f"pit-{run_id}-{pool}-{worker_id}"


PLACEMENT_READY_S = 120.0  # a placement group whose bundles cannot be reserved by then fails
_groups: dict[tuple[str, str], Any] = {}  # (run id, pool) -> its placement group


def placement_group(run_id: str, pool: str, size: int, resources: dict[str, Any],
                    placement: str) -> Any:
    """The pool's placement group (made on first use: ``size`` bundles of one worker's
    resources, Ray's SPREAD or PACK strategy), once Ray reserved it (blocking). Raises
    EnvironmentProblem when it cannot be reserved in PLACEMENT_READY_S."""
    ray = import_ray()
    from ray.util.placement_group import placement_group as make

    with _lock:
        group = _groups.get((run_id, pool))
        if group is None:
            opts = actor_options(resources)
            bundle = {"CPU": opts["num_cpus"], "GPU": opts["num_gpus"],
                      **({"memory": opts["memory"]} if "memory" in opts else {}),
                      **opts.get("resources", {})}
            bundle = {k: v for k, v in bundle.items() if v}
            group = _groups[(run_id, pool)] = make(
                [bundle] * size, strategy=placement.upper(), name=f"pit-{run_id}-{pool}")
    try:
        ray.get(group.ready(), timeout=PLACEMENT_READY_S)
    except Exception as exc:  # noqa: BLE001 - GetTimeoutError and kin
        raise EnvironmentProblem(
            f"pool {pool!r}: Ray could not reserve its placement group ({size} x one "
            f"worker's resources, {placement}) within {PLACEMENT_READY_S:g} s: {exc}",
            hint="check the pool's size and resources against the cluster's (pit hardware "
                 "--ray ADDRESS)") from None
    return group


def scheduling(group: Any) -> Any:
    """Actor option: any free bundle of ``group`` (a replacement takes its predecessor's)."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=-1)


def release_placement(run_id: str, pool: str) -> None:
    """Give the pool's placement group back to Ray (its pool closed); blocking."""
    with _lock:
        group = _groups.pop((run_id, pool), None)
    if group is not None:
        from ray.util.placement_group import remove_placement_group

        with contextlib.suppress(Exception):
            remove_placement_group(group)


def run_id_of(name: str) -> str | None:
    """The host run id in a worker actor's name (`actor_name`), or None if not one."""
    prefix, _, rest = name.partition("-")
    run_id = rest.partition("-")[0]
    return run_id if prefix == "pit" and run_id else None


def remove_actors(address: str, run_ids: set[str], *,
                  dry_run: bool = False) -> list[tuple[str, str, str]]:
    """Kill the worker actors of the hosts ``run_ids`` (dead ones: `pit cleanup`) on the
    cluster at ``address``: (actor name, run id, error or "") for each found. A cluster that
    cannot be reached is one entry with an empty name and the error (never raised)."""
    if address == "local":
        return [("", "", "ray_address \"local\" is a host's private instance, which ended "
                         "with it: give the address of a running cluster")]
    try:
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - reported, cleanup goes on
        return [("", "", f"Ray at {address!r} cannot be reached: {exc}")]
    out: list[tuple[str, str, str]] = []
    try:
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name, run_id = entry["name"], run_id_of(entry["name"])
            if entry["namespace"] != NAMESPACE or run_id not in run_ids:
                continue
            error = ""
            if not dry_run:
                try:
                    ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
                except Exception as exc:  # noqa: BLE001 - gone meanwhile, or refused
                    error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            out.append((name, str(run_id), error))
    finally:
        if started:
            ray.shutdown()
    return out


def actor_options(resources: dict[str, Any]) -> dict[str, Any]:
    """Ray's ``.options()`` for a worker's actor from a pool's ``resources`` table."""
    opts: dict[str, Any] = {"num_cpus": resources.get("num_cpus", 1),
                            "num_gpus": resources.get("num_gpus", 0)}
    if resources.get("memory_mb"):
        opts["memory"] = int(resources["memory_mb"]) * 1024 * 1024
    if resources.get("custom"):
        opts["resources"] = dict(resources["custom"])
    return opts


# What `probe` runs in a fresh interpreter (so that an unreachable cluster, or Ray's own
# start-up, never hangs or changes the calling process): connect, then one task on the cluster
# that reports its Python and whether pit's worker imports there.
PROBE = """
import json, sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_cpus=0)
def there():
    import importlib.util, sys
    return {"python": "%d.%d" % sys.version_info[:2],
            "pit": importlib.util.find_spec("runtime.worker") is not None,
            "missing": [m for m in ("virtualenv", "uv") if importlib.util.find_spec(m) is None]}

nodes = [{"id": n["NodeID"], "ip": n["NodeManagerAddress"], "alive": n["Alive"],
          "resources": n.get("Resources", {})} for n in ray.nodes()]
out = {"ray": ray.__version__, "nodes": sum(1 for n in nodes if n["alive"]), "node_list": nodes,
       "resources": ray.cluster_resources(), "available": ray.available_resources(),
       **ray.get(there.remote(), timeout=60)}
ray.shutdown()
print("PIT_PROBE " + json.dumps(out))
"""
PROBE_TIMEOUT_S = 90.0


@dataclass(frozen=True, slots=True)
class RayNode:
    node_id: str
    ip: str
    alive: bool
    resources: Mapping[str, float]  # totals: CPU, GPU, memory (bytes), custom ones


@dataclass(frozen=True, slots=True)
class RayClusterInfo:
    """What `pit hardware --ray` shows of a cluster (from `probe`)."""
    address: str
    ray_version: str
    python: str  # the cluster's, "3.11"
    pit_importable: bool  # pit's worker imports on the cluster
    nodes: tuple[RayNode, ...]
    resources: Mapping[str, float]
    available: Mapping[str, float]


def cluster_info(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> RayClusterInfo:
    """The cluster at ``address``, its nodes and resources (EnvironmentProblem when it
    cannot be reached)."""
    info = probe(address, timeout_s)
    nodes = tuple(RayNode(str(n["id"]), str(n["ip"]), bool(n["alive"]), dict(n["resources"]))
                  for n in info.get("node_list", ()))
    return RayClusterInfo(address, str(info["ray"]), str(info["python"]), bool(info["pit"]),
                          nodes, dict(info["resources"]), dict(info["available"]))


def probe_argv(python: str, address: str) -> list[str]:
    return [python, "-c", PROBE, address]


def probe(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """What the cluster at ``address`` says of itself (`PROBE`): Ray's version, live nodes,
    resources (total, available), its Python and whether pit imports there. Raises
    EnvironmentProblem when it cannot be reached in ``timeout_s``."""
    import json
    import subprocess
    import sys

    import_ray()  # the probe needs it too: say which extra is missing, not a traceback
    try:
        done = subprocess.run(probe_argv(sys.executable, address), capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"Ray at {address!r} did not answer within {timeout_s:g} s",
                                 hint="check ray_address and that the cluster runs "
                                      "(ray status on its head node)") from None
    for line in done.stdout.splitlines():
        if line.startswith("PIT_PROBE "):
            return dict(json.loads(line[len("PIT_PROBE "):]))
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise EnvironmentProblem(f"Ray at {address!r} cannot be reached: {tail}",
                             hint="check ray_address and that the cluster runs "
                                  "(ray status on its head node)")


def death_cause(error: BaseException) -> tuple[str, str]:
    """(cause, what happened) from the exception Ray raised for a dead actor: ``node_lost``
    (its node died), ``oom`` (Ray's memory monitor killed it), ``killed`` (ray.kill), else
    ``actor_died`` (its process died: killed from outside, or crashed)."""
    # Ray says why only in words (its GCS's messages); its generic text lists OOM and node
    # loss as possibilities, so only these exact phrases count.
    text = str(error)
    if type(error).__name__ == "NodeDiedError" or "its node has died" in text:
        return "node_lost", "its Ray node was lost"
    if type(error).__name__ == "OutOfMemoryError" or "running low on memory" in text:
        return "oom", "was killed by Ray's memory monitor: out of memory"
    if "killed by `ray.kill`" in text:
        return "killed", "its actor was killed with ray.kill"
    return "actor_died", "its Ray actor's process died"
