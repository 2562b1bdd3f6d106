"""pit vs concurrent.futures.ProcessPoolExecutor, measured in one run on this machine.

Usage: python scripts/bench.py [--sizes 2 4] [--json] [--quick]

Rows, for each pool size: a no-op call one at a time (p50/p99 latency), throughput with 64
calls in flight, and a 1 MiB bytes round trip. Each system runs in a fresh subprocess (a
ProcessPoolExecutor must not fork a process that already runs gRPC threads). pit runs twice:
through its blocking API (`Pool.execute` / `Pool.submit`, as a ProcessPoolExecutor user would)
and through `AsyncPool` from asyncio tasks.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def noop() -> dict[str, Any]:
    """What the showcase `ping` tool does, for the ProcessPoolExecutor side."""
    return {"pong": True, "pid": os.getpid()}


def echo_bytes(data: bytes) -> bytes:
    return data


def _latency(call: Any, n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t)
    samples.sort()
    return statistics.median(samples) * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def _throughput(submit: Any, n: int, in_flight: int = 64) -> float:
    started = time.perf_counter()
    pending = collections.deque(submit() for _ in range(in_flight))
    issued = in_flight
    while pending:
        pending.popleft().result()
        if issued < n:
            pending.append(submit())
            issued += 1
    return n / (time.perf_counter() - started)


def _bytes_rate(call: Any, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        call()
    return n * MIB / (time.perf_counter() - started) / 1e6  # MB/s of payload


def measure(system: str, size: int, quick: bool) -> dict[str, float]:
    n_serial, n_tp, n_bytes = (300, 2000, 30) if quick else (2000, 10000, 200)
    payload = os.urandom(MIB)
    if system == "pit":
        sys.path.insert(0, str(ROOT))
        from runtime import Pool

        with Pool(size=size, call_timeout_ms=60_000) as pool:
            for _ in range(200):
                pool.execute("ping")
            p50, p99 = _latency(lambda: pool.execute("ping"), n_serial)
            tput = _throughput(lambda: pool.submit("ping"), n_tp)
            watched = _watched_ratio(pool, lambda: _throughput(lambda: pool.submit("ping"), n_tp),
                                     reps=2 if quick else 3)
            assert pool.execute("bytes_echo", {"data": payload}) == payload
            rate = _bytes_rate(lambda: pool.execute("bytes_echo", {"data": payload}), n_bytes)
    elif system == "pit-async":
        import asyncio

        sys.path.insert(0, str(ROOT))
        from runtime import AsyncPool

        async def run() -> tuple[float, float, float, float]:
            async with AsyncPool(size=size, call_timeout_ms=60_000) as pool:
                for _ in range(200):
                    await pool.execute("ping")
                samples = []
                for _ in range(n_serial):
                    t = time.perf_counter()
                    await pool.execute("ping")
                    samples.append(time.perf_counter() - t)
                samples.sort()
                sem = asyncio.Semaphore(64)

                async def one() -> None:
                    async with sem:
                        await pool.execute("ping")

                t = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(n_tp)))
                tput = n_tp / (time.perf_counter() - t)
                t = time.perf_counter()
                for _ in range(n_bytes):
                    await pool.execute("bytes_echo", {"data": payload})
                rate = n_bytes * MIB / (time.perf_counter() - t) / 1e6
                return (statistics.median(samples) * 1e6, samples[int(len(samples) * 0.99)] * 1e6,
                        tput, rate)

        p50, p99, tput, rate = asyncio.run(run())
    else:
        with concurrent.futures.ProcessPoolExecutor(size) as ex:
            for _ in range(200):
                ex.submit(noop).result()
            p50, p99 = _latency(lambda: ex.submit(noop).result(), n_serial)
            tput = _throughput(lambda: ex.submit(noop), n_tp)
            assert ex.submit(echo_bytes, payload).result() == payload
            rate = _bytes_rate(lambda: ex.submit(echo_bytes, payload).result(), n_bytes)
    out = {"p50_us": p50, "p99_us": p99, "calls_per_s": tput, "mb_per_s": rate}
    if system == "pit":
        out["watched_ratio"] = watched
    return out


def _watched_ratio(pool: Any, throughput: Any, reps: int) -> float:
    """Throughput with a `pit status --watch --json` process attached at 4 Hz, over throughput
    without it: alternating runs, median of each."""
    instance = pool._core.instance.id
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
            watched.append(throughput())
        finally:
            watcher.terminate()
            watcher.wait()
    return statistics.median(watched) / statistics.median(plain)


ROWS = [  # key, label, unit, higher is better
    ("p50_us", "no-op serial p50", "µs", False),
    ("p99_us", "no-op serial p99", "µs", False),
    ("calls_per_s", "no-op, 64 in flight", "calls/s", True),
    ("mb_per_s", "1 MiB bytes round trip", "MB/s", True),
]


def run_inner(system: str, size: int, quick: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--inner", system, str(size)] + (["--quick"] if quick
                                                                       else [])
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise SystemExit(f"benchmark of {system} (size {size}) failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    parser.add_argument("--inner", nargs=2, metavar=("SYSTEM", "SIZE"), help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.inner:
        print(json.dumps(measure(ns.inner[0], int(ns.inner[1]), ns.quick)))
        return 0
    results = []
    watch_ratios: list[dict[str, Any]] = []
    for size in ns.sizes:
        ppe = run_inner("ppe", size, ns.quick)
        pit = run_inner("pit", size, ns.quick)
        pit_async = run_inner("pit-async", size, ns.quick)
        watch_ratios.append({"size": size, "watched_ratio": round(pit["watched_ratio"], 3)})
        for key, label, unit, higher in ROWS:
            results.append({"size": size, "metric": key, "label": label, "unit": unit,
                            "pit": round(pit[key], 1), "pit_async": round(pit_async[key], 1),
                            "process_pool": round(ppe[key], 1),
                            "ratio": round(pit[key] / ppe[key], 2),
                            "ratio_async": round(pit_async[key] / ppe[key], 2),
                            "higher_is_better": higher})
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(),
               "platform": platform.platform(), "processor": platform.processor()}
    if ns.json:
        print(json.dumps({"machine": machine, "results": results, "watcher": watch_ratios},
                         indent=2))
        return 0
    print(f"pit vs ProcessPoolExecutor — Python {machine['python']}, {machine['cpus']} CPUs, "
          f"{machine['platform']}")
    print("pit = the blocking Pool API; pit async = AsyncPool; ratios are pit/ProcessPool "
          "(latency: lower is better; rates: higher is better)")
    print(f"{'size':>4}  {'metric':<24} {'pit':>15} {'pit async':>15} {'ProcessPool':>15} "
          f"{'pit/PPE':>8} {'async/PPE':>9}")
    for r in results:
        cells = [f"{r[k]:,.0f} {r['unit']}" for k in ("pit", "pit_async", "process_pool")]
        print(f"{r['size']:>4}  {r['label']:<24} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} "
              f"{r['ratio']:>7.2f}x {r['ratio_async']:>8.2f}x")
    for size in ns.sizes:
        ratio = next(r for r in watch_ratios if r["size"] == size)["watched_ratio"]
        print(f"size {size}: 64 in flight with `pit status --watch` attached at 4 Hz: "
              f"{ratio:.2f}x the throughput without it ({(1 - ratio) * 100:+.1f} % drop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
