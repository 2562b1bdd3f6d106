"""pit against the pools people would otherwise pick, measured in one run on this machine.

Usage: python scripts/bench.py [--sizes 2 4] [--reps 3] [--systems ...] [--json] [--quick]

Systems: pit (blocking `Pool` API), pit-loop (the same with `direct_calls = false`: every call
through the pool's loop thread), pit-unary (`call_lane = false`: one unary RPC per call, as
Snakepit does), pit-ray (a pool with backend = "ray": pit's workers in Ray actors on a local
two-node Ray cluster, called over TCP; beside "ray", Ray's own actors on the same cluster; both
systems' workers on the head node, the driver's, except in the startup rows), pit-snakepit
(Snakepit 0.13's own Python bridge and showcase adapter as the pool's workers, worker =
"snakepit": serial and 64-in-flight rows only; needs ../shared/snakepit-bridge, its env is built
with uv), pit-executor (`runtime.PoolExecutor`, the same functions as the stdlib peers, pickled;
its ratios to ProcessPoolExecutor and loky are columns of their own), ProcessPoolExecutor,
multiprocessing.Pool, loky, pebble, and Ray actors when `ray` is importable (skipped otherwise).
Rows, for each pool size: a no-op call one at a time with each API's blocking call (p50/p99),
no-op calls with 64 in flight, a map over 20,000 tiny items (each API's own map), 1 MiB and 16
MiB bytes round trips, 400 x 10 ms CPU-bound tasks (efficiency = ideal time / elapsed), a stream
of 50,000 small dicts taken as they come (pit's `stream`, Ray's streaming generator; the others
have no streams), a 100k-element float64 array and a 1M-row, 4-column Arrow table sent to an
identity function and back (pit: raw arrays and Arrow IPC; the others: their own serialization),
time until 2, 8 and 32 workers answer (from creating the pool, or for the Ray systems from their
two-node cluster being up, the workers spread by Ray's default policy; the library's import is a
row of its own), a pool of 2's first answer (from creating it), `pit run` of a one-call script
beside a ProcessPoolExecutor script doing the same (wall and CPU of fresh processes, 10 turns)
and the USS of an idle worker. Every measurement runs in a fresh subprocess (a fork-based pool
must not fork a process that already runs gRPC threads); each row is the median of --reps runs,
the systems taking turns run by run. pit is also measured with a `pit status --watch` process
attached at 4 Hz (throughput ratio).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import bench_cli  # scripts/, beside this file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MIB = 1024 * 1024
SYSTEMS = ["pit", "pit-loop", "pit-unary", "pit-snakepit", "pit-executor", "pit-ray", "ppe", "mp",
           "loky", "pebble", "ray"]
LABELS = {"pit": "pit", "pit-loop": "pit loop", "pit-unary": "pit unary",
          "pit-snakepit": "Snakepit br", "pit-executor": "pit exec", "pit-ray": "pit on Ray",
          "ppe": "ProcessPool",
          "mp": "mp.Pool", "loky": "loky", "pebble": "pebble", "ray": "Ray actors"}
PEER_MODULE = {"loky": "loky", "pebble": "pebble", "ray": "ray", "pit-ray": "ray"}
# pit on Ray against Ray's own actors (issue 19's targets): row, what pit-on-Ray / Ray must be
RAY_TARGETS = (("p50_us", "<= 0.5"), ("calls_per_s", ">= 2"), ("mb16_per_s", ">= 1"),
               ("ready8_ms", "<= 1.5"))
STARTUP_KEYS = ("uss_mb", "import_ms", "first_ms", "run_one_ms", "run_one_cpu_ms")
EXECUTOR_PEERS = ("ppe", "loky")  # pit-executor's own ratio columns


def pit_pool(system: str) -> bool:
    """A system driven through pit's tool API (pit-executor is driven as the stdlib's)."""
    return system.startswith("pit") and system != "pit-executor"


def _named(fn: str) -> Any:
    """A work function by name; for pit-executor from this module imported by name, so it
    pickles by reference as a user's module function does (this file runs as __main__)."""
    if __name__ == "__main__" and importlib.util.find_spec("scripts.bench") is not None:
        return getattr(importlib.import_module("scripts.bench"), fn)
    return globals()[fn]


