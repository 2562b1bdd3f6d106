"""The host's keeping of worker output (`runtime.pool.host.worker_output`) and the parsing
`pit logs` does (`runtime.control.worker_logs`), without processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime.control.worker_logs import parse_since
from runtime.errors import InvalidArgument
from runtime.pool.host.worker_output import WorkerOutput, lines_of, prune_output_files


def test_ring_keeps_the_newest_lines_within_its_byte_budget() -> None:
    out = WorkerOutput(None, ring_bytes=100)
    for i in range(50):
        out.add("p", "worker-1", f"line {i:02d}")  # 7 characters + newline each
    kept = [line.text for line in out.lines()]
    assert kept == [f"line {i:02d}" for i in range(38, 50)]  # 12 lines: 96 bytes


def test_all_rings_together_stay_within_their_budget_dropping_the_quietest_ring() -> None:
    out = WorkerOutput(None, ring_bytes=100, total_bytes=150)
    out.add("p", "worker-1", "a" * 59)  # 60 bytes
    out.add("p", "worker-2", "b" * 59)
    out.add("p", "worker-2", "c" * 29)  # worker-2: 90 bytes; total 150
    assert {line.worker for line in out.lines()} == {"worker-1", "worker-2"}
    out.add("p", "worker-3", "d" * 9)  # 160: worker-1 wrote least recently
    assert {line.worker for line in out.lines()} == {"worker-2", "worker-3"}


def test_lines_filter_by_pool_worker_and_time_in_arrival_order() -> None:
    out = WorkerOutput(None)
    out.add("a", "worker-1", "a1")
    out.add("b", "worker-1", "b1")
    out.add("a", "worker-2", "a2")
    assert [line.text for line in out.lines()] == ["a1", "b1", "a2"]
    assert [line.text for line in out.lines(pool="a")] == ["a1", "a2"]
    assert [line.text for line in out.lines(pool="a", worker="worker-2")] == ["a2"]
    cut = out.lines()[1].at
    assert [line.text for line in out.lines(since=cut)][0] == "b1"
    assert out.lines(since=cut + 3600) == []
    assert out.lines()[0].prefix == "[a/worker-1]"


def test_subscribers_see_new_lines_until_they_unsubscribe_and_a_failing_one_is_dropped() -> None:
    out = WorkerOutput(None)
    seen: list[str] = []

    def bad(line: object) -> None:
        raise RuntimeError("boom")

    out.subscribe(seen.append)  # type: ignore[arg-type]
    out.subscribe(bad)
    out.add("p", "w", "one")
    out.unsubscribe(seen.append)  # type: ignore[arg-type]
    out.add("p", "w", "two")
    assert [line.text for line in seen] == ["one"]  # type: ignore[attr-defined]


def test_file_gets_every_line_and_is_rotated(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "inst.log"
    out = WorkerOutput(path, file_bytes=200)
    for i in range(20):
        out.add("p", "worker-1", f"line {i}")
    out.close()
    rotated = path.with_name("inst.log.1")
    assert path.exists() and rotated.exists()
    assert path.stat().st_size <= 200 and (path.stat().st_mode & 0o777) == 0o600
    text = rotated.read_text() + path.read_text()
    assert "[p/worker-1] line 19" in text.splitlines()[-1]


def test_an_unwritable_file_leaves_the_rings_working(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("a file where the directory should be")
    out = WorkerOutput(tmp_path / "logs" / "inst.log")
    out.add("p", "w", "kept")
    assert [line.text for line in out.lines()] == ["kept"]


def test_prune_removes_only_old_output_files(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    old, new = logs / "old.log", logs / "new.log"
    old.write_text("x")
    new.write_text("y")
    import os

    os.utime(old, (1.0, 1.0))
    prune_output_files(tmp_path)
    assert not old.exists() and new.exists()


def test_lines_of_splits_an_overlong_line_instead_of_ending() -> None:
    async def read() -> list[str]:
        reader = asyncio.StreamReader(limit=16)
        reader.feed_data(b"short\n" + b"y" * 50 + b"\nafter\nno newline")
        reader.feed_eof()
        return [line async for line in lines_of(reader)]

    lines = asyncio.run(read())
    assert lines[0] == "short" and lines[-2:] == ["after", "no newline"]
    assert "".join(lines[1:-2]) == "y" * 50


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("5m", 300), ("2h", 7200),
                                          ("1d", 86400), ("90", 90), ("1.5m", 90)])
def test_parse_since(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "-1m", "five minutes"])
def test_parse_since_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(InvalidArgument, match="not a duration") as caught:
        parse_since(text)
    assert "30s, 5m" in (caught.value.hint or "")
