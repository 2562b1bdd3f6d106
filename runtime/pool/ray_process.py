"""A worker placed by Ray: the `WorkerProcess` of a pool with backend = "ray".

    launch  --> connect to Ray (`ray_cluster.connect`, off the loop), read the pool's tls
                files (`protocol.tls.read_pool_tls`: a certificate renewed on disk reaches
                the next worker started) --> create the actor (`ray_actor.WorkerActor`,
                max_restarts=0, named pit-<run>-<pool>-<worker>, the pool's resources) with
                pit's worker flags, the pool's secret and the worker's certificate and key
    ready   --> actor.ready(): the worker's ready JSON (TCP address, pid, tools, node)
    watch   --> actor.wait(): (exit code, output tail) once the worker exited, or Ray's
                ActorDiedError when the actor died (`ray_cluster.death_cause`: node_lost,
                oom, killed); the actor is killed then, and the owner's ``on_exit`` runs
    kill / terminate --> ray.kill(actor) / SIGTERM to the worker through the actor

Its call lane is on TCP (opened with the secret). Large payloads go through shared memory when
the worker proves it sees this host's /dev/shm (a probe file, `protocol.shm.write_probe`):
the same machine, whichever Ray node it is; inline otherwise.

The pool drives it like any worker (`worker_handle.WorkerHandle` over this and a
`WorkerChannel`): calls, streams, sessions, pings go over gRPC straight to the worker's TCP
port with the pool's secret in every RPC (`protocol.secret`), over TLS when the pool has
``tls`` (`protocol.tls`), never through Ray.

    route   --> ray_calls = "direct": that TCP port; "actor": through the actor (Ray actor
                method calls, `ray_stub` -> `ray_forward`: slower, unary calls only, no
                telemetry relay); "auto" (the default): the port when a TCP connection to it
                opens within REACH_TIMEOUT_S at ready, else through the actor

What such a worker does not get (yet): direct calls, the fork server, host tools (the host's
bridge is a local socket), stack dumps and the progress file. Its pid is the worker's pid on
its node: its memory and CPU are sampled there, by its actor (``max_memory_mb`` applies on
every node).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import WorkerStartError
from ..protocol import shm, tls
from . import crash, ray_cluster, ray_env
from .host.loop_thread import off_loop
from .ray_actor import WorkerActor
from .worker_process import WorkerProcess

if TYPE_CHECKING:
    from ..config import PoolConfig
    from .host.instance import HostInstance

# pit's worker flags that name host-local files or the host itself: the actor sets its own
HOST_LOCAL_FLAGS = frozenset({"--listen", "--ready-file", "--host-pid", "--stack-file",
                              "--progress-file", "--lane-socket", "--host-address"})
READY_EXIT_WAIT_S = 2.0  # a worker whose start failed: wait this long for its exit code
# A broken connection to a Ray worker waits this long for Ray's word on its actor before the
# host gives up on it: a killed process is reported in milliseconds, a lost node only once
# Ray's health checks fail (about 15 s with Ray's defaults).
RAY_EXIT_WAIT_S = 30.0
UNAVAILABLE_RETRY_S = 0.5  # asking again about an actor Ray calls temporarily unavailable
REACH_TIMEOUT_S = 2.0  # ray_calls = "auto": a worker's port that does not answer in this long
# is called through its actor. The actor's threads: its own methods (wait, ready, signal,
# cancel, ping) beside one per call it forwards (at most the worker's capacity).
ACTOR_OWN_THREADS = 6
STREAM_AHEAD = 16  # chunks a stream through the actor may run ahead of the host's reading
# A sampling round (every 0.5 s, all the pool's workers together) waits this long for an
# actor's report; a later one counts in a later round, and the actor is not asked again
# until it answered: a slow or unreachable node neither holds every worker's sampling nor
# piles requests up on its actor.
USAGE_WAIT_S = 0.2


def _kill_orphan(ray: Any, created: asyncio.Future[Any]) -> None:
    """An actor created for a start given up meanwhile: killed (nothing else holds it)."""
    if not created.cancelled() and created.exception() is None:
        threading.Thread(target=_kill_quietly, args=(ray, created.result()),
                         name="pit-ray-kill", daemon=True).start()  # not on the loop


def _kill_quietly(ray: Any, actor: Any) -> None:
    with contextlib.suppress(Exception):
        ray.kill(actor, no_restart=True)


def worker_flags(argv: list[str]) -> list[str]:
    """pit's worker command line (after ``python -m runtime.worker``) less HOST_LOCAL_FLAGS
    and their values."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in HOST_LOCAL_FLAGS:
            skip = True
        else:
            out.append(arg)
    return out