# How much each row runs: a full run, and --quick (a smoke run). The labels say which.
COUNTS = {"serial": 2000, "inflight": 10_000, "map": 20_000, "mb1": 60, "mb16": 12, "cpu": 400,
          "stream": 50_000, "array": 60, "arrow": 6, "watched_s": 1.5, "marker": 2000}
QUICK_COUNTS = {"serial": 300, "inflight": 2000, "map": 5000, "mb1": 20, "mb16": 4, "cpu": 100,
                "stream": 10_000, "array": 20, "arrow": 2, "watched_s": 0.5, "marker": 300}
ROWS = [  # key, label (formatted with the run's counts), unit, higher is better
    ("p50_us", "no-op serial p50 of {serial}", "µs", False),
    ("p99_us", "no-op serial p99 of {serial}", "µs", False),
    ("calls_per_s", "{inflight} no-ops, 64 in flight", "/s", True),
    ("map_per_s", "map, {map} tiny items", "/s", True),
    ("mb1_per_s", "1 MiB round trip x{mb1}", "MB/s", True),
    ("mb16_per_s", "16 MiB round trip x{mb16}", "MB/s", True),
    ("cpu_efficiency", "{cpu} x 10 ms CPU tasks", "eff", True),
    ("stream_per_s", "stream of {stream} small items", "/s", True),
    ("array_mb_s", "100k float64 array x{array}", "MB/s", True),
    ("arrow_mb_s", "1M x 4 Arrow table x{arrow}", "MB/s", True),
    ("ready2_ms", "2 workers answer", "ms", False),
    ("ready8_ms", "8 workers answer", "ms", False),
    ("ready32_ms", "32 workers answer", "ms", False),
    ("first_ms", "first call after Pool()", "ms", False),
    ("run_one_ms", "`pit run` one call, wall", "ms", False),
    ("run_one_cpu_ms", "`pit run` one call, CPU", "ms", False),
    ("uss_mb", "USS per idle worker", "MiB", False),
    ("import_ms", "import the library", "ms", False),
]


# --- the work, for the stdlib/peer side (pit runs the showcase adapter's tools) --------------
def noop() -> dict[str, Any]:
    return {"pong": True, "pid": os.getpid()}


def add(a: int, b: int) -> int:
    return a + b


def add_args(d: dict[str, int]) -> int:
    return d["a"] + d["b"]


def echo_bytes(data: bytes) -> bytes:
    return data


def burn(ms: float) -> int:
    end = time.perf_counter() + ms / 1000
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def ident(value: Any) -> Any:
    return value


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


