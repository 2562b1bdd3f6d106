"""Pools whose workers Ray places (backend = "ray"): each worker is a Ray actor running pit's
worker on TCP, called over gRPC with the pool's secret. The tests start a private Ray instance
(loopback only, no dashboard, 2 CPUs) once for the module and always stop it; without Ray
installed (the default dev install: it is the ``ray`` extra) they are skipped."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from typer.testing import CliRunner

import runtime
from runtime import Pool
from runtime.protocol import pb, pb_grpc, secret, shm
from snakecli.app import app
from tests.conftest import ROOT, pid_alive, wait_until
from tests.tls_support import make_certs

# Ray picks its nodes' address (and so where GCS, raylets and workers listen) from this machine's
# network interfaces unless told it is a single-machine setup: this, read when ray is first
# imported, makes it 127.0.0.1 for the whole test cluster (children inherit it).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'pit-pools[ray]' "
                                        "(the ray extra) to run the Ray backend's tests")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

SAMPLE = "tests.adapters.sample:SampleAdapter"
STATUS_ENV = {"NO_COLOR": "1", "COLUMNS": "200"}
# Placing an actor and starting its worker takes seconds on a loaded machine: a call retried
# after a crash waits in the queue for the replacement.
RAY_POOL: dict[str, Any] = {"adapter": SAMPLE, "backend": "ray", "ray_address": "auto",
                            "resources": {"num_cpus": 0.5}, "startup_timeout_ms": 120_000,
                            "queue_timeout_ms": 120_000}


NODES: dict[str, Any] = {}  # the module's cluster and its second node (the node-loss test)


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[str]:
    """A private two-node Ray cluster for this module (loopback, no dashboard, 1 CPU per node,
    resource side_a on the head and side_b on the other); its GCS address. Stopped at the
    end, and its processes (raylets, GCS: children of this process) must be gone then."""
    from ray.cluster_utils import Cluster

    local = {"num_cpus": 1}
    two = Cluster(initialize_head=True, head_node_args={
        **local, "include_dashboard": False, "resources": {"side_a": 1},
        # a lost node is declared dead in seconds, not Ray's default ~15 s (node-loss test)
        "_system_config": {"health_check_period_ms": 1000,
                           "health_check_failure_threshold": 3}})
    try:
        assert two.address.startswith("127.0.0.1:")  # loopback only
        NODES["side_b"] = two.add_node(**local, resources={"side_b": 1})
        NODES["cluster"] = two
        two.wait_for_nodes()
        ray.init(address=two.address, namespace="pit", log_to_driver=False)
        ours = [p for p in psutil.Process().children(recursive=True)
                if any(n in " ".join(p.cmdline()) for n in ("raylet", "gcs_server"))]
        yield two.address
    finally:
        ray.shutdown()
        two.shutdown()
    assert ours and wait_until(lambda: not any(pid_alive(p.pid) for p in ours),
                               timeout=30), "Ray's processes outlived the cluster's shutdown"


def pit_actors(prefix: str = "pit-") -> list[str]:
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == "pit" and a["name"].startswith(prefix))


def actor_info(name: str) -> dict[str, Any]:
    """What the actor says of its worker (its ready JSON, node, the actor's pid)."""
    return dict(ray.get(ray.get_actor(name, namespace="pit").ready.remote(5), timeout=30))


def test_calls_streams_and_sessions_through_ray_placed_workers() -> None:
    with Pool(size=2, **RAY_POOL) as pool:
        stats = pool.stats()
        # the call lane: frames on TCP, opened with the pool's secret
        assert stats.ready == 2 and {w.lane for w in stats.workers} == {"socket"}
        assert pool.execute("record", {"tag": "a"}) >= 1
        assert list(pool.stream("async_stream", {"n": 4})) == [0, 1, 2, 3]
        with pool.session() as s:
            s.execute("remember", {"item": "x"})
            assert s.execute("remember", {"item": "y"})["items"] == ["x", "y"]
        with pytest.raises(runtime.CallTimeout):
            pool.execute("spin", {"seconds": 30}, timeout=0.5)
        assert pool.execute("record", {"tag": "after"}, timeout=30) >= 1
        names = pit_actors()
        assert len(names) == 2
        infos = [actor_info(n) for n in names]
        assert {i["pid"] for i in infos} == set(pool.pids())
        assert all(i["address"].startswith("127.0.0.1:") for i in infos)
        stats = pool.stats()
        assert stats.backend == "ray"
        assert {w.node for w in stats.workers} == {f"127.0.0.1 {i['node_id'][:12]}"
                                                   for i in infos}
        status = CliRunner().invoke(app, ["status", "--json"], env=STATUS_ENV)
        [p] = json.loads(status.output)[0]["pools"]
        assert p["backend"] == "ray" and {w["node"] for w in p["workers"]} == {
            w.node for w in stats.workers}
        table = " ".join(CliRunner().invoke(app, ["status"], env=STATUS_ENV).output.split())
        assert "backend ray" in table and "127.0.0.1" in table
        pids = pool.pids()
    # closing the pool ends its actors and their workers
    assert wait_until(lambda: not pit_actors(), timeout=30), pit_actors()
    assert not any(pid_alive(p) for p in pids)


def test_telemetry_and_pit_run_work_with_a_ray_pool_unchanged(cluster: str,
                                                              tmp_path: Path) -> None:
    events: list[Any] = []
    sub = runtime.telemetry.subscribe("*", events.append)
    try:
        with Pool(size=1, **RAY_POOL) as pool:
            assert pool.execute("emit_events", {"n": 2}, metadata={"correlation_id": "r-1"}) == 2
            assert wait_until(lambda: sum(e.name == "adapter.sample.tick" for e in events) == 2)
            assert wait_until(lambda: any(e.name == "pool.call.completed" for e in events))
    finally:
        sub.cancel()
    ticks = [e for e in events if e.name == "adapter.sample.tick"]
    assert {e.metadata["correlation_id"] for e in ticks} == {"r-1"}
    (tmp_path / "pit.toml").write_text(
        f'[pools.default]\nadapter = "{SAMPLE}"\nbackend = "ray"\nray_address = "{cluster}"\n'
        'resources = { num_cpus = 0.5 }\nstartup_timeout_ms = 120000\n')
    (tmp_path / "main.py").write_text(
        "import runtime\nprint(runtime.execute('record', {'tag': 'x'}))\n"
        "print(runtime.current_pools().default().stats().backend)\n")
    done = subprocess.run([sys.executable, "-m", "snakecli", "run", "main.py"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "ray"]
    assert wait_until(lambda: not pit_actors(), timeout=30), pit_actors()


def test_custom_resources_place_a_pools_workers_on_the_node_that_has_them() -> None:
    nodes = {}
    # side_b's worker runs on the other node of this machine: it proves it sees this host's
    # /dev/shm, so large payloads go through arenas; side_a's pool sends them inline
    for side, threshold_kb in (("side_a", 0), ("side_b", 1024)):
        with Pool(name=side.replace("_", "-"), size=1, shm_threshold_kb=threshold_kb,
                  **{**RAY_POOL, "resources": {"num_cpus": 0.5, "custom": {side: 1}}}) as pool:
            assert pool.execute("record", {"tag": side}) == 1
            data = os.urandom(3 << 20)
            assert pool.execute("slow_echo", {"data": data, "seconds": 0}) == data
            arenas = glob.glob(f"{shm.PREFIX}{pool.instance.id}-*")
            assert len(arenas) == (2 if threshold_kb else 0), arenas  # argument + result
            assert list(pool.stream("async_stream", {"n": 3})) == [0, 1, 2]
            with pool.session() as s:
                s.execute("remember", {"item": side})
                assert s.execute("remember", {"item": "2"})["items"] == [side, "2"]
            (name,) = pit_actors()
            nodes[side] = actor_info(name)["node_id"]
        assert wait_until(lambda: not pit_actors(), timeout=30)
    head = ray.get_runtime_context().get_node_id()  # the driver runs on the head node
    assert nodes["side_a"] == head and nodes["side_b"] != head


def test_a_ray_worker_refuses_rpcs_without_the_pools_secret() -> None:
    with Pool(size=1, **RAY_POOL) as pool:
        address = actor_info(pit_actors()[0])["address"]
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.BridgeServiceStub(channel)
            for metadata in ((), ((secret.HEADER, "not-the-secret"),)):
                with pytest.raises(grpc.RpcError) as info:
                    stub.Ping(pb.PingRequest(message="x"), timeout=10, metadata=metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert pool.execute("record", {"tag": "still served"}) >= 1


def test_a_ray_pool_with_tls_serves_calls_and_streams_over_tls_only(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    with Pool(size=1, **RAY_POOL, tls=certs.table()) as pool:
        assert [w.lane for w in pool.stats().workers] == ["socket"]  # the lane, in TLS
        assert pool.execute("record", {"tag": "a"}) == 1
        assert list(pool.stream("async_stream", {"n": 3})) == [0, 1, 2]
        address = actor_info(pit_actors()[0])["address"]
        with grpc.insecure_channel(address) as channel:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.BridgeServiceStub(channel).Ping(pb.PingRequest(message="x"),
                                                        timeout=10)
            # not UNAUTHENTICATED (the secret's check, see above): no TLS, no connection
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert pool.execute("record", {"tag": "b"}) == 2
    assert wait_until(lambda: not pit_actors(), timeout=30), pit_actors()
    # through the actor: its forwarder checks the worker as the host does
    with Pool(size=1, **RAY_POOL, tls=certs.table(), ray_calls="actor") as pool:
        assert [w.lane for w in pool.stats().workers] == ["ray-actor"]
        assert pool.execute("record", {"tag": "a"}) == 1
        assert list(pool.stream("async_stream", {"n": 3})) == [0, 1, 2]
    assert wait_until(lambda: not pit_actors(), timeout=30), pit_actors()
    # without server_name the host checks the worker's IP, which its certificate lacks
    unnamed = {k: v for k, v in certs.table().items() if k != "server_name"}
    with pytest.raises(runtime.WorkerStartError, match="no answer over TLS") as info:
        Pool(size=1, **RAY_POOL, tls=unnamed).start()
    assert "tls.server_name" in (info.value.hint or "")
    assert wait_until(lambda: not pit_actors(), timeout=30), pit_actors()


def test_a_tls_worker_the_actor_cannot_check_fails_its_start_through_the_actor_too(
        tmp_path: Path) -> None:
    """ray_calls = "actor": a worker certificate the pool's tls does not accept is a start
    error naming TLS, as on the direct route, not a ready worker whose every call fails."""
    certs = make_certs(tmp_path)
    unnamed = {k: v for k, v in certs.table().items() if k != "server_name"}
    with pytest.raises(runtime.WorkerStartError, match="no answer over TLS") as info:
        with Pool(size=1, **RAY_POOL, tls=unnamed, ray_calls="actor") as pool:
            pool.execute("record", {"tag": "a"}, timeout=20)
    assert "tls.server_name" in (info.value.hint or "")
    assert wait_until(lambda: not pit_actors(), timeout=30), pit_actors()


def _kill_actor_while(pool: Pool, tool: str, args: dict[str, Any]) -> tuple[Any, Any]:
    """Run ``tool`` on the pool's one worker, SIGKILL its actor's process while the call is
    out; (result, error) of the call."""
    (name,) = pit_actors()
    actor_pid = actor_info(name)["actor_pid"]
    out: dict[str, Any] = {}

    def call() -> None:
        try:
            out["result"] = pool.execute(tool, args, timeout=60)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    assert wait_until(lambda: pool.stats().workers[0].in_flight == 1, timeout=30)
    os.kill(actor_pid, signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive()
    return out.get("result"), out.get("error")


def test_max_memory_mb_recycles_a_ray_worker_sampled_by_its_actor() -> None:
    pool_args = {**RAY_POOL, "adapter": "runtime.adapters.showcase:ShowcaseAdapter"}
    with Pool(size=1, max_memory_mb=150, **pool_args) as pool:
        pid = pool.pids()[0]
        assert wait_until(lambda: pool.stats().workers[0].rss_mb > 0, timeout=30)
        # what the host reads for a Ray worker, on any node: its actor's word, not a pid here
        (name,) = pit_actors()
        rss, _, uss = ray.get(ray.get_actor(name, namespace="pit").usage.remote(True),
                              timeout=30)
        assert 0 < uss <= rss < 150
        pool.execute("allocate", {"mb": 250})
        assert wait_until(lambda: pool.stats().recycles.get("memory") == 1, timeout=60)
        assert wait_until(lambda: pool.pids() and pool.pids()[0] != pid, timeout=60)
        assert pool.execute("ping")["pid"] != pid


def test_a_ray_worker_that_exits_is_named_and_replaced_and_recycling_ends_its_actor(
        tmp_path: Any) -> None:
    with Pool(size=1, max_requests=3, **RAY_POOL) as pool:
        first = pool.pids()
        with pytest.raises(runtime.WorkerExit) as info:
            pool.execute("crash_once", {"marker": str(tmp_path / "m")})
        assert info.value.details["cause"] == "exit"  # os._exit(3) in the worker itself
        assert pool.execute("crash_once", {"marker": str(tmp_path / "m")}) == "survived"
        assert pool.pids() != first
        second = pool.pids()
        for i in range(6):  # max_requests: the worker is stopped (SIGTERM) and replaced
            pool.execute("record", {"tag": str(i)})
        assert wait_until(lambda: pool.stats().recycles.get("requests", 0) >= 1, timeout=60)
        assert wait_until(lambda: pool.stats().ready == 1 and pool.pids() != second,
                          timeout=120)
        assert wait_until(lambda: len(pit_actors()) == 1, timeout=30), pit_actors()
        assert not any(pid_alive(p) for p in first + second)


@pytest.mark.parametrize("ray_calls", ["auto", "actor"])  # direct, through the actor
def test_sigkill_of_an_actor_fails_its_call_retries_an_idempotent_one_and_replaces_it(
        ray_calls: str) -> None:
    with Pool(size=1, idempotent_tools=["slow_echo"], ray_calls=ray_calls, **RAY_POOL) as pool:
        assert (pool.stats().workers[0].lane == "ray-actor") == (ray_calls == "actor")
        first = pool.pids()
        result, error = _kill_actor_while(pool, "block", {"seconds": 60})
        assert result is None and isinstance(error, runtime.WorkerExit), error
        assert error.details["cause"] == "actor_died", error.details
        assert "Ray actor" in str(error)
        assert wait_until(lambda: pool.stats().ready == 1, timeout=120)
        second = pool.pids()
        assert second != first
        # the old worker follows its actor (parent-death signal, then its stop grace)
        assert wait_until(lambda: not any(pid_alive(p) for p in first), timeout=30)
        result, error = _kill_actor_while(pool, "slow_echo", {"data": b"x", "seconds": 2})
        assert error is None and result == b"x"  # retried on the replacement
        assert wait_until(lambda: pool.stats().ready == 1, timeout=120)
        assert pool.stats().restarts >= 2
        assert not set(pool.pids()) & set(second)


HOST = """
import sys, time
from runtime import Pool
pool = Pool(adapter="tests.adapters.sample:SampleAdapter", size=1, backend="ray",
            ray_address=sys.argv[1], resources={"num_cpus": 0.5}, startup_timeout_ms=120000)
pool.start()
print("ready", pool.pids()[0], flush=True)
time.sleep(600)
"""


def test_a_host_killed_with_sigkill_leaves_no_actor_or_worker_behind(cluster: str) -> None:
    before = set(pit_actors())
    host = subprocess.Popen([sys.executable, "-c", HOST, cluster], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert host.stdout is not None
        line = b""
        while not line.startswith(b"ready"):
            line = host.stdout.readline()
            assert line, "the host exited before its pool was ready"
        worker_pid = int(line.split()[1])
        assert len(set(pit_actors()) - before) == 1
        host.kill()
        host.wait()
        assert wait_until(lambda: not set(pit_actors()) - before, timeout=60)
        assert wait_until(lambda: not pid_alive(worker_pid), timeout=30)
    finally:
        host.kill()
        host.wait()
        if host.stdout is not None:
            host.stdout.close()


class _Stray:
    def ping(self) -> str:
        return "here"


def test_pit_cleanup_kills_the_actors_of_a_dead_host_by_its_run_id(
        cluster: str, state_dir: Any) -> None:
    from runtime.cleanup import cleanup
    from runtime.registry import connect

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    conn = connect(state_dir)  # a host that is gone, as its registry row says
    with conn:
        conn.execute("INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,NULL)",
                     ("deadbeef", "t", int(dead.stdout), 1.0, "", None, "", "default", 1.0))
    conn.close()
    stray_cls = ray.remote(_Stray)
    strays = [stray_cls.options(name=n, namespace="pit", num_cpus=0).remote() for n in
              ("pit-deadbeef-default-worker-1", "pit-cafe0001-default-worker-1")]
    try:
        assert ray.get([s.ping.remote() for s in strays]) == ["here", "here"]
        report = cleanup(state_dir, ray_address=cluster)
        killed = [i for i in report.items if i.kind == "ray_actor"]
        assert [(i.target, i.done) for i in killed] == [("pit-deadbeef-default-worker-1",
                                                          True)]
        # the dead host's actor is gone; another run's (a live host's) is left alone
        assert wait_until(lambda: pit_actors() == ["pit-cafe0001-default-worker-1"],
                          timeout=30), pit_actors()
    finally:
        for s in strays:
            ray.kill(s)


def test_doctor_probes_the_cluster_a_ray_pool_names(cluster: str) -> None:
    from runtime import doctor
    from runtime.config import make_pool_config
    from runtime.pool import ray_cluster

    info = ray_cluster.probe(cluster)
    assert info["nodes"] == 2 and info["pit"] and info["ray"] == ray.__version__
    assert info["resources"]["side_a"] == 1 and info["resources"]["side_b"] == 1
    fits = make_pool_config("p", backend="ray", ray_address=cluster,
                            resources={"custom": {"side_b": 1}})
    assert doctor._ray(fits).status == "pass"
    too_big = make_pool_config("p", backend="ray", ray_address=cluster,
                               resources={"num_gpus": 1})
    check = doctor._ray(too_big)
    assert check.status == "fail" and "GPU 1 (the cluster has 0)" in check.message
    here = "{}.{}".format(*sys.version_info[:2])
    import importlib.util

    from runtime.pool import ray_env

    # the cluster runs this machine's Python: it lacks what this one lacks of the ray extra
    assert info["python"] == here and info["missing"] == [
        m for m in ray_env.CLUSTER_PACKAGES if importlib.util.find_spec(m) is None]
    other = "3.9" if here != "3.9" else "3.10"
    check = doctor._ray(make_pool_config("p", backend="ray", ray_address=cluster,
                                         python=other))
    assert check.status == "fail" and f"the cluster runs Python {here}" in check.message
    assert doctor._ray(make_pool_config("p", backend="ray", ray_address=cluster,
                                        python=here, requirements=["x"])).status == "pass"
    # a private instance runs this host's Python: the same rule, without a probe
    local = doctor._ray(make_pool_config("p", backend="ray", ray_address="local", python=other))
    assert local.status == "fail" and f"the cluster runs Python {here}" in local.message


def test_pit_hardware_lists_the_clusters_nodes_and_resources(cluster: str) -> None:
    result = CliRunner().invoke(app, ["hardware", "--ray", cluster, "--json"], env=STATUS_ENV)
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["address"] == cluster and info["pit_importable"]
    custom = sorted(k for n in info["nodes"] for k in n["resources"] if k.startswith("side_"))
    assert custom == ["side_a", "side_b"]
    assert {n["ip"] for n in info["nodes"]} == {"127.0.0.1"}
    table = CliRunner().invoke(app, ["hardware", "--ray", cluster], env=STATUS_ENV)
    assert table.exit_code == 0 and "side_b 1" in table.output and "2 node(s)" in table.output


@pytest.mark.parametrize(("placement", "distinct_nodes"), [("spread", 2), ("pack", 1)])
def test_a_placement_group_spreads_or_packs_a_pools_workers(placement: str,
                                                           distinct_nodes: int) -> None:
    # SPREAD and PACK are Ray's best effort: with both nodes free they are deterministic
    assert wait_until(lambda: ray.available_resources().get("CPU", 0) >= 2, timeout=60)
    with Pool(size=2, placement=placement, **RAY_POOL) as pool:
        assert pool.execute("record", {"tag": "x"}) == 1
        nodes = {actor_info(n)["node_id"] for n in pit_actors()}
        assert len(nodes) == distinct_nodes
        groups = [g for g in ray.util.placement_group_table().values()
                  if g["name"].startswith("pit-")]
        assert [g["strategy"] for g in groups if g["state"] == "CREATED"] == [
            placement.upper()]
    # closed: its bundles are given back
    assert wait_until(lambda: all(g["state"] == "REMOVED" for g in
                                  ray.util.placement_group_table().values()
                                  if g["name"].startswith("pit-")), timeout=30)


def test_losing_a_node_fails_its_workers_call_as_node_lost(cluster: str) -> None:
    # last in the module: the cluster has one node afterwards
    config = {**RAY_POOL, "resources": {"num_cpus": 0.5, "custom": {"side_b": 1}},
              "startup_timeout_ms": 15_000,
              # Ray's verdict, not pit's heartbeat (which would call the worker hung first)
              "heartbeat_interval_ms": 0}
    with Pool(name="lost", size=1, **config) as pool:
        out: dict[str, Any] = {}

        def call() -> None:
            try:
                out["result"] = pool.execute("block", {"seconds": 60}, timeout=90)
            except Exception as exc:  # noqa: BLE001 - the test looks at it
                out["error"] = exc

        thread = threading.Thread(target=call)
        thread.start()
        assert wait_until(lambda: pool.stats().workers[0].in_flight == 1, timeout=30)
        NODES["cluster"].remove_node(NODES.pop("side_b"), allow_graceful=False)
        thread.join(120)
        error = out.get("error")
        assert isinstance(error, runtime.WorkerExit), out
        assert error.details["cause"] == "node_lost", error.details["output_tail"]
        assert "node was lost" in str(error)


def test_ray_calls_actor_sends_calls_streams_sessions_and_timeouts_through_the_actor(
        tmp_path: Any) -> None:
    with Pool(size=1, ray_calls="actor", **RAY_POOL) as pool:
        assert {w.lane for w in pool.stats().workers} == {"ray-actor"}
        assert pool.execute("record", {"tag": "a"}) == 1
        assert list(pool.stream("async_stream", {"n": 4})) == [0, 1, 2, 3]
        with pytest.raises(RuntimeError, match="stream broke"):
            list(pool.stream("broken_stream", {"n": 2}))
        with pool.session() as s:
            s.execute("remember", {"item": "x"})
            assert s.execute("remember", {"item": "y"})["items"] == ["x", "y"]
        with pytest.raises(ValueError, match="boom"):
            pool.execute("raise_as", {"kind": "ValueError"})
        with pytest.raises(runtime.CallTimeout):
            pool.execute("spin", {"seconds": 60}, timeout=0.5)
        # the worker was told to stop the tool: its one slot serves the next call at once
        # (a spin still running would keep this call waiting past its deadline)
        assert pool.execute("record", {"tag": "after"}, timeout=20) == 2
        # a worker that exits: its call fails naming the exit, a replacement serves the next
        with pytest.raises(runtime.WorkerExit) as info:
            pool.execute("crash_once", {"marker": str(tmp_path / "m")})
        assert info.value.details["cause"] == "exit"
        assert pool.execute("crash_once", {"marker": str(tmp_path / "m")}) == "survived"
        status = CliRunner().invoke(app, ["status", "--json"], env=STATUS_ENV)
        [p] = json.loads(status.output)[0]["pools"]
        assert {w["lane"] for w in p["workers"]} == {"ray-actor"}
        table = " ".join(CliRunner().invoke(app, ["status"], env=STATUS_ENV).output.split())
        assert "ray-actor" in table
        assert pool.stats().workers[0].state == "ready"


def test_ray_calls_auto_goes_through_the_actor_when_the_workers_address_does_not_answer(
) -> None:
    # The worker announces an address of TEST-NET-1 (RFC 5737, never routed) for the port it
    # listens on: the host's reachability probe fails there, as for a node behind NAT.
    unreachable = {**RAY_POOL, "env": {"PIT_RAY_ANNOUNCE_HOST": "192.0.2.1"}}
    with Pool(size=1, **unreachable) as pool:
        assert {w.lane for w in pool.stats().workers} == {"ray-actor"}
        assert pool.execute("record", {"tag": "a"}) == 1
    with Pool(size=1, **RAY_POOL) as pool:  # and a reachable one is called directly
        assert {w.lane for w in pool.stats().workers} == {"socket"}
    with pytest.raises(runtime.WorkerStartError, match="not reachable at 192.0.2.1"):
        with Pool(size=1, ray_calls="direct", **unreachable):
            pass


def test_a_pool_python_other_than_the_clusters_fails_its_start_naming_both() -> None:
    here = "{}.{}".format(*sys.version_info[:2])
    other = "3.9" if here != "3.9" else "3.10"
    with pytest.raises(runtime.WorkerStartError,
                       match=f"python = '{other}' is Python {other}, but the cluster runs "
                             f"Python {here}"):
        with Pool(size=1, python=other, **RAY_POOL):
            pass
    assert not pit_actors()


@pytest.mark.slow  # installs a package from PyPI into a Ray runtime_env (seconds to minutes)
def test_a_ray_pools_requirements_become_its_actors_runtime_env(tmp_path: Any) -> None:
    import importlib.util

    from runtime.pool import ray_env

    missing = [m for m in ray_env.CLUSTER_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"Ray's uv runtime_env needs {' and '.join(missing)} (the ray extra: "
                    "pip install 'pit-pools[ray]')")
    assert importlib.util.find_spec("inflection") is None  # not in the host's env
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# a file's lines join the strings\ninflection==0.5.1\n")
    with Pool(size=1, requirements=[str(reqs)], python="{}.{}".format(*sys.version_info[:2]),
              **RAY_POOL) as pool:
        where = pool.execute("module_file", {"name": "inflection"})
        assert "runtime_resources/uv" in where, where  # Ray's env, built with uv
    with pytest.raises(runtime.WorkerStartError, match="runtime_env") as info:
        with Pool(size=1, requirements=["pit-no-such-package-0a9f3==0.0.1"], **RAY_POOL):
            pass
    assert "pit-no-such-package-0a9f3" in str(info.value) and "uv" in (info.value.hint or "")
    assert wait_until(lambda: not pit_actors(), timeout=30), pit_actors()


def test_a_stream_through_the_actor_holds_a_sleeping_consumers_producer_and_closes(
        tmp_path: Any) -> None:
    import time
    from pathlib import Path

    progress = tmp_path / "progress"
    with Pool(size=1, ray_calls="actor", **RAY_POOL) as pool:
        stream = pool.stream("watched_stream",
                             {"n": 200_000, "size": 100, "progress": str(progress)})
        for _ in range(10):
            next(stream)
        # The consumer sleeps: Ray's generator backpressure holds the actor and gRPC's window
        # the worker. Measured here: 2,500 ahead however long it sleeps; without the
        # backpressure the actor drains the worker into Ray's object store (~3k more a second)
        time.sleep(3.0)
        ahead = int(progress.read_text())
        assert ahead < 5_000, f"producer ran {ahead} chunks ahead of a sleeping consumer"
        stream.close()  # the RPC is cancelled through the actor: the generator's finally runs
        assert wait_until(lambda: Path(str(progress) + ".finally").exists(), timeout=20)
        assert pool.execute("record", {"tag": "next"}, timeout=20) == 1


def test_streams_closed_early_through_the_actor_give_back_its_threads(tmp_path: Any) -> None:
    """A stream closed while Ray's backpressure holds its generator in the actor: the actor's
    thread must come back, or a few such streams leave it none for the next calls."""
    import time

    from runtime.pool.ray_process import ACTOR_OWN_THREADS

    with Pool(size=1, ray_calls="actor", **RAY_POOL) as pool:
        for i in range(ACTOR_OWN_THREADS + 2):
            progress = tmp_path / f"progress-{i}"
            stream = pool.stream("watched_stream",
                                 {"n": 100_000, "size": 100, "progress": str(progress)})
            next(stream)
            time.sleep(0.5)  # the actor's generator reaches Ray's backpressure and waits
            stream.close()
            assert wait_until(lambda p=progress: Path(f"{p}.finally").exists(), timeout=20)
        assert pool.execute("record", {"tag": "next"}, timeout=30) == 1
        assert pool.stats().workers[0].state == "ready"
