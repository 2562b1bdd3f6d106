from __future__ import annotations

import sys
from pathlib import Path

import pytest

from runtime.config import make_pool_config
from runtime.envs import uv
from runtime.envs.builder import fingerprint, needs_env, split_requirements
from runtime.envs.interpreters import Interpreter, _matches, resolve, versions_text
from runtime.errors import ConfigError, EnvironmentProblem


def test_uv_argv_is_explicit() -> None:
    assert uv.venv_argv("uv", Path("/e"), "/usr/bin/python3.12") == [
        "uv", "venv", "--quiet", "--clear", "--python", "/usr/bin/python3.12", "/e"]
    assert uv.install_argv("uv", Path("/e/bin/python"), ["six"], [Path("/r.txt")]) == [
        "uv", "pip", "install", "--quiet", "--compile-bytecode", "--python", "/e/bin/python",
        "six", "-r", "/r.txt"]
    assert uv.find_python_argv("uv", "3.12") == ["uv", "python", "find",
                                                 "--no-python-downloads", "3.12"]
    # -v in `pit setup`: uv speaks (its progress goes to the progress lines)
    assert "--quiet" not in uv.venv_argv("uv", Path("/e"), "/p", quiet=False)
    assert "--quiet" not in uv.install_argv("uv", Path("/p"), ["six"], [], quiet=False)


def test_run_streams_stderr_lines_and_keeps_stdout() -> None:
    script = "import sys; print('a', file=sys.stderr, flush=True); print('out'); " \
             "print('b', file=sys.stderr)"
    lines: list[str] = []
    assert uv.run([sys.executable, "-c", script], on_line=lines.append) == "out\n"
    assert lines == ["a", "b"]
    failing = "import sys; print('no such package [x]', file=sys.stderr); sys.exit(2)"
    with pytest.raises(EnvironmentProblem, match=r"exit 2\):\nno such package \[x\]"):
        uv.run([sys.executable, "-c", failing], on_line=lines.append)
    with pytest.raises(EnvironmentProblem, match="did not finish within 0.5 s"):
        uv.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5,
               on_line=lines.append)


def test_version_matching() -> None:
    i = Interpreter("/p", (3, 12, 1), "CPython")
    assert _matches(i, "3") and _matches(i, "3.12") and _matches(i, "3.12.1")
    assert not _matches(i, "3.1") and not _matches(i, "3.11")


def test_unknown_versions_list_what_exists() -> None:
    with pytest.raises(EnvironmentProblem) as info:
        resolve("3.99", sys.executable)
    msg = str(info.value)
    assert "'3.99': no installed interpreter matches; found:" in msg
    assert "3.11" in msg and "does not download" in (info.value.hint or "")


def test_versions_are_listed_oldest_first_as_numbers() -> None:
    found = [Interpreter(f"/p{n}", v, "CPython")
             for n, v in enumerate([(3, 13, 0), (3, 9, 18), (3, 10, 13), (3, 12, 1),
                                    (3, 12, 1)])]
    assert versions_text(found) == "3.9.18, 3.10.13, 3.12.1, 3.13.0"


def test_unknown_versions_set_apart_those_too_old(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.envs import interpreters

    found = [Interpreter("/a", (3, 13, 0), "CPython"), Interpreter("/b", (3, 8, 18), "CPython"),
             Interpreter("/c", (3, 10, 13), "CPython")]
    monkeypatch.setattr(interpreters, "discover", lambda: found)
    monkeypatch.setattr(interpreters.uvtool, "find_uv", lambda: "/no/uv")
    with pytest.raises(EnvironmentProblem) as info:
        resolve("3.99", sys.executable)
    assert info.value.message.endswith(
        "found: 3.10.13, 3.13.0 (too old for pit workers: 3.8.18)")


def test_bad_paths_and_old_pythons_are_named(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem, match="no executable file at /bogus/python"):
        resolve("/bogus/python", sys.executable)
    with pytest.raises(EnvironmentProblem, match="neither a path nor a version"):
        resolve("latest", sys.executable)
    old = Path.home() / ".pyenv" / "versions" / "3.9.18" / "bin" / "python3"
    if old.exists():
        with pytest.raises(EnvironmentProblem, match="need Python >= 3.10"):
            resolve(str(old), sys.executable)


def test_fingerprint_follows_requirements(tmp_path: Path) -> None:
    i = Interpreter("/p", (3, 12, 1), "CPython")
    req = tmp_path / "requirements.txt"
    req.write_text("six==1.16.0\n")
    a = fingerprint(i, ["x"], [req])
    assert a == fingerprint(i, ["x"], [req])
    assert a != fingerprint(i, ["y"], [req])
    req.write_text("six==1.17.0\n")
    assert a != fingerprint(i, ["x"], [req])
    assert a != fingerprint(Interpreter("/p", (3, 11, 7), "CPython"), ["x"], [req])


def test_requirements_settings(tmp_path: Path) -> None:
    (tmp_path / "reqs.txt").write_text("six\n")
    cfg = make_pool_config("a", python="3.12", requirements=["six==1.16.0", "reqs.txt"])
    assert needs_env(cfg) and not needs_env(make_pool_config("b"))
    strings, files = split_requirements(cfg, tmp_path)
    assert strings == ["six==1.16.0"] and files == [tmp_path / "reqs.txt"]
    with pytest.raises(ConfigError, match="requirements"):
        make_pool_config("c", requirements=[1])
    with pytest.raises(ConfigError, match="device"):
        make_pool_config("d", device="gpu")


def test_the_bridge_is_copied_once_by_threads_racing_for_it(tmp_path: Path) -> None:
    # `pit setup` builds and health-checks pools on several threads of one process; a
    # ".tmp<pid>" copy was shared between them (FileNotFoundError mid-copy in CI).
    import threading

    from runtime.envs.builder import bridge_dir

    for attempt in range(5):
        state = tmp_path / str(attempt)
        errors: list[BaseException] = []
        got: list[Path] = []

        def copy(state: Path = state, errors: list[BaseException] = errors,
                 got: list[Path] = got) -> None:
            try:
                got.append(bridge_dir(state))
            except BaseException as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(exc)

        threads = [threading.Thread(target=copy) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(set(got)) == 1
        assert [p.name for p in (state / "bridge").iterdir()] == [got[0].name]
        assert (got[0] / "runtime" / "worker" / "__init__.py").exists()


def test_run_streamed_kills_uv_when_interrupted(tmp_path: Path) -> None:
    """Ctrl-C while uv's lines are streamed (or an on_line that raises) kills uv, as
    subprocess.run does: it was left to run to its end, and pit waited for it."""
    finished = tmp_path / "finished"
    script = ("import pathlib, sys, time; print('resolving', file=sys.stderr, flush=True); "
              f"time.sleep(5); pathlib.Path({str(finished)!r}).touch()")

    def interrupted(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        uv.run([sys.executable, "-c", script], on_line=interrupted)
    assert not finished.exists(), "uv's stand-in ran to its end after the interrupt"
