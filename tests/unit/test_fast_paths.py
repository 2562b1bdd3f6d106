"""`pit doctor`'s fast-paths check: fork server and shared memory, or why they are off."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import load_config
from runtime.doctor import _fast_paths
from runtime.pool.forkserver import supported


def test_fast_paths_pass_here_and_warn_when_shared_memory_is_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(cwd=tmp_path)
    check = _fast_paths(cfg)
    if supported():
        assert check.status == "pass" and "fork server" in check.message
    monkeypatch.setenv("PIT_NO_SHM", "1")
    check = _fast_paths(cfg)
    assert check.status == "warn" and "/dev/shm is not writable" in check.message
    (tmp_path / "pit.toml").write_text(
        "[pools.p]\nstart_method = \"spawn\"\nshm_threshold_kb = 0\n")
    assert _fast_paths(load_config(tmp_path / "pit.toml")).message == "none configured"
