"""The Ray backend's pure parts, without Ray: its config keys, actor options, how an actor's
death is named, the worker flags that stay on the host."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from runtime.config import make_pool_config
from runtime.envs import needs_env
from runtime.errors import ConfigError
from runtime.pool import crash, ray_cluster, ray_env
from runtime.pool.ray_process import reachable, worker_flags
from runtime.protocol import pb


def test_a_ray_pool_takes_its_address_and_resources() -> None:
    cfg = make_pool_config("p", backend="ray", ray_address="ray://head:10001",
                           resources={"num_cpus": 0.5, "memory_mb": 256,
                                      "custom": {"side_a": 1}})
    assert (cfg.backend, cfg.ray_address) == ("ray", "ray://head:10001")
    assert ray_cluster.actor_options(dict(cfg.resources)) == {
        "num_cpus": 0.5, "num_gpus": 0, "memory": 256 * 1024 * 1024,
        "resources": {"side_a": 1}}
    assert make_pool_config("q").backend == "local"  # the default
    assert cfg.ray_calls == "auto"  # direct when the worker's port answers, else its actor


@pytest.mark.parametrize(("values", "says"), [
    ({"backend": "cluster"}, "backend = 'cluster' is invalid"),
    ({"backend": "ray", "ray_address": "head:6379x"}, "ray_address"),
    ({"backend": "ray", "ray_address": "http://head"}, "ray_address"),
    ({"backend": "ray", "resources": {"cpus": 1}}, "resources"),
    ({"backend": "ray", "resources": {"memory_mb": 1.5}}, "resources"),
    ({"backend": "ray", "resources": {"custom": {"x": -1}}}, "resources"),
    ({"resources": {"num_cpus": 1}}, "resources applies to backend = \"ray\" only"),
    ({"ray_address": "auto"}, "ray_address applies to backend = \"ray\" only"),
    ({"placement": "spread"}, "placement applies to backend = \"ray\" only"),
    ({"backend": "ray", "placement": "strict"}, "placement = 'strict' is invalid"),
    ({"backend": "ray", "ray_calls": "lane"}, "ray_calls = 'lane' is invalid"),
    ({"ray_calls": "actor"}, "ray_calls applies to backend = \"ray\" only"),
    ({"backend": "ray", "worker": "snakepit", "command": ["python3", "grpc_server.py"]},
     "not worker = 'snakepit'"),
    ({"backend": "ray", "allow_pickle": True}, "allow_pickle cannot be used"),
])
def test_bad_ray_settings_are_refused_by_name(values: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        make_pool_config("p", **values)
    assert says in str(info.value)
    assert info.value.hint


def test_the_worker_flags_that_name_host_files_stay_on_the_host() -> None:
    argv = ["--adapter", "a:B", "--listen", "unix:/x.sock", "--ready-file", "/r",
            "--run-id", "abc", "--host-pid", "12", "--host-address", "unix:/h",
            "--stack-file", "/s", "--threads", "1", "--lane-socket", "/l"]
    assert worker_flags(argv) == ["--adapter", "a:B", "--run-id", "abc", "--threads", "1"]


@pytest.mark.parametrize(("text", "cause"), [
    ("The actor is dead because its node has died. Node Id: 3f", "node_lost"),
    ("Task was killed due to the node running low on memory.", "oom"),
    ("The actor died unexpectedly before finishing this task. The actor is dead because its "
     "worker process has died. ... (1) the process was killed by the OOM killer due to high "
     "memory usage ... consider ... to prevent node deaths", "actor_died"),
    ("The actor is dead because it was killed by `ray.kill`.", "killed"),
])
def test_an_actors_death_is_named_from_what_ray_says(text: str, cause: str) -> None:
    assert ray_cluster.death_cause(RuntimeError(text))[0] == cause


def test_a_ray_workers_end_is_described_with_rays_cause() -> None:
    assert crash.describe(None, "node_lost") == "is gone: its Ray node was lost"
    assert crash.describe(None, "killed") == "is gone"  # a forked worker's unknown exit


def test_without_ray_a_ray_pool_says_which_extra_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(Exception) as info:
        ray_cluster.import_ray()
    assert info.value.category == "environment"  # type: ignore[attr-defined]
    assert "pit-pools[ray]" in (info.value.hint or "")  # type: ignore[attr-defined]


def test_without_ray_a_ray_pool_fails_to_start_naming_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime import Pool

    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    with pytest.raises(Exception) as info:
        Pool(adapter="tests.adapters.sample:SampleAdapter", size=1, backend="ray").start()
    assert info.value.category == "environment"  # type: ignore[attr-defined]
    assert "pit-pools[ray]" in (info.value.hint or "")  # type: ignore[attr-defined]


def test_doctor_says_a_ray_pool_needs_the_extra_when_ray_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime import doctor

    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    pool = make_pool_config("big", backend="ray", ray_address="auto")
    check = doctor._guard("pool big: ray", lambda: doctor._ray(pool))
    assert check.status == "fail" and "pit-pools[ray]" in check.remediation


def test_the_cluster_probe_is_run_in_its_own_interpreter() -> None:
    argv = ray_cluster.probe_argv("/usr/bin/python3", "head:6379")
    assert argv[0] == "/usr/bin/python3" and argv[1] == "-c" and argv[-1] == "head:6379"
    assert "ray.init(address=sys.argv[1]" in argv[2]


def test_pit_hardware_ray_without_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from snakecli.app import app

    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    result = CliRunner().invoke(app, ["hardware", "--ray", "head:6379"],
                                env={"NO_COLOR": "1", "COLUMNS": "160"})
    assert result.exit_code != 0 and "pit-pools[ray]" in result.output


def test_a_ray_pools_requirements_are_its_actors_uv_runtime_env_not_a_local_env(
        tmp_path: Path) -> None:
    (tmp_path / "more.txt").write_text("# pinned\nsix==1.16.0  # why\n\n--index-url x\n")
    cfg = make_pool_config("p", backend="ray", requirements=["attrs>=22", "more.txt"],
                           python="3.11")
    assert not needs_env(cfg)  # Ray builds it on the nodes, pit setup does not
    assert ray_env.runtime_env(cfg, tmp_path) == {
        "uv": {"packages": ["attrs>=22", "six==1.16.0", "--index-url x"]}}
    assert ray_env.runtime_env(make_pool_config("q", backend="ray"), tmp_path) is None
    assert needs_env(make_pool_config("r", requirements=["attrs"]))  # a local pool does


@pytest.mark.parametrize(("python", "cluster", "ok"), [
    (None, "3.11", True), ("3.11", "3.11", True), ("3", "3.11", True),
    ("3.11.7", "3.11", True), ("3.12", "3.11", False), ("2", "3.11", False)])
def test_a_ray_pools_python_must_be_the_clusters(python: str | None, cluster: str,
                                                 ok: bool) -> None:
    problem = ray_env.python_problem(python, cluster)
    assert (problem is None) == ok
    if not ok:
        assert f"the cluster runs Python {cluster}" in str(problem)


def test_a_ray_pools_python_path_is_judged_by_its_version(tmp_path: Path) -> None:
    here = "{}.{}".format(*sys.version_info[:2])
    assert ray_env.python_problem(sys.executable, here) is None
    assert "is Python" in str(ray_env.python_problem(sys.executable, "2.7"))
    assert "does not run" in str(ray_env.python_problem(str(tmp_path / "nope"), here))


def test_rays_runtime_env_failure_is_recognised_and_trimmed_to_its_last_lines() -> None:
    class RuntimeEnvSetupError(Exception):  # Ray's class, by name (no Ray needed here)
        pass

    text = "\n".join(f"line {i}" for i in range(40)) + "\nNo solution found: pkg-x"
    said = ray_env.setup_error(RuntimeEnvSetupError(text))
    assert said is not None and said.endswith("No solution found: pkg-x")
    assert len(said.splitlines()) == ray_env.SETUP_ERROR_LINES
    assert ray_env.setup_error(RuntimeError("the actor died")) is None
    quoted = ("Traceback ...\n  File \"uv.py\"\nSubprocessCalledProcessError: cmd failed\n"
              "Last 50 lines of stdout:\n    error: No solution found\n      cause: pkg-x")
    assert ray_env.setup_error(RuntimeEnvSetupError(quoted)) == \
        "    error: No solution found\n      cause: pkg-x"  # uv's own words only


class _SilentActor:
    """A Ray actor handle whose ``usage`` answers only when the test answers it (an actor on
    a busy or unreachable node): ``usage.remote(uss).future()`` as Ray's."""

    def __init__(self) -> None:
        self.asked: list[concurrent.futures.Future[Any]] = []
        self.usage = self

    def remote(self, uss: bool) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.asked.append(future)
        return types.SimpleNamespace(future=lambda: future)