# --- one system, one process --------------------------------------------------------------
class Driver:
    """call(fn_name, **kw) -> result; submit(...) -> future-like with .result(); map(...)."""

    def __init__(self, system: str, size: int, spread: bool = False) -> None:
        self.system, self.size = system, size
        self.pool: Any = None
        # Ray: actors on the head node (the driver's: calls and payloads are same-node for
        # both systems), or, spread, wherever Ray's default policy puts them on either node
        self.spread = spread
        self.started = 0.0  # perf_counter once a Ray cluster is up (startup rows time from it)

    def __enter__(self) -> Driver:
        s, n = self.system, self.size
        if s in ("ray", "pit-ray"):
            # one machine: Ray on 127.0.0.1 only (read when ray is imported; this process's)
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        if s == "pit-ray":
            from runtime import Pool

            self.cluster = _ray_cluster(n)
            self.started = time.perf_counter()
            custom = {} if self.spread else {"custom": {"head_node": 1}}
            self.pool = Pool(size=n, call_timeout_ms=120_000, max_message_mb=64,
                             backend="ray", ray_address="auto",
                             resources={"num_cpus": 1, **custom},
                             startup_timeout_ms=300_000).start()
        elif s == "pit-snakepit":
            from runtime import Pool
            from tests import bridge

            python, why = bridge.bridge_python()
            if python is None:
                raise SystemExit(why)
            self.pool = Pool(size=n, call_timeout_ms=120_000, worker="snakepit",
                             command=bridge.command(python), adapter=bridge.SHOWCASE).start()
        elif s == "pit-executor":
            from runtime import PoolExecutor

            self.pool = PoolExecutor(n, max_message_mb=64)
            self.fns = {name: _named(name) for name in ("noop", "add", "add_args",
                                                        "echo_bytes", "burn", "pid_after",
                                                        "ident")}
        elif s.startswith("pit"):
            from runtime import Pool

            self.pool = Pool(size=n, call_timeout_ms=120_000, call_lane=(s != "pit-unary"),
                             direct_calls=(s == "pit"), max_message_mb=64).start()
        elif s == "ppe":
            import concurrent.futures

            self.pool = concurrent.futures.ProcessPoolExecutor(n)
        elif s == "mp":
            import multiprocessing

            self.pool = multiprocessing.Pool(n)
        elif s == "loky":
            import loky  # type: ignore[import-not-found]

            self.pool = loky.get_reusable_executor(max_workers=n, reuse=False)
        elif s == "pebble":
            import pebble  # type: ignore[import-not-found]

            self.pool = pebble.ProcessPool(max_workers=n)
        elif s == "ray":
            import ray  # type: ignore[import-not-found]

            self.cluster = _ray_cluster(n)
            self.started = time.perf_counter()

            funcs = {f.__name__: f for f in (noop, add, add_args, echo_bytes, burn, pid_after,
                                             ident)}

            @ray.remote
            class Actor:  # shipped by value: it must carry the functions it runs
                def run(self, fn: str, *args: Any) -> Any:
                    return funcs[fn](*args)

                def count(self, n: int) -> Any:  # a streaming generator, as stream_count
                    for i in range(1, n + 1):
                        yield {"i": i}

            head = {} if self.spread else {"resources": {"head_node": 1}}
            self.actors = [Actor.options(num_cpus=1, **head).remote()  # type: ignore
                           for _ in range(n)]
            self._next = 0
        return self

    def __exit__(self, *exc: object) -> None:
        s = self.system
        if pit_pool(s):
            self.pool.close()
            if s == "pit-ray":
                _ray_stop(self.cluster)
        elif s == "mp":
            self.pool.terminate()
        elif s == "pebble":
            self.pool.stop()
            self.pool.join()
        elif s == "ray":
            _ray_stop(self.cluster)
        else:
            self.pool.shutdown()

    TOOLS = {"noop": ("ping", lambda: {}), "add": ("add", lambda a, b: {"a": a, "b": b}),
             "ident": ("identity", lambda value: {"value": value}),
             "echo_bytes": ("bytes_echo", lambda data: {"data": data}),
             "burn": ("cpu_burn", lambda ms: {"ms": ms}),
             "pid_after": ("sleep", lambda s: {"ms": s * 1000})}

    def submit(self, fn: str, *args: Any) -> Any:
        s = self.system
        if pit_pool(s):
            tool, make = self.TOOLS[fn]
            return self.pool.submit(tool, make(*args))
        if s == "pit-executor":
            return self.pool.submit(self.fns[fn], *args)
        if s == "mp":
            return _MpFuture(self.pool.apply_async(globals()[fn], args))
        if s == "pebble":
            return self.pool.schedule(globals()[fn], args=args)
        if s == "ray":
            actor = self.actors[self._next % len(self.actors)]
            self._next += 1
            return _RayFuture(actor.run.remote(fn, *args))
        return self.pool.submit(globals()[fn], *args)

    def call(self, fn: str, *args: Any) -> Any:
        """One call with the API's own blocking call."""
        if pit_pool(self.system):
            tool, make = self.TOOLS[fn]
            return self.pool.execute(tool, make(*args))
        if self.system == "mp":
            return self.pool.apply(globals()[fn], args)
        return self.submit(fn, *args).result()

    def map_add(self, n: int) -> list[Any]:
        s = self.system
        items = [{"a": i, "b": 1} for i in range(n)]
        if pit_pool(s):
            return list(self.pool.map("add", items))
        if s == "pit-executor":
            return list(self.pool.map(self.fns["add_args"], items))
        if s == "mp":
            return list(self.pool.imap(add_args, items))
        if s == "pebble":
            return list(self.pool.map(add_args, items).result())
        if s == "ray":
            return [f.result() for f in [self.submit("add", i, 1) for i in range(n)]]
        return list(self.pool.map(add_args, items))


    def stream_count(self, n: int) -> int:
        """Items of a generator yielding n small dicts, as they arrive (pit's stream, Ray's
        streaming generator); -1 where the API has no streams."""
        if pit_pool(self.system):
            return sum(1 for _ in self.pool.stream("stream_count", {"n": n}))
        if self.system == "ray":
            import ray

            gen = self.actors[0].count.options(num_returns="streaming").remote(n)
            return sum(1 for ref in gen if ray.get(ref))
        return -1


