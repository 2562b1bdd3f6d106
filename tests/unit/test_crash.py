from __future__ import annotations

from pathlib import Path

from runtime.pool.crash import ATTRIBUTABLE, classify, describe, oom_kill_count, tail_text

# Recorded: the last lines of a PyTorch worker that hit a CUDA fault.
CUDA_TAIL = """Traceback (most recent call last):
  File "model.py", line 10, in forward
RuntimeError: CUDA error: an illegal memory access was encountered
CUDA kernel errors might be asynchronously reported at some other API call"""


def test_signals_and_codes() -> None:
    assert classify(-11, "") == "segfault"
    assert classify(-6, "") == "abort"
    assert classify(-7, "") == "bus_error"
    assert classify(-15, "") == "terminated"
    assert classify(3, "") == "exit"
    assert classify(-9, "") == "killed"
    assert classify(-9, "", oom_before=4, oom_after=5) == "oom"
    assert classify(-9, "", oom_before=4, oom_after=4) == "killed"
    assert classify(1, CUDA_TAIL) == "gpu"
    assert classify(-9, "", hung=True) == "hung"
    assert "killed" not in ATTRIBUTABLE and "terminated" not in ATTRIBUTABLE


def test_descriptions() -> None:
    assert describe(-11, "segfault") == "was killed by SIGSEGV (-11): segfault"
    assert describe(-9, "oom") == "was killed by SIGKILL (-9): out of memory (the kernel's " \
                                  "OOM killer)"
    assert describe(2, "exit") == "exited with code 2"


def test_cgroup_memory_events_are_read(tmp_path: Path) -> None:
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n")
    assert oom_kill_count((tmp_path / "missing", events)) == 2
    assert oom_kill_count((tmp_path / "missing",)) is None


def test_tail_keeps_the_last_bytes() -> None:
    lines = [f"line {i}" for i in range(2000)]
    tail = tail_text(lines, limit=100)
    assert len(tail.encode()) <= 100 and tail.endswith("line 1999")