def test_an_actor_slow_to_report_its_usage_is_asked_once_at_a_time(tmp_path: Path) -> None:
    # Every sampling round (0.5 s) asks each Ray worker's actor for its usage; one that
    # does not answer must neither hold the round (and with it every other worker's sampling
    # and memory recycling) for long, nor be sent a new request each round to pile up
    from runtime.pool.host.instance import HostInstance
    from runtime.pool.ray_process import RayWorkerProcess

    async def main() -> None:
        process = RayWorkerProcess("worker-1", make_pool_config("p", backend="ray"),
                                   HostInstance(tmp_path))
        process._actor = actor = _SilentActor()
        for _ in range(3):  # rounds while it says nothing: not sampled, asked once
            with pytest.raises(TimeoutError):
                await process.usage(False)
        assert len(actor.asked) == 1
        actor.asked[0].set_result((120.0, 35.0, None))  # its answer, late: the next round's
        await asyncio.sleep(0.05)  # between rounds: the loop takes the answer in
        assert await process.usage(True) == (120.0, 35.0, None)
        assert len(actor.asked) == 2  # and the next round's is asked for at once
        with pytest.raises(TimeoutError):
            await process.usage(True)  # asked again (this one is not answered)
        assert len(actor.asked) == 2
        actor.asked[1].set_exception(RuntimeError("the actor died"))
        with pytest.raises(RuntimeError, match="the actor died"):
            await process.usage(True)
        with pytest.raises(TimeoutError):
            await process.usage(True)
        assert len(actor.asked) == 3

    asyncio.run(main())