def _ray_cluster(n: int) -> Any:
    """A local two-node Ray cluster on this machine, as `ray start --head` plus a second
    `ray start --address` would make (loopback only, no dashboard): the head, where this driver
    runs, and a second node, each with ``n`` CPUs and a resource of its own (``head_node``,
    ``second_node``), so a system's actors can be kept on the head (see `Driver`)."""
    import ray
    from ray.cluster_utils import Cluster  # type: ignore[import-not-found]

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": n, "include_dashboard": False,
                                      "resources": {"head_node": n}})
    cluster.add_node(num_cpus=n, resources={"second_node": n})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster


def _ray_stop(cluster: Any) -> None:
    import ray

    ray.shutdown()
    cluster.shutdown()


class _MpFuture:
    def __init__(self, res: Any) -> None:
        self.res = res

    def result(self) -> Any:
        return self.res.get()


class _RayFuture:
    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def result(self) -> Any:
        import ray

        return ray.get(self.ref)


def _array() -> Any:
    import numpy as np

    return np.random.default_rng(0).random(100_000)  # 800 KB: under pit's shm threshold


def _table() -> Any:
    """A 1M-row, 4-column float64 Arrow table (32 MB); None without pyarrow."""
    try:
        import numpy as np
        import pyarrow as pa
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    return pa.table({c: rng.random(1_000_000) for c in "abcd"})


def _round_trips(d: Driver, value: Any, n: int) -> float:
    """MB/s of ``value`` sent to the identity function and back (each API's own way: pit's
    raw arrays / Arrow IPC, the others' pickling)."""
    back = d.call("ident", value)
    assert type(back) is type(value) and back.shape == value.shape, type(back)  # not a list
    t = time.perf_counter()
    for _ in range(n):
        d.call("ident", value)
    return 2 * n * value.nbytes / (time.perf_counter() - t) / 1e6