async def reachable(address: str, timeout: float) -> bool:
    """Does a TCP connection to ``address`` ("host:port") open within ``timeout``?"""
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), timeout)
    except (OSError, ValueError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@functools.cache
def _actor_class(ray: Any) -> Any:
    # its stream method is a Ray streaming generator, held STREAM_AHEAD chunks ahead at most
    ray.method(num_returns="streaming",
               _generator_backpressure_num_objects=STREAM_AHEAD)(WorkerActor.stream)
    return ray.remote(WorkerActor)


class RayWorkerProcess(WorkerProcess):
    """The worker behind a Ray actor (see the module docstring)."""

    def __init__(self, worker_id: str, config: PoolConfig, instance: HostInstance) -> None:
        super().__init__(worker_id, config, instance)
        self.secret = ray_cluster.pool_secret(instance.id, config.name)
        self._actor: Any = None
        self._tcp = ""
        self._lane = ""  # "tcp:HOST:PORT" of its call lane socket, once ready
        self._death: tuple[str, str] | None = None  # (cause, what) when the actor died
        self._watch: asyncio.Task[Any] | None = None
        self._ended = False
        self.via_actor = False  # its calls go through its actor (`ray_stub`), once ready
        self.exit_wait_s = RAY_EXIT_WAIT_S
        self._probe = shm.worker_prefix(instance.id, config.name, worker_id) + shm.PROBE_SUFFIX
        self._usage_asked: asyncio.Future[Any] | None = None  # its actor's report, awaited

    @property
    def address(self) -> str:
        return self._tcp

    @property
    def lane_endpoint(self) -> str:
        return self._lane

    def actor_env(self) -> dict[str, str]:
        env = dict(self.extra_env)
        env.update(self.config.worker_env())
        paths = [*self._instance.python_path, os.environ.get("PYTHONPATH", "")]
        if self.config.ray_address == "local":  # this machine: the host's own directory too
            paths.append(os.getcwd())
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        if self.config.shm_threshold_kb and shm.available():
            # a worker that finds this file shares our /dev/shm: large payloads go through
            # arenas as with a local worker (its node is this machine, or shares its memory)
            env[shm.PROBE_ENV] = shm.write_probe(self._probe)
        return env

    async def launch(self) -> None:
        config = self.config
        ray = await asyncio.to_thread(ray_cluster.connect, config.ray_address)
        worker_tls = None
        if config.tls:
            worker_tls, self.tls = await asyncio.to_thread(
                tls.read_pool_tls, config.tls, f"pool {config.name!r}")
        problem = await asyncio.to_thread(ray_env.python_problem, config.python,
                                          ray_env.cluster_python())
        if problem:
            raise WorkerStartError(f"pool {config.name!r}: {problem}",
                                   details={"pool": config.name, "python": config.python},
                                   hint="remove python (the cluster's is used), or run the "
                                        "cluster and this host on that Python")
        base = self._instance.config_path.parent if self._instance.config_path else \
            Path.cwd()
        listen_host = "127.0.0.1" if config.ray_address == "local" else None
        name = ray_cluster.actor_name(self._instance.id, config.name, self.id)
        options = ray_cluster.actor_options(dict(config.resources))
        runtime_env = await asyncio.to_thread(ray_env.runtime_env, config, base)
        if runtime_env:
            options["runtime_env"] = runtime_env
        if config.placement:
            group = await asyncio.to_thread(
                ray_cluster.placement_group, self._instance.id, config.name, config.size,
                dict(config.resources), config.placement)
            options["scheduling_strategy"] = ray_cluster.scheduling(group)
        flags = worker_flags(self.argv()[3:])
        # Here, not in the thread: a start cancelled (the pool closed) while Ray creates the
        # actor goes on to remove the worker's files while the thread runs on, and a shm
        # probe written after that would stay in /dev/shm.
        env = self.actor_env()

        def create() -> Any:
            cls = _actor_class(ray).options(
                name=name, namespace=ray_cluster.NAMESPACE, max_restarts=0,
                max_concurrency=ACTOR_OWN_THREADS + config.capacity, **options)
            return cls.remote(flags, env, self.secret, listen_host,
                              config.call_lane and config.lane_socket,
                              None if worker_tls is None else worker_tls.env(),
                              config.max_message_bytes,
                              None if self.tls is None else (self.tls.ca,
                                                             self.tls.server_name))

        creating = asyncio.ensure_future(asyncio.to_thread(create))
        try:
            self._actor = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # the start was given up (the pool closes) while Ray creates the actor: the
            # thread goes on, and the actor it makes belongs to nobody: kill it once it exists
            creating.add_done_callback(functools.partial(_kill_orphan, ray))
            raise
        except Exception as exc:  # noqa: BLE001 - Ray refused the actor (bad resources...)
            raise WorkerStartError(
                f"pool {config.name!r}: Ray could not create worker {self.id}'s actor: {exc}",
                details={"pool": config.name, "worker": self.id},
                hint="check the pool's resources against the cluster's (ray status)") from None

    def watch(self, on_exit: Callable[[int | None], Awaitable[None]]) -> None:
        self._watch = asyncio.get_running_loop().create_task(self._watch_actor(on_exit))
        self._tasks.append(self._watch)

    async def _watch_actor(self, on_exit: Callable[[int | None], Awaitable[None]]) -> None:
        try:
            while True:
                try:
                    code, tail = await asyncio.wrap_future(self._actor.wait.remote().future())
                    break
                except Exception as exc:  # noqa: BLE001 - Ray's errors, sorted below
                    # "temporarily unavailable" (its connection broke: a lost node, a
                    # network blip) is not Ray's verdict yet: ask again until it gives one
                    if type(exc).__name__ != "ActorUnavailableError":
                        raise
                    await asyncio.sleep(UNAVAILABLE_RETRY_S)
            self.exit_code = code
            self.output.extend(tail.splitlines())
        except Exception as exc:  # noqa: BLE001 - the actor died (RayActorError and kin)
            self._death = ray_cluster.death_cause(exc)
            # Ray's words (less its indented actor id, pid, name ... lines): in the crash tail
            said = [line for line in str(exc).splitlines() if line and not line[0].isspace()]
            self.output.extend(said[:4] or [type(exc).__name__])
        self._ended = True
        await off_loop(self._kill_actor)  # ray.kill waits for Ray's control server
        await on_exit(self.exit_code)

    async def wait_ready_file(self, deadline: float, exited: Callable[[], bool]) -> bool:
        loop = asyncio.get_running_loop()
        timeout = max(deadline - loop.time(), 0.01)
        ready = asyncio.wrap_future(self._actor.ready.remote(timeout).future())
        # its answer may come after the start was given up (pool closed): not an error then
        ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        done, _ = await asyncio.wait({ready}, timeout=timeout + 1.0)
        if ready in done and ready.exception() is None:
            self.ready_info = dict(ready.result())
            await self._choose_route()
            return True
        failed = ready.exception() if ready in done else None
        if failed is not None and (said := ray_env.setup_error(failed)) is not None:
            self.kill()
            raise WorkerStartError(
                f"pool {self.config.name!r}: worker {self.id} could not start: Ray failed to "
                f"build its actor's runtime_env from the pool's requirements:\n{said}",
                details={"pool": self.config.name, "worker": self.id,
                         "requirements": self.config.requirements},
                hint="check the requirements (names, versions, the index); the cluster's "
                     "Python needs " + " and ".join(ray_env.CLUSTER_PACKAGES) +
                     ": pip install 'pit-pools[ray]'")
        if ready in done:  # it exited before it was ready: its exit names why
            assert self._watch is not None
            await asyncio.wait({self._watch}, timeout=READY_EXIT_WAIT_S)
        else:
            ready.cancel()
        return False

    async def _choose_route(self) -> None:
        """Direct or through the actor (``ray_calls``, the module docstring)."""
        mode, address = self.config.ray_calls, self.ready_info.get("address")
        if mode == "actor" or not isinstance(address, str):
            self.via_actor = mode == "actor"
            return
        if await reachable(address, REACH_TIMEOUT_S):
            return
        if mode == "direct":
            self.kill()
            err = self.start_error(f"is not reachable at {address} (no TCP connection within "
                                   f"{REACH_TIMEOUT_S:g} s) and ray_calls = \"direct\"")
            err.hint = ("let the host reach the cluster's nodes on TCP, or set ray_calls = "
                        "\"auto\" to call such a worker through its Ray actor (slower)")
            raise err
        self.via_actor = True

    def call_stub(self) -> tuple[Any, str] | None:
        if not self.via_actor:
            return None
        from .ray_stub import ROUTE, RayActorStub

        return RayActorStub(self._actor), ROUTE

    def read_ready(self) -> None:
        self.remove_files()  # the worker read its shared-memory probe before it was ready
        info = self.ready_info
        address = info.get("address")
        if not isinstance(address, str) or address.startswith("unix:"):
            self.kill()
            raise self.start_error(f"announced no TCP address (ready JSON: {info!r})")
        self._tcp = address
        lane = info.get("lane_socket")
        self._lane = lane if isinstance(lane, str) and lane.startswith("tcp:") and \
            not self.via_actor else ""
        # direct calls (a lent worker) connect to a unix socket: not a Ray worker's, yet
        info["features"] = [f for f in info.get("features", ()) if f != "lane_connections"]
        self.pid = info.get("pid")
        self.node = f"{info.get('node_ip', '?')} {str(info.get('node_id', ''))[:12]}"

    def classify(self, *, hung: bool, forced: str) -> str:
        if forced or hung or self._death is None:
            self.cause = crash.classify(self.exit_code, self.output_tail(), hung=hung,
                                        forced=forced)
        else:
            self.cause = self._death[0]
        return self.cause

    def start_error(self, what: str) -> WorkerStartError:
        err = super().start_error(what)
        err.hint = ("check that the adapter imports on the cluster's nodes and that the "
                    "pool's resources can be met (ray status)")
        return err

    def progress(self) -> tuple[int, int] | None:
        return None

    async def usage(self, uss: bool) -> tuple[float, float, float | None] | None:
        """Sampled by its actor on its node (a pid of this machine's may be another
        process, and one in a container is not ours to read): ``max_memory_mb`` and `pit
        status` work for workers on every node. Raises when the actor has not answered
        within USAGE_WAIT_S (its answer then counts in a later round) or failed to."""
        if not self.running:
            raise RuntimeError("its actor is gone")
        late = self._usage_asked
        if late is None or late.done():
            asked = asyncio.wrap_future(self._actor.usage.remote(uss).future())
            asked.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
            self._usage_asked = asked
            if late is not None:  # answered after its round stopped waiting: this round's
                return tuple(late.result())  # type: ignore[return-value]
        else:
            asked = late  # still out: not asked again
        done, _ = await asyncio.wait({asked}, timeout=USAGE_WAIT_S)
        if not done:
            raise TimeoutError(f"its actor has not reported within {USAGE_WAIT_S:g} s")
        self._usage_asked = None
        return tuple(asked.result())  # type: ignore[return-value]

    async def dump_stacks(self, dest_dir: Path) -> Path | None:
        return None

    @property
    def running(self) -> bool:
        return self._actor is not None and not self._ended

    def terminate(self) -> None:
        if self.running:
            self._actor.signal.remote(int(signal.SIGTERM))

    def kill(self) -> None:
        if self.running:
            self._kill_actor()

    def _kill_actor(self) -> None:
        if self._actor is not None:
            import ray

            with contextlib.suppress(Exception):
                ray.kill(self._actor, no_restart=True)

    def remove_files(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._probe)
