"""PoolMetrics: calls/s and percentiles over a time window, however many calls it holds."""

from __future__ import annotations

import random

import pytest

from runtime.pool import metrics as m


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(m.time, "monotonic", lambda: now[0])
    return now


def test_the_rate_counts_every_call_of_a_busy_pool(clock: list[float]) -> None:
    pm = m.PoolMetrics()
    for _ in range(30):  # 30 s at 15,000 calls/s: far more than any sample buffer holds
        for _ in range(15_000):
            pm.record(0.0001, None)
        clock[0] += 1.0
    got = pm.window(60.0)["calls_per_s"]
    assert got == pytest.approx(15_000, rel=0.01)


def test_calls_older_than_the_window_drop_out(clock: list[float]) -> None:
    pm = m.PoolMetrics()
    for _ in range(100):
        pm.record(0.5, None)
    clock[0] += 61.0
    assert pm.window(60.0) == {"calls_per_s": 0.0, "p50_ms": None, "p95_ms": None,
                               "p99_ms": None}
    for _ in range(10):
        pm.record(0.002, None)
    assert pm.window(60.0)["p99_ms"] == pytest.approx(2.0, rel=0.05)


def test_percentiles_match_the_exact_ones_within_the_bin_width(clock: list[float]) -> None:
    rng = random.Random(7)
    lat = [rng.lognormvariate(-7, 1.0) for _ in range(50_000)]  # ~1 ms, long tail
    pm = m.PoolMetrics()
    for i, x in enumerate(lat):
        pm.record(x, None)
        if i % 1000 == 999:
            clock[0] += 1.0
    exact = sorted(lat)
    got = pm.window(60.0)
    for key, p in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        assert got[key] == pytest.approx(exact[int(p * len(exact))] * 1000, rel=0.04), key


@pytest.mark.parametrize("seconds", [1e-7, 3e-5, 0.00123, 0.5, 1.0, 7.3, 3600.0])
def test_a_bins_middle_is_close_to_what_fell_in_it(seconds: float) -> None:
    assert m.bin_value(m.latency_bin(seconds)) == pytest.approx(seconds, rel=0.035)