def _marker_ratio(d: Driver, n: int) -> float:
    """p50 of a call whose result holds one value JSON cannot (it comes back as a marker)
    over p50 of the same result with a JSON value in its place, alternating blocks of 100."""
    plain: list[float] = []
    marked: list[float] = []
    for i in range(2 * n // 100):
        opaque, into = (False, plain) if i % 2 == 0 else (True, marked)
        for _ in range(100):
            t = time.perf_counter()
            d.pool.execute("with_opaque", {"opaque": opaque})
            into.append(time.perf_counter() - t)
    return statistics.median(marked) / statistics.median(plain)


def _inflight(d: Driver, n: int, depth: int = 64) -> float:
    import collections

    pending: collections.deque[Any] = collections.deque()
    started = time.perf_counter()
    for _ in range(n):
        if len(pending) >= depth:
            pending.popleft().result()
        pending.append(d.submit("noop"))
    for f in pending:
        f.result()
    return n / (time.perf_counter() - started)


def measure(system: str, size: int, quick: bool) -> dict[str, float]:
    c = QUICK_COUNTS if quick else COUNTS
    n_serial, n_tp, n_map, n_1, n_16 = (int(c[k]) for k in ("serial", "inflight", "map",
                                                             "mb1", "mb16"))
    n_cpu = int(c["cpu"])
    out: dict[str, float] = {}
    with Driver(system, size) as d:
        for _ in range(200):
            d.call("noop")
        samples = []
        for _ in range(n_serial):
            t = time.perf_counter()
            d.call("noop")
            samples.append(time.perf_counter() - t)
        samples.sort()
        out["p50_us"] = statistics.median(samples) * 1e6
        out["p99_us"] = samples[int(len(samples) * 0.99)] * 1e6
        out["calls_per_s"] = _inflight(d, n_tp)
        if system == "pit-snakepit":  # the showcase has no bytes or CPU tools of pit's
            return out
        d.map_add(1000)
        t = time.perf_counter()
        assert d.map_add(n_map)[-1] == n_map
        out["map_per_s"] = n_map / (time.perf_counter() - t)
        for key, mib, n in (("mb1_per_s", 1, n_1), ("mb16_per_s", 16, n_16)):
            payload = os.urandom(mib * MIB)
            assert d.call("echo_bytes", payload) == payload
            t = time.perf_counter()
            for _ in range(n):
                d.call("echo_bytes", payload)
            out[key] = n * mib * MIB / (time.perf_counter() - t) / 1e6
        t = time.perf_counter()
        for f in [d.submit("burn", 10.0) for _ in range(n_cpu)]:
            f.result()
        out["cpu_efficiency"] = (n_cpu * 0.010 / size) / (time.perf_counter() - t)
        n_items = int(c["stream"])
        if d.stream_count(100) == 100:  # a system with streams
            t = time.perf_counter()
            assert d.stream_count(n_items) == n_items
            out["stream_per_s"] = n_items / (time.perf_counter() - t)
        out["array_mb_s"] = _round_trips(d, _array(), int(c["array"]))
        table = _table()
        if table is not None:
            out["arrow_mb_s"] = _round_trips(d, table, int(c["arrow"]))
        if system == "pit":
            out["watched_ratio"] = _watched_ratio(d, seconds=c["watched_s"])
            out["marker_ratio"] = _marker_ratio(d, int(c["marker"]))
    return out


# pit: what `from runtime import Pool` loads (runtime.pool.api, which starts the fork server
# before importing the rest, as a user's first `runtime.Pool` does)
MODULES = {"pit": "runtime.pool.api", "pit-executor": "runtime.pool.executor",
           "ppe": "concurrent.futures", "mp": "multiprocessing",
           "loky": "loky", "pebble": "pebble", "ray": "ray", "pit-ray": "runtime.pool.sync_pool"}


def measure_startup(system: str, workers: int) -> dict[str, float]:
    """Milliseconds until ``workers`` workers each answered a call (from creating the pool;
    importing the library is timed on its own), and their mean USS."""
    import psutil

    t = time.perf_counter()
    importlib.import_module(MODULES[system])
    import_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    with Driver(system, workers, spread=True) as d:
        t = d.started or t  # Ray: from the cluster being up (its start is no system's)
        if system.startswith("pit"):
            ms = (time.perf_counter() - t) * 1000  # Pool.start returns once all are ready
            pids = (d.pool.pool if system == "pit-executor" else d.pool).pids()
        else:
            # every worker must be up: `workers` overlapping calls that each wait 50 ms
            pids = [f.result() for f in [d.submit("pid_after", 0.05)
                                         for _ in range(workers)]]
            ms = (time.perf_counter() - t) * 1000 - 50
        time.sleep(0.5)
        uss = []
        for pid in set(pids):
            try:
                uss.append(psutil.Process(pid).memory_full_info().uss / MIB)
            except psutil.Error:
                pass
    return {"ready_ms": ms, "uss_mb": statistics.mean(uss) if uss else float("nan"),
            "import_ms": import_ms}


def measure_first(system: str) -> dict[str, float]:
    """Milliseconds from creating a pool of 2 to its first answer (pit: ``Pool(...)`` with
    its start, then ``execute``; the others ``submit(...).result()``), the import before it
    timed on its own."""
    t = time.perf_counter()
    importlib.import_module(MODULES[system])
    import_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    with Driver(system, 2) as d:
        d.call("noop")
        ms = (time.perf_counter() - t) * 1000
    return {"first_ms": ms, "import_ms": import_ms}


# One call from a fresh process: `pit run` of a script, and the same with ProcessPoolExecutor.
RUN_ONE = {
    "pit": "import runtime\n\nruntime.execute('ping')\n",
    "ppe": "import concurrent.futures\nimport os\n\n\ndef ping():\n    return {'pid': os.getpid()}"
           "\n\n\nif __name__ == '__main__':\n    with concurrent.futures.ProcessPoolExecutor(2)"
           " as ex:\n        ex.submit(ping).result()\n",
}


def time_run_one(system: str, workdir: Path) -> dict[str, float]:
    """Wall and CPU (user + sys of the process and every child it waited for) milliseconds
    of one fresh process running RUN_ONE[system] to its end."""
    import resource

    script = workdir / f"one_{system}.py"
    script.write_text(RUN_ONE[system])
    cmd = [sys.executable, "-m", "snakecli", "run", str(script)] if system == "pit" \
        else [sys.executable, str(script)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = (time.perf_counter() - t) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return {"run_one_ms": wall, "run_one_cpu_ms": cpu}


def _watched_ratio(d: Driver, reps: int = 3, seconds: float = 1.5) -> float:
    """Throughput with `pit status --watch --json` attached at 4 Hz over throughput without
    it (alternating runs of ``seconds`` each, median of each). The watcher's own start-up
    (imports) is over before its run is timed."""
    instance = d.pool._core.instance.id

    def throughput() -> float:
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            _inflight(d, 2000)
            calls += 2000
        return calls / (time.perf_counter() - started)

    plain, watched = [], []
    for _ in range(reps):
        plain.append(throughput())
        watcher = subprocess.Popen(
            [sys.executable, "-m", "snakecli", "status", "--watch", "--json", "--interval",
             "0.25", "--instance", instance], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            assert watcher.stdout is not None
            watcher.stdout.readline()  # attached and streaming
            threading.Thread(target=watcher.stdout.read, daemon=True).start()  # never blocks
            time.sleep(0.3)
            watched.append(throughput())
        finally:
            watcher.terminate()
            watcher.wait()
    return statistics.median(watched) / statistics.median(plain)


# --- the run --------------------------------------------------------------------------------
def _settle(limit_s: float = 15.0) -> None:
    """Wait until the machine is quiet: what a run leaves behind (Ray's daemons take seconds
    to die after ray.shutdown()) must not slow the next system down."""
    import psutil

    end = time.monotonic() + limit_s
    while psutil.cpu_percent(interval=0.3) > 15 and time.monotonic() < end:
        pass


def _inner(args: list[str], quick: bool) -> dict[str, float]:
    _settle()
    cmd = [sys.executable, __file__, "--inner", *args] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise SystemExit(f"benchmark {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def available(system: str) -> bool:
    if system == "pit-snakepit":
        from tests import bridge

        return bridge.bridge_python()[0] is not None
    module = PEER_MODULE.get(system)
    return module is None or importlib.util.find_spec(module) is not None


def run(sizes: list[int], systems: list[str], reps: int, quick: bool) -> dict[str, Any]:
    results: dict[str, dict[str, dict[str, float]]] = {}
    for size in sizes:
        # Repetitions take turns across systems, so that a slow spell of this machine (they
        # last minutes on a shared VM, and move every row by ±30 %) hits all of them alike.
        runs: dict[str, list[dict[str, float]]] = {system: [] for system in systems}
        for rep in range(reps):
            for system in systems:
                runs[system].append(_inner(["run", system, str(size)], quick))
            print(f"  measured size {size}, round {rep + 1} of {reps}", file=sys.stderr)
        for system in systems:
            results.setdefault(str(size), {})[system] = _median(runs[system])
    startup: dict[str, dict[str, float]] = {}
    for system in systems:
        if system in ("pit-unary", "pit-loop", "pit-snakepit", "pit-executor"):
            continue  # pit's own process, measured as pit; the bridge's is not measured
        row: dict[str, float] = {}
        for n in ((2, 8) if quick else (2, 8, 32)):
            r = _median([_inner(["startup", system, str(n)], quick) for _ in range(reps)])
            row[f"ready{n}_ms"] = r["ready_ms"]
            row["uss_mb"] = r["uss_mb"]
            row["import_ms"] = r["import_ms"]
        startup[system] = row
        print(f"  measured {system} startup", file=sys.stderr)
    # Short fresh processes, so more of them, taking turns system by system.
    turns = 3 if quick else max(reps, 10)
    firsts: dict[str, list[dict[str, float]]] = {s: [] for s in startup}
    for _ in range(turns):
        for system in firsts:
            if system not in ("ray", "pit-ray"):
                firsts[system].append(_inner(["first", system, "2"], quick))
    ones: dict[str, list[dict[str, float]]] = {s: [] for s in RUN_ONE if s in systems}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(turns):
            for system in ones:
                _settle()
                ones[system].append(time_run_one(system, Path(tmp)))
    for system, runs in [*firsts.items(), *ones.items()]:
        if runs:
            median = _median(runs)
            median.pop("import_ms", None)
            startup[system].update(median)
    print("  measured first calls and `pit run`", file=sys.stderr)
    return {"results": results, "startup": startup}


def _fmt(value: float | None, unit: str) -> str:
    if value is None or value != value:
        return "-"
    if unit == "eff":
        return f"{value:.2f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def row_label(label: str, quick: bool) -> str:
    """A row's label with the counts of the run it shows: 5k, not the full run's 20k."""
    counts = QUICK_COUNTS if quick else COUNTS
    return label.format(**{k: f"{v // 1000}k" if isinstance(v, int) and v >= 1000 and
                           v % 1000 == 0 else f"{v:g}" for k, v in counts.items()})


def print_table(data: dict[str, Any], systems: list[str]) -> None:
    quick = bool(data["machine"].get("quick"))
    peers = [s for s in systems if not s.startswith("pit")]
    pairs = [("pit", p) for p in peers] + [
        ("pit-executor", p) for p in EXECUTOR_PEERS if p in systems and "pit-executor" in systems]
    head = f"{'size':>4}  {'metric':<28} {'unit':>5}" + "".join(
        f"{LABELS[s]:>12}" for s in systems) + "".join(
        f"{LABELS[a] + '/' + LABELS[b]:>22}" for a, b in pairs)
    print(head)
    sizes = list(data["results"])
    for size in sizes + ["any"]:
        for key, label, unit, _ in ROWS:
            startup_row = key.startswith("ready") or key in STARTUP_KEYS
            if startup_row != (size == "any"):
                continue
            src = data["startup"] if startup_row else data["results"][size]
            vals = {s: src.get(s, {}).get(key) for s in systems}
            if all(v is None for v in vals.values()):
                continue
            cells = "".join(f"{_fmt(vals[s], unit):>12}" for s in systems)
            ratios = "".join(
                f"{vals[a] / vals[b]:>21.2f}x" if vals.get(a) and vals.get(b) else f"{'-':>22}"
                for a, b in pairs)
            print(f"{size:>4}  {row_label(label, quick):<28} {unit:>5}{cells}{ratios}")
    if "pit-ray" in systems and "ray" in systems:
        print("pit on Ray / Ray actors (target):")
        for key, target in RAY_TARGETS:
            for size in [*sizes, "any"]:
                src = data["startup"] if key.startswith("ready") else data["results"].get(
                    size, {})
                if (size == "any") != key.startswith("ready"):
                    continue
                ours, theirs = src.get("pit-ray", {}).get(key), src.get("ray", {}).get(key)
                if ours and theirs:
                    print(f"  size {size}: {key} {ours / theirs:.2f}x ({target})")
    for size, by_system in data["results"].items():
        ratio = by_system.get("pit", {}).get("watched_ratio")
        if ratio:
            print(f"size {size}: 64 in flight with `pit status --watch` attached at 4 Hz: "
                  f"{ratio:.2f}x the throughput without it")
        marker = by_system.get("pit", {}).get("marker_ratio")
        if marker:
            print(f"size {size}: a result with one field JSON cannot hold (a marker comes "
                  f"back) costs {marker:.2f}x a plain one (serial p50 of "
                  f"{row_label('{marker}', quick)} calls)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--reps", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--systems", nargs="+", default=SYSTEMS, choices=SYSTEMS)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true",
                        help="fewer iterations, one run per row (smoke run)")
    parser.add_argument("--cli", type=int, default=20, metavar="N",
                        help="fresh processes per command-line row (scripts/bench_cli.py; "
                             "median); 0: no such rows")
    parser.add_argument("--cli-only", action="store_true",
                        help="only the command-line rows (import runtime, pit --help, ...)")
    parser.add_argument("--inner", nargs=3, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.inner:
        kind, system, n = ns.inner
        result = (measure(system, int(n), ns.quick) if kind == "run"
                  else measure_first(system) if kind == "first"
                  else measure_startup(system, int(n)))
        print(json.dumps(result))
        return 0
    cli_runs = 3 if ns.quick else ns.cli
    if ns.cli_only:
        return _cli_rows(max(cli_runs, 1), ns.json)
    systems = [s for s in ns.systems if available(s)]
    skipped = [s for s in ns.systems if s not in systems]
    reps = 1 if ns.quick else ns.reps
    data = run(ns.sizes, systems, reps, ns.quick)
    data["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "platform": platform.platform(), "reps": reps, "skipped": skipped,
                       "quick": ns.quick, "counts": QUICK_COUNTS if ns.quick else COUNTS}
    if cli_runs:  # the command line's rows, in the same run: scripts/bench_cli.py
        data["cli"] = bench_cli.run(cli_runs)
    if ns.json:
        print(json.dumps(data, indent=2))
        return 0
    m = data["machine"]
    print(f"pit vs peers — Python {m['python']}, {m['cpus']} CPUs, {m['platform']}; median of "
          f"{reps} run(s) per row" + ("; QUICK smoke run: fewer items per row (the labels "
                                      "say how many), not comparable with a full run"
                                      if ns.quick else "")
          + (f"; not installed, skipped: {', '.join(skipped)}"
                                      if skipped else ""))
    print("ratios are pit/peer: for µs and ms lower is better, for the rest higher is better")
    print_table(data, systems)
    if "cli" in data:
        bench_cli.print_rows(data["cli"], cli_runs)
    return 0


def _cli_rows(n: int, as_json: bool) -> int:
    rows = bench_cli.run(n)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        bench_cli.print_rows(rows, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