class _SlowRay:
    """The ``ray`` module as `RayWorkerProcess.launch` uses it, whose actor creation waits
    for the test (Ray busy): ``ray.remote(cls).options(...).remote(...)``."""

    def __init__(self) -> None:
        self.creating, self.go = threading.Event(), threading.Event()
        self.made: list[object] = []
        self.killed: list[object] = []

    def remote(self, cls: Any) -> Any:
        return self

    def method(self, **options: Any) -> Any:  # ray.method(...)(fn): Ray marks fn
        return lambda fn: fn

    def options(self, **options: Any) -> Any:
        self.creating.set()
        self.go.wait(30)
        return types.SimpleNamespace(remote=self._make)

    def _make(self, *args: Any) -> object:
        self.made.append(object())
        return self.made[-1]

    def kill(self, actor: object, no_restart: bool = False) -> None:
        self.killed.append(actor)


def test_a_ray_worker_start_cancelled_while_its_actor_is_created_leaves_no_shm_probe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pool closes (its start task is cancelled) while Ray creates the actor in a thread:
    # the worker's stop removes its files then; a probe written later would stay in /dev/shm
    from runtime.pool import ray_process
    from runtime.pool.host.instance import HostInstance
    from runtime.protocol import shm

    if not shm.available():
        pytest.skip("no /dev/shm")
    fake = _SlowRay()
    monkeypatch.setattr(ray_cluster, "connect", lambda address: fake)

    async def main() -> Path:
        process = ray_process.RayWorkerProcess(
            "worker-1", make_pool_config("p", backend="ray"), HostInstance(tmp_path))
        starting = asyncio.ensure_future(process.launch())
        while not fake.creating.is_set():
            await asyncio.sleep(0.01)
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        process.remove_files()  # as WorkerHandle.stop does
        fake.go.set()
        for _ in range(500):  # the pool's loop runs on: the creating thread ends meanwhile
            if fake.killed:
                break
            await asyncio.sleep(0.01)
        return Path(shm.worker_prefix(process._instance.id, "p", "worker-1")
                    + shm.PROBE_SUFFIX)

    probe = asyncio.run(main())  # asyncio.run waits for the creating thread to end
    try:
        assert not probe.exists()
    finally:
        probe.unlink(missing_ok=True)
    # and the actor Ray made after the start was given up belongs to nobody: it is killed
    assert len(fake.made) == 1 and fake.killed == fake.made


def test_reachable_answers_each_time_it_is_asked_and_no_once_the_port_closed() -> None:
    """ray_calls = "auto" probes each worker's port at ready; a replacement may listen on the
    same address again (a port reused), and its answer must be its own, not an error."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        assert asyncio.run(reachable(address, 2.0))
        assert asyncio.run(reachable(address, 2.0))  # the same address, a second worker
    assert not asyncio.run(reachable(address, 2.0))  # nobody listens there any more


class _Remote:
    """One method of a stand-in Ray actor handle: `.remote(*args)` records the call."""

    def __init__(self, name: str, calls: list[tuple[str, tuple]]) -> None:
        self.name, self.calls = name, calls

    def remote(self, *args: object) -> object:
        import concurrent.futures

        self.calls.append((self.name, args))

        class Ref:  # an ObjectRef whose answer never comes
            def future(self) -> concurrent.futures.Future:
                return concurrent.futures.Future()

        return Ref()


def test_a_call_through_the_actor_cancelled_before_it_ran_is_cancelled_in_the_actor() -> None:
    """Abandoning a call (its caller cancelled) in the loop step that sent it: its RPC must
    still be cancelled in the actor, or the worker runs it in a slot the host thinks free."""
    from runtime.pool.ray_stub import RayActorStub

    calls: list[tuple[str, tuple]] = []

    class Actor:
        unary, cancel = _Remote("unary", calls), _Remote("cancel", calls)

    async def scenario() -> None:
        stub = RayActorStub(Actor())
        call = stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="t"), timeout=5.0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(scenario())
    [(_, sent)] = [c for c in calls if c[0] == "unary"]
    assert ("cancel", (sent[1],)) in calls  # the token of the call sent
