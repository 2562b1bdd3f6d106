"""The host bus, the worker's buffer and the Prometheus families (no processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime import telemetry
from runtime.telemetry.prometheus import families
from runtime.worker import telemetry as wt

FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_glob_subscription_receives_matching_events_until_cancelled() -> None:
    got: list[telemetry.Event] = []
    sub = telemetry.subscribe("worker.*", got.append)
    assert telemetry.enabled("worker.ready") and not telemetry.enabled("pool.started")
    telemetry.emit("worker.ready", {"startup_ms": 5}, {"worker": "worker-1"})
    telemetry.emit("pool.started", {"size": 1})
    sub.cancel()
    telemetry.emit("worker.ready", {"startup_ms": 6})
    assert [(e.name, e.measurements["startup_ms"]) for e in got] == [("worker.ready", 5)]
    assert not telemetry.enabled("worker.ready")


def test_a_failing_handler_is_logged_and_others_still_run(
        caplog: pytest.LogCaptureFixture) -> None:
    got: list[str] = []

    def broken(event: telemetry.Event) -> None:
        raise RuntimeError("bug in handler")

    with telemetry.subscribe("pool.*", broken), \
            telemetry.subscribe("pool.started", lambda e: got.append(e.name)):
        telemetry.emit("pool.started", {"size": 1}, {"pool": "p"})
    assert got == ["pool.started"]
    assert "bug in handler" in caplog.text


def test_subscribe_rejects_patterns_that_match_nothing() -> None:
    with pytest.raises(ValueError, match="no event matches 'pool.cal.completed'"):
        telemetry.subscribe("pool.cal.completed", print)
    with pytest.raises(TypeError):
        telemetry.subscribe("pool.*", "not callable")  # type: ignore[arg-type]
    telemetry.subscribe("adapter.model.loaded", print).cancel()  # adapter events: any name


def test_catalog_documents_every_event_with_pool_metadata() -> None:
    for name, spec in telemetry.CATALOG.items():
        assert spec.description and "pool" in spec.metadata, name


def test_worker_buffer_is_bounded_and_counts_drops() -> None:
    buf = wt.Buffer(3)
    taken = [buf.put(("e", {}, {}, 0, "")) for _ in range(5)]
    assert taken == [True, True, True, False, False]
    items, dropped = buf.take()
    assert len(items) == 3 and dropped == 2
    assert buf.take() == ([], 0)
    buf.enabled = False
    assert not buf.put(("e", {}, {}, 0, "")) and buf.take() == ([], 0)


def test_worker_emit_checks_its_input() -> None:
    with pytest.raises(ValueError, match="dotted name"):
        wt.emit("")
    with pytest.raises(TypeError, match="measurement 'x' must be a number or a string"):
        wt.emit("a.b", {"x": [1]})


def test_prometheus_families_from_a_recorded_snapshot() -> None:
    snap = json.loads((FIXTURES / "status_snapshot.json").read_text())
    out = {f.name: f for f in families(snap)}
    calls = out["pit_pool_calls"].samples
    assert [(s.name, s.labels, s.value) for s in calls] == [
        ("pit_pool_calls_total", {"pool": "default"}, 26)]
    rss = out["pit_worker_rss_bytes"].samples
    assert rss[0].labels["worker"] == "worker-1" and rss[0].value == 30.5 * 1024 * 1024
    lat = {s.labels["quantile"]: s.value for s in out["pit_pool_latency_seconds"].samples}
    assert lat["0.5"] == pytest.approx(0.00061)
    errs = out["pit_pool_errors"].samples
    assert [(s.labels["category"], s.value) for s in errs] == [("remote_error", 1)]
