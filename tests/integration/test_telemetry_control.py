"""Telemetry control through real workers: sampling, allow / deny globs and the toggle are
applied in the worker (muted events never reach the host), set at run time or from the
config, and inherited by a worker that replaces a recycled one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime import AsyncPool, Pool, Pools, load_config
from runtime.telemetry.control import TelemetryControl
from tests.conftest import wait_until
from tests.integration.test_telemetry import Recorder

SAMPLE = "tests.adapters.sample:SampleAdapter"
TICK, SPAN = "adapter.sample.tick", "adapter.sample.work.span"


@pytest.fixture
def recorder():
    rec = Recorder("adapter.*")
    yield rec
    rec.sub.cancel()


def _emit(pool: Pool, recorder: Recorder, n: int) -> int:
    """Run emit_events(n); once its span event (sent after the ticks) is in, the ticks it
    sent are too. Returns how many ticks the worker's buffer took."""
    spans = len(recorder.named(SPAN))
    taken = pool.execute("emit_events", {"n": n})
    assert wait_until(lambda: len(recorder.named(SPAN)) > spans, timeout=10)
    return int(taken)


def test_sampling_a_tenth_of_2000_events_delivers_5_to_15_percent(recorder: Recorder) -> None:
    with Pool(adapter=SAMPLE, size=1) as pool:
        control = pool.telemetry_control(sample=0.1, allow=["adapter.sample.tick"])
        assert control == TelemetryControl(sample=0.1, allow=("adapter.sample.tick",))
        pool.telemetry_control(allow=[])  # only the sampling stays
        spans_before = len(recorder.named(SPAN))
        taken = pool.execute("emit_events", {"n": 2000})
        assert wait_until(lambda: len(recorder.named(TICK)) == taken, timeout=10)
        assert 100 <= taken <= 300, taken  # 10 % of 2000, +-7 standard deviations
        # the ticks the worker did not take were never sent: none arrives later
        pool.telemetry_control(sample=1.0)
        _emit(pool, recorder, 1)
        assert len(recorder.named(TICK)) == taken + 1
        assert len(recorder.named(SPAN)) - spans_before >= 1


def test_a_deny_glob_delivers_none_and_the_rest_still_flows(recorder: Recorder) -> None:
    with Pool(adapter=SAMPLE, size=1) as pool:
        assert _emit(pool, recorder, 5) == 5 and len(recorder.named(TICK)) == 5
        pool.telemetry_control(deny=["adapter.sample.t*"])
        assert _emit(pool, recorder, 500) == 0  # the worker took none
        assert len(recorder.named(TICK)) == 5 and len(recorder.named(SPAN)) == 2
        pool.telemetry_control(enabled=False)  # the toggle mutes everything
        assert pool.execute("emit_events", {"n": 3}) == 0
        pool.telemetry_control(enabled=True, deny=[])
        assert _emit(pool, recorder, 3) == 3 and len(recorder.named(TICK)) == 8
        # the span emitted while disabled never came
        assert len(recorder.named(SPAN)) == 3


def test_a_worker_started_after_a_recycle_inherits_the_control(recorder: Recorder) -> None:
    with Pool(adapter=SAMPLE, size=1) as pool:
        pool.telemetry_control(deny=[TICK])
        [old] = pool.stats().workers
        pool.recycle(old.id)
        [new] = pool.stats().workers
        assert new.id != old.id
        assert _emit(pool, recorder, 300) == 0
        assert recorder.named(TICK) == []
        assert recorder.named(SPAN)[-1].metadata["worker"] == new.id


def test_the_config_table_sets_the_control_from_the_first_call(tmp_path: Path,
                                                              recorder: Recorder) -> None:
    (tmp_path / "pit.toml").write_text(
        f'[pools.p]\nadapter = "{SAMPLE}"\nsize = 1\n'
        '[pools.p.telemetry]\nallow = ["adapter.sample.work.*"]\n')
    with Pools(load_config(tmp_path / "pit.toml")) as pools:
        pool = pools["p"]
        assert pool.telemetry_control() == TelemetryControl(allow=("adapter.sample.work.*",))
        assert _emit(pool, recorder, 50) == 0
        assert recorder.named(TICK) == []


def test_async_pool_controls_telemetry_and_bad_values_are_refused(recorder: Recorder) -> None:
    async def main() -> None:
        async with AsyncPool(adapter=SAMPLE, size=1) as pool:
            await pool.telemetry_control(deny=[TICK])
            assert await pool.execute("emit_events", {"n": 20}) == 0
            with pytest.raises(ValueError, match="sample must be a number from 0 to 1"):
                await pool.telemetry_control(sample=1.5)
            with pytest.raises(ValueError, match="deny must be a list of event-name globs"):
                await pool.telemetry_control(deny="adapter.*")  # type: ignore[arg-type]
            # the refused changes left the control as it was
            assert await pool.telemetry_control() == TelemetryControl(deny=(TICK,))
            assert pool.reset_circuit() is False  # closed already

    asyncio.run(main())
    assert recorder.named(TICK) == []
