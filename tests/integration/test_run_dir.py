"""The run dir is private: pit refuses one another user could write to, and connects only to
the sockets it chose itself, for the process it started."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

import runtime
from runtime import Pool
from runtime.pool.worker_process import WorkerProcess
from tests.conftest import wait_until

NOBODY = 65534


def _plant_foreign(path: Path) -> None:
    """Make ``path`` a 0777 directory of another user, as an attacker would (root only)."""
    path.mkdir()
    try:
        os.chown(path, NOBODY, NOBODY)
    except PermissionError:
        pytest.skip("chown to another uid needs root")
    path.chmod(0o777)


@pytest.fixture
def fallback_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state dir too long for socket paths, so run dirs fall back to $TMPDIR/pit-<uid>."""
    monkeypatch.setenv("PIT_STATE_DIR", str(tmp_path / ("s" * 120)))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _refused(match: str) -> None:
    with pytest.raises(runtime.EnvironmentProblem, match=match) as info:
        Pool(size=1).start()
    assert "PIT_STATE_DIR" in (info.value.hint or "")


def test_fallback_parent_made_by_another_user_is_refused(fallback_tmp: Path) -> None:
    planted = fallback_tmp / f"pit-{os.getuid()}"
    _plant_foreign(planted)
    _refused(f"{planted}.*belongs to uid {NOBODY}")
    assert list(planted.iterdir()) == []  # nothing of ours went in


def test_fallback_parent_open_to_others_is_refused(fallback_tmp: Path) -> None:
    planted = fallback_tmp / f"pit-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    _refused("mode 0777")


def test_fallback_parent_that_is_a_link_is_refused(fallback_tmp: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (fallback_tmp / f"pit-{os.getuid()}").symlink_to(elsewhere)
    _refused("not a directory")


def test_fallback_run_dir_is_made_private(fallback_tmp: Path) -> None:
    with Pool(size=1) as pool:
        run_dir = pool.instance.run_dir
        assert run_dir.parent == fallback_tmp / f"pit-{os.getuid()}"
        assert (run_dir.parent.stat().st_mode & 0o777) == 0o700
        assert (run_dir.stat().st_mode & 0o777) == 0o700
        assert pool.execute("ping") is not None


def _wrap_argv(monkeypatch: pytest.MonkeyPatch, change) -> None:  # noqa: ANN001
    original = WorkerProcess.argv

    def argv(self: WorkerProcess) -> list[str]:
        return change(self, original(self))

    monkeypatch.setattr(WorkerProcess, "argv", argv)


def test_a_ready_file_from_another_process_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # The process pit started is a shell; the worker that writes the ready file is its child
    # (independent, so it does not exit at once for having the wrong parent).
    def child_of_a_shell(self: WorkerProcess, argv: list[str]) -> list[str]:
        i = argv.index("--dependent-timeout")
        argv = [*argv[:i], *argv[i + 4:], "--independent"]
        return ["/bin/sh", "-c", '"$@"; exit $?', "sh", *argv]

    _wrap_argv(monkeypatch, child_of_a_shell)
    with pytest.raises(runtime.WorkerStartError, match="ready file that is not its own"):
        Pool(size=1, start_method="spawn", startup_timeout_ms=10_000).start()


def test_socket_paths_named_by_a_ready_file_are_not_followed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker serving its lane somewhere else than the host asked, and saying so in the ready
    # file (what a planted file would do): the host must not connect there.
    def elsewhere(self: WorkerProcess, argv: list[str]) -> list[str]:
        i = argv.index("--lane-socket")
        return [*argv[:i + 1], argv[i + 1] + ".elsewhere", *argv[i + 2:]]

    _wrap_argv(monkeypatch, elsewhere)
    with pytest.raises(runtime.WorkerStartError, match="lane_socket="):
        Pool(size=1, start_method="spawn", startup_timeout_ms=10_000).start()


def test_a_directory_put_in_place_of_the_run_dir_is_refused_and_the_pool_recovers(
        caplog: pytest.LogCaptureFixture) -> None:
    # Someone removed the run dir of a running host and made their own in its place: the next
    # worker start must refuse it (not use it because it exists), and the pool must go on
    # trying (a failed repair used to end its replacement loop for good).
    with Pool(size=1, start_method="spawn") as pool:
        run_dir = pool.instance.run_dir
        shutil.rmtree(run_dir)
        _plant_foreign(run_dir)
        os.kill(pool.pids()[0], signal.SIGKILL)
        assert wait_until(lambda: "pit will not use" in caplog.text, timeout=15)
        assert f"belongs to uid {NOBODY}" in caplog.text
        assert pool.stats().ready == 0
        shutil.rmtree(run_dir)  # gone again: the host makes its own and starts the worker
        assert wait_until(lambda: pool.stats().ready == 1, timeout=30)
        assert pool.execute("add", {"a": 1, "b": 2}) == 3
        assert (run_dir.stat().st_uid, run_dir.stat().st_mode & 0o777) == (os.getuid(), 0o700)
