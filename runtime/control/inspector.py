"""`pit profile-inspector`: a pool's profile, from the same snapshot `pit status` reads, and
concrete advice derived from the numbers."""

from __future__ import annotations

from statistics import mean
from typing import Any

SATURATED_SHARE = 0.2  # queue non-empty in more than this share of the last minute
GROWTH_MB_PER_100 = 10.0  # RSS growth per 100 requests that calls for recycling


def analyse(pool: dict[str, Any], usable_cpus: int) -> dict[str, Any]:
    workers = pool["workers"]
    minute = [h for h in pool.get("history", []) if h[0] <= 60]
    saturated = (sum(1 for h in minute if h[1] > 0) / len(minute)) if minute else 0.0
    util = (mean(h[2] / h[3] for h in minute if h[3]) if minute else
            (pool["in_flight"] / pool["capacity"] if pool["capacity"] else 0.0))
    queued = [h[2] / h[3] for h in minute if h[1] > 0 and h[3]]
    busy_when_queued = mean(queued) if queued else 0.0
    growth = _memory_growth(pool)
    rss = [w["rss_mb"] for w in workers if w["rss_mb"]]
    report = {
        "pool": pool["name"], "profile": pool["profile"], "size": pool["size"],
        "capacity": pool["capacity"], "utilization": round(util, 3),
        "utilization_when_queued": round(busy_when_queued, 3),
        "queue_saturated_share": round(saturated, 3), "queued": pool["queued"],
        "memory_mean_mb": round(mean(rss), 1) if rss else None,
        "memory_max_mb": round(max(rss), 1) if rss else None,
        "memory_growth_mb_per_100_requests": growth,
        "recycles": pool["recycles"], "calls": pool["calls"],
        "error_rate": round(pool["failed"] / pool["calls"], 4) if pool["calls"] else 0.0,
        "errors": pool["errors"], "p50_ms": pool["p50_ms"], "p95_ms": pool["p95_ms"],
        "p99_ms": pool["p99_ms"], "calls_per_s": pool["calls_per_s"],
        "workers": workers,
    }
    report["recommendations"] = recommend(report, usable_cpus)
    return report


def _memory_growth(pool: dict[str, Any]) -> float | None:
    """MiB of RSS gained per 100 requests, from the oldest sample of each live worker."""
    history = pool.get("history", [])
    rates = []
    for w in pool["workers"]:
        first = next((h[4][w["id"]] for h in history if w["id"] in h[4] and h[4][w["id"]]),
                     None)
        if first is None or w["requests"] < 50:
            continue
        rates.append((w["rss_mb"] - first) / w["requests"] * 100)
    return round(max(rates), 2) if rates else None


def recommend(r: dict[str, Any], usable_cpus: int) -> list[str]:
    out = []
    if r["queue_saturated_share"] > SATURATED_SHARE and r["utilization_when_queued"] > 0.8:
        # calls waited while every worker was busy: more workers would have run them
        busy_cpus = r["size"] if r["profile"] == "process" else 1
        free = max(usable_cpus - busy_cpus, 0)
        suggested = r["size"] + max(1, min(free, r["size"] // 2 or 1))
        head = (f"queue saturated {r['queue_saturated_share']:.0%} of the last minute with "
                f"{r['size']} workers at {r['utilization_when_queued']:.0%}")
        out.append(f"{head}: raise size to {suggested} ({free} CPUs free)" if free else
                   f"{head} and no CPU free: add machines or make the tool cheaper")
    growth = r["memory_growth_mb_per_100_requests"]
    if growth is not None and growth > GROWTH_MB_PER_100 and "memory" not in r["recycles"]:
        out.append(f"RSS grows ~{growth:.0f} MiB per 100 requests: set max_memory_mb or "
                   "max_requests to recycle leaking workers")
    if r["profile"] == "thread" and r["workers"] and all(
            not w["free_threaded"] for w in r["workers"]):
        cpu = mean(w.get("cpu_pct", 0.0) for w in r["workers"])
        if cpu > 90:
            out.append(f"thread profile on a GIL build with workers at {cpu:.0f}% CPU: the "
                       "calls are CPU-bound and do not run in parallel; use profile = "
                       "\"process\" (or a free-threaded Python)")
    if r["calls"] >= 20 and r["error_rate"] > 0.05:
        top = max(r["errors"], key=r["errors"].get) if r["errors"] else "?"
        out.append(f"{r['error_rate']:.0%} of calls fail (mostly {top}): see pit status events "
                   "and the workers' output")
    if r["utilization"] < 0.1 and r["size"] > 1 and r["calls"] > 0 and \
            r["queue_saturated_share"] == 0:
        out.append(f"workers are {r['utilization']:.0%} busy: size {r['size']} could shrink")
    return out
